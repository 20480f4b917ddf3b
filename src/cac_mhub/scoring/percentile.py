"""Where a coronary calcium score lies among people of the same age and sex: MESA reference percentiles.

Source: McClelland RL, Chung H, Detrano R, Post W, Kronmal RA. Distribution of coronary artery
calcium by race, gender, and age: results from the Multi-Ethnic Study of Atherosclerosis (MESA).
Circulation 2006;113:30-37, doi:10.1161/CIRCULATIONAHA.105.580696. 6110 participants aged 45-84
without clinical cardiovascular disease or treated diabetes; percentiles estimated nonparametrically.

:data:`MESA_TABLE` holds the Agatston score at the 25th, 50th, 75th and 90th percentiles for each
race/ethnicity, sex and 10-year age band (45-54, 55-64, 65-74, 75-84), estimated at the middle of
the band, as tabulated from that paper (see docs/scoring.md for how the numbers were checked). Only
these printed values are used: no curve is fitted between them, so a score is placed in a
percentile *band* (e.g. 75th-90th), never given an invented exact percentile.

Race/ethnicity is an option (``white``, ``black``, ``hispanic``, ``chinese``); it defaults to
``not given``, and then the band is the widest over the four tables (and each table's band is
listed), because the reference differs by race.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MESA_SOURCE = ("McClelland RL, Chung H, Detrano R, Post W, Kronmal RA. Distribution of coronary artery calcium "
               "by race, gender, and age: results from the Multi-Ethnic Study of Atherosclerosis (MESA). "
               "Circulation 2006;113:30-37")
RACES = ("white", "black", "hispanic", "chinese")
NOT_GIVEN = "not given"
#: Age bands (years, inclusive) of the table.
AGE_BANDS = ((45, 54), (55, 64), (65, 74), (75, 84))
#: Percentiles the table gives a score for.
PERCENTILES = (25, 50, 75, 90)
#: race -> sex -> per age band, the Agatston score at the 25th, 50th, 75th and 90th percentile.
MESA_TABLE: dict[str, dict[str, tuple[tuple[int, int, int, int], ...]]] = {
    "white": {
        "F": ((0, 0, 0, 8), (0, 0, 16, 102), (0, 13, 119, 391), (20, 106, 370, 921)),
        "M": ((0, 0, 22, 110), (0, 28, 155, 452), (21, 145, 540, 1345), (103, 385, 1200, 2933)),
    },
    "black": {
        "F": ((0, 0, 0, 9), (0, 0, 5, 74), (0, 0, 77, 310), (0, 47, 214, 582)),
        "M": ((0, 0, 2, 45), (0, 0, 40, 173), (0, 32, 191, 575), (23, 141, 516, 1281)),
    },
    "hispanic": {
        "F": ((0, 0, 0, 2), (0, 0, 2, 50), (0, 1, 51, 203), (0, 45, 205, 557)),
        "M": ((0, 0, 9, 88), (0, 3, 75, 291), (1, 56, 247, 666), (36, 153, 494, 1221)),
    },
    "chinese": {
        "F": ((0, 0, 0, 12), (0, 0, 18, 105), (0, 5, 70, 246), (0, 32, 146, 398)),
        "M": ((0, 0, 14, 89), (0, 5, 67, 242), (0, 34, 174, 487), (11, 81, 305, 769)),
    },
}
#: The 2018 AHA/ACC cholesterol guideline counts CAC at or above the 75th percentile as a risk enhancer.
HIGH_PERCENTILE = 75


@dataclass
class PercentileBand:
    """The tabulated percentiles a score lies between: ``lower`` < its percentile < ``upper``."""

    lower: int
    upper: int

    @property
    def text(self) -> str:
        return f">{self.lower}" if self.upper == 100 else f"{self.lower}-{self.upper}"


@dataclass
class PercentileResult:
    band: PercentileBand | None
    """None when no percentile can be given (see ``reason``)."""
    at_or_above_75th: bool | None
    """CAC > 0 and at or above the 75th percentile; None when undecided (race not given and the races disagree)."""
    reason: str = ""
    race: str = NOT_GIVEN
    age_band: tuple[int, int] | None = None
    thresholds: dict[str, list[int]] = field(default_factory=dict)
    """race -> the Agatston scores at the 25th, 50th, 75th, 90th percentiles used."""
    by_race: dict[str, str] = field(default_factory=dict)
    """race -> band text, when race is not given."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": "MESA", "source": MESA_SOURCE,
            "band": self.band.text if self.band else None,
            "lower": self.band.lower if self.band else None,
            "upper": self.band.upper if self.band else None,
            "at_or_above_75th": self.at_or_above_75th,
            "race": self.race,
            "age_band": list(self.age_band) if self.age_band else None,
            "thresholds_p25_p50_p75_p90": self.thresholds,
            "by_race": self.by_race,
            "reason": self.reason,
        }


def age_band(age_years: float) -> tuple[int, int] | None:
    """The table's 10-year band holding ``age_years`` (whole years), None outside 45-84."""
    whole = int(age_years // 1)
    return next((band for band in AGE_BANDS if band[0] <= whole <= band[1]), None)


def thresholds(race: str, sex: str, age_years: float) -> tuple[int, int, int, int] | None:
    """The Agatston scores at the 25th, 50th, 75th and 90th percentile, as printed in the table."""
    band = age_band(age_years)
    if band is None or race not in MESA_TABLE or sex not in MESA_TABLE[race]:
        return None
    return MESA_TABLE[race][sex][AGE_BANDS.index(band)]


def band_of(score: float, cuts: tuple[int, ...]) -> PercentileBand:
    """Tabulated percentiles around ``score``: the highest whose score is below it, the lowest whose score is above it.

    Ties stay honest: with 75 % of a group at zero, a score of zero lies between the 0th and the
    first tabulated percentile with a positive score.
    """
    lower = max([p for p, cut in zip(PERCENTILES, cuts) if cut < score], default=0)
    upper = min([p for p, cut in zip(PERCENTILES, cuts) if cut > score], default=100)
    return PercentileBand(lower, upper)


def percentile(score: float | None, age_years: float | None, sex: str | None, race: str = NOT_GIVEN
               ) -> PercentileResult:
    """MESA percentile band of an Agatston ``score`` for this age, sex and (optional) race/ethnicity."""
    race = race if race in RACES else NOT_GIVEN
    if score is None:
        return PercentileResult(None, None, "no coronary calcium score", race)
    if age_years is None:
        return PercentileResult(None, None, "age unknown", race)
    if sex not in ("M", "F"):
        return PercentileResult(None, None, "sex unknown (PatientSex is not M or F)", race)
    band = age_band(age_years)
    if band is None:
        return PercentileResult(None, None, "age outside the MESA reference range (45-84 years)", race)
    races = (race,) if race in RACES else RACES
    cuts = {r: MESA_TABLE[r][sex][AGE_BANDS.index(band)] for r in races}
    bands = {r: band_of(score, c) for r, c in cuts.items()}
    high = {score > 0 and score >= c[2] for c in cuts.values()}
    overall = PercentileBand(min(b.lower for b in bands.values()), max(b.upper for b in bands.values()))
    return PercentileResult(overall, high.pop() if len(high) == 1 else None, "", race, band,
                            {r: list(c) for r, c in cuts.items()},
                            {r: b.text for r, b in bands.items()} if race not in RACES else {})
