"""Scoring profiles: every convention that changes a CAC score, named and reported.

Three profiles exist:

* ``standard`` (default): Agatston's method as clinical software applies it, with the
  per-voxel 130 HU threshold inside the mask, a 1 mm^2 minimum lesion area and normalisation
  to 3 mm by the slice *increment*.
* ``deepcac``: the convention of the published DeepCAC code (AIM-Harvard, step 4), so that
  results can be compared like with like: no per-voxel threshold inside the mask, components
  of more than 3 pixels, pixel factor ``round(dx*dy*dz/3, 3)``, per-lesion and total scores
  rounded to 3 decimals.
* ``deepcac2``: the convention of DeepCAC2's published scorer (MHub ``models/deepcac2``,
  ``src/agatston.py``), reproduced to the last rounding: no HU gate (a component whose peak is
  below 200 HU, even below 130, weighs 1), components of more than 3 pixels, pixel factor
  ``round(sx*sy*sz/3, 3)`` on the float32 spacing a NIfTI file stores, each component's score
  rounded to 3 decimals (numpy's rounding), summed in its slice and label order and rounded to
  an integer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Agatston's HU cut points: weight 1 from 130, 2 from 200, 3 from 300, 4 from 400 HU.
AGATSTON_CUTS_HU: tuple[float, float, float, float] = (130.0, 200.0, 300.0, 400.0)

#: Tube voltage (kVp) -> HU cut points (threshold = weight 1, then weights 2, 3, 4) used when
#: ``kvp_adjusted_threshold`` is on. 120 kVp: Agatston et al. 1990. Other voltages: Gräni et al.,
#: Eur Heart J Cardiovasc Imaging 2018;19:1362-1371 (doi:10.1093/ehjci/jey019), values as
#: tabulated in the open-source CalciumScoring.jl. Voltages not listed (within 2 kV) fall back to
#: the unadjusted threshold with a warning.
KVP_CUTS_HU: dict[int, tuple[float, float, float, float]] = {
    70: (207.0, 318.0, 477.0, 636.0),
    80: (177.0, 271.0, 408.0, 544.0),
    100: (145.0, 222.0, 334.0, 446.0),
    120: AGATSTON_CUTS_HU,
    135: (119.0, 183.0, 274.0, 364.0),
}

PROFILE_NAMES: tuple[str, ...] = ("standard", "deepcac", "deepcac2")
#: Profiles fixed by definition: user options that would change them are ignored with a warning.
FIXED_PROFILES: tuple[str, ...] = ("deepcac", "deepcac2")


@dataclass(frozen=True)
class Profile:
    """Everything that decides how a label map and HU volume become a score."""

    name: str
    threshold_hu: float | None
    """Per-voxel calcium threshold inside the mask; None = every mask voxel counts (deepcac)."""
    weight_cuts_hu: tuple[float, float, float, float]
    """Peak HU at which the weight becomes 1, 2, 3, 4. A peak below the first cut weighs 0."""
    min_area_mm2: float | None
    """Smallest lesion area kept (inclusive); ignored when ``min_area_pixels`` is set."""
    min_area_pixels: int | None
    """Smallest lesion pixel count kept (inclusive); overrides ``min_area_mm2``."""
    normalise_to_mm: float
    """Scores are multiplied by ``increment / normalise_to_mm`` (3 mm: Agatston's slices)."""
    round_decimals: int | None = None
    """DeepCAC rounds its pixel factor, each lesion score and the total to 3 decimals."""
    kvp: float | None = None
    kvp_adjusted: bool = False
    connectivity: str = "2D 8-connected per axial slice"
    min_weight: int = 0
    """Lowest weight of a kept component: 1 = no HU gate (DeepCAC2 weighs a peak below 130 HU 1)."""
    total_decimals: int | None = None
    """Decimals of the total when they differ from ``round_decimals`` (DeepCAC2: 0, an integer)."""
    published_arithmetic: bool = False
    """Float steps as DeepCAC2's code takes them: spacing as float32 (NIfTI), factor sx*sy*sz
    rounded by Python, component scores summed in slice order and, within a slice, in the order
    ``ndimage.label`` numbers them on its ``[x, y]`` array. Why: the integer total can flip at .5."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["weight_cuts_hu"] = list(self.weight_cuts_hu)
        return data


def make_profile(
    name: str = "standard",
    *,
    threshold_hu: float | None = None,
    kvp: float | None = None,
    kvp_adjusted_threshold: bool = False,
    min_area_mm2: float | None = None,
    min_area_pixels: int | None = None,
    normalise_to_mm: float | None = None,
) -> tuple[Profile, list[str]]:
    """Build a profile from user options; returns it with warnings about ignored options.

    ``None`` means "the profile's default". The ``deepcac`` profile is fixed by definition,
    so options given for it are ignored (and a warning says so).
    """
    warnings: list[str] = []
    if name in FIXED_PROFILES:
        given = {
            "threshold_hu": threshold_hu,
            "kvp_adjusted_threshold": kvp_adjusted_threshold or None,
            "min_area_mm2": min_area_mm2,
            "min_area_pixels": min_area_pixels,
            "normalise_to_mm": normalise_to_mm,
        }
        ignored = sorted(k for k, v in given.items() if v is not None)
        if ignored:
            warnings.append(f"{name} profile is fixed; ignored options: {', '.join(ignored)}")
        if name == "deepcac2":
            return deepcac2_profile(kvp), warnings
        profile = Profile(
            name="deepcac",
            threshold_hu=None,
            weight_cuts_hu=AGATSTON_CUTS_HU,
            min_area_mm2=None,
            min_area_pixels=4,  # DeepCAC drops components with <= 3 pixels
            normalise_to_mm=3.0,
            round_decimals=3,
            kvp=kvp,
        )
        return profile, warnings
    if name != "standard":
        raise ValueError(f"unknown scoring profile {name!r}; known: {', '.join(PROFILE_NAMES)}")

    cuts = AGATSTON_CUTS_HU
    threshold = 130.0 if threshold_hu is None else float(threshold_hu)
    if kvp_adjusted_threshold:
        kvp_cuts = _kvp_cuts(kvp)
        if kvp_cuts is None:
            warnings.append(f"no kVp-adjusted threshold for kVp={kvp}; using {threshold:g} HU")
        else:
            if threshold_hu is not None and float(threshold_hu) != 130.0:
                warnings.append(
                    f"threshold_hu={threshold_hu:g} replaced by the kVp-adjusted {kvp_cuts[0]:g} HU"
                )
            threshold, cuts = kvp_cuts[0], kvp_cuts
    if not math.isfinite(threshold):
        raise ValueError(f"threshold_hu must be finite, got {threshold_hu!r}")
    if min_area_pixels is not None and int(min_area_pixels) < 1:
        raise ValueError(f"min_area_pixels must be >= 1, got {min_area_pixels}")
    area = 1.0 if min_area_mm2 is None else float(min_area_mm2)
    if not math.isfinite(area) or area < 0:
        raise ValueError(f"min_area_mm2 must be >= 0, got {min_area_mm2!r}")
    norm = 3.0 if normalise_to_mm is None else float(normalise_to_mm)
    if not math.isfinite(norm) or norm <= 0:
        raise ValueError(f"normalise_to_mm must be > 0, got {normalise_to_mm!r}")
    profile = Profile(
        name="standard",
        threshold_hu=threshold,
        weight_cuts_hu=cuts,
        min_area_mm2=None if min_area_pixels is not None else area,
        min_area_pixels=None if min_area_pixels is None else int(min_area_pixels),
        normalise_to_mm=norm,
        kvp=kvp,
        kvp_adjusted=bool(kvp_adjusted_threshold) and _kvp_cuts(kvp) is not None,
    )
    return profile, warnings


def deepcac2_profile(kvp: float | None = None) -> Profile:
    """DeepCAC2's published Agatston (``agatston_score_slices2`` with ``nrConPx=3``, then ``round``)."""
    return Profile(
        name="deepcac2",
        threshold_hu=None,  # no gate: every mask voxel of a component counts
        weight_cuts_hu=AGATSTON_CUTS_HU,
        min_area_mm2=None,
        min_area_pixels=4,  # components of <= 3 pixels are dropped
        normalise_to_mm=3.0,  # pixel factor sx*sy*sz / 3
        round_decimals=3,
        kvp=kvp,
        min_weight=1,  # dfw() of a peak below 200 HU is 1, even below 130 HU
        total_decimals=0,
        published_arithmetic=True,
    )


def _kvp_cuts(kvp: float | None) -> tuple[float, float, float, float] | None:
    """The tabulated cut points for a tube voltage within 2 kV of a table entry."""
    if kvp is None:
        return None
    for table_kvp, cuts in KVP_CUTS_HU.items():
        if abs(float(kvp) - table_kvp) <= 2.0:
            return cuts
    return None
