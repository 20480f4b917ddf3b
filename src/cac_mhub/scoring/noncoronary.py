"""Agatston score, volume and lesion count of non-coronary calcium, per site, never in the coronary total.

Pure: the HU volume and the sites of :func:`cac_mhub.anatomy.noncoronary.find_sites` in, a
:class:`NonCoronaryResult` out. Each site is scored with the project's own scoring code
(:func:`.agatston.score`, standard profile: 130 HU, 2D lesions of at least 1 mm^2, weights by peak
HU, area x weight x increment / 3 mm), so an aortic-valve score means what a coronary score means.

Published cut points used (see docs/scoring.md): aortic valve calcium suggesting severe aortic
stenosis is >= 2000 AU in men and >= 1200 AU in women (Clavel MA et al., J Am Coll Cardiol
2014;64:1202-1213; adopted by the 2021 ESC/EACTS guidelines for valvular heart disease). They were
derived on ECG-gated CT; on other scans the category is given with that caveat. Mitral annulus and
thoracic aorta calcium have no established cut points: their scores are reported without categories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..anatomy.noncoronary import AORTA_SITES, SITE_TEXT, SITES, NonCoronarySites
from .agatston import score

#: Aortic valve calcium suggesting severe aortic stenosis, by sex (Clavel et al. 2014).
AVC_SEVERE_AU = {"M": 2000.0, "F": 1200.0}
AVC_SOURCE = ("Clavel MA et al., J Am Coll Cardiol 2014;64:1202-1213; 2021 ESC/EACTS guidelines for the "
              "management of valvular heart disease")
#: Short names used in cohort columns.
SHORT = {"aortic_valve": "avc", "mitral_annulus": "mac", "aorta_ascending": "tac_ascending",
         "aorta_arch": "tac_arch", "aorta_descending": "tac_descending"}
_DIGITS = 6


@dataclass
class SiteScore:
    agatston: float
    volume_mm3: float
    lesions: int
    """2D lesions (Agatston's per-slice convention)."""
    candidates: int
    """3D calcium candidates."""
    lesion_rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"agatston": _r(self.agatston), "volume_mm3": _r(self.volume_mm3), "lesions": self.lesions,
                "candidates": self.candidates}


@dataclass
class NonCoronaryResult:
    """Scores per site, the thoracic aorta total, and the aortic valve category."""

    sites: dict[str, SiteScore]
    delineated: dict[str, bool]
    notes: list[str]
    avc_category: str | None
    """``likely severe aortic stenosis`` / ``below the severe aortic stenosis threshold`` / None (sex unknown)."""
    avc_category_note: str = ""
    noise: dict[str, Any] = field(default_factory=dict)
    """Blood pool HU, noise SD, the peak a candidate needed (see :mod:`cac_mhub.anatomy.noncoronary`)."""

    @property
    def tac(self) -> SiteScore:
        parts = [self.sites[name] for name in AORTA_SITES if self.delineated.get(name)]
        return SiteScore(sum(p.agatston for p in parts), sum(p.volume_mm3 for p in parts),
                         sum(p.lesions for p in parts), sum(p.candidates for p in parts))

    def to_dict(self) -> dict[str, Any]:
        """Report block (``noncoronary`` in report.json); never part of ``scores``."""
        sites = {}
        for name in SITES:
            block = self.sites[name].to_dict() if self.delineated.get(name) else \
                {"agatston": None, "volume_mm3": None, "lesions": None, "candidates": None}
            sites[name] = {"meaning": SITE_TEXT[name], "delineated": bool(self.delineated.get(name)), **block,
                           "lesion_table": self.sites[name].lesion_rows if self.delineated.get(name) else []}
        aorta_found = any(self.delineated.get(n) for n in AORTA_SITES)
        return {
            "profile": "standard (130 HU, 1 mm2, increment / 3 mm)",
            "sites": sites,
            "tac": {**(self.tac.to_dict() if aorta_found else {"agatston": None, "volume_mm3": None,
                                                                  "lesions": None, "candidates": None}),
                    "meaning": "thoracic aorta: ascending + arch + descending"},
            "avc_category": self.avc_category,
            "avc_category_note": self.avc_category_note,
            "avc_thresholds_au": dict(AVC_SEVERE_AU),
            "avc_thresholds_source": AVC_SOURCE,
            "notes": list(self.notes),
            "noise": dict(self.noise),
            "in_coronary_total": False,
        }

    def summary_row(self) -> dict[str, Any]:
        """Flat cohort columns: Agatston, volume and lesions of AVC, MAC, TAC and the aortic parts."""
        row: dict[str, Any] = {}
        entries = [("avc", "aortic_valve"), ("mac", "mitral_annulus"), ("tac", None)] + \
            [(SHORT[name], name) for name in AORTA_SITES]
        for short, name in entries:
            found = self.delineated.get(name) if name else any(self.delineated.get(n) for n in AORTA_SITES)
            site = self.sites[name] if name else self.tac
            row[f"{short}_agatston"] = _r(site.agatston) if found else None
            if short in ("avc", "mac", "tac"):
                row[f"{short}_volume_mm3"] = _r(site.volume_mm3) if found else None
                row[f"{short}_lesions"] = site.lesions if found else None
        row["avc_category"] = self.avc_category
        return row


def score_sites(hu: np.ndarray, spacing_zyx: Sequence[float], sites: NonCoronarySites, *, sex: str | None = None,
                ecg_gated: bool | None = None, threshold_hu: float = 130.0, min_area_mm2: float = 1.0,
                normalise_to_mm: float = 3.0, slice_thickness: float | None = None) -> NonCoronaryResult:
    """Score every site of ``sites`` on ``hu`` (the whole CT volume) with the standard profile."""
    crop = hu[sites.box]
    offset = np.array([s.start for s in sites.box], float)
    results = {}
    for name in SITES:
        result = score(crop, spacing_zyx, sites.mask(name).astype(np.uint8), {1: "CAC"}, profile="standard",
                       threshold_hu=threshold_hu, min_area_mm2=min_area_mm2, normalise_to_mm=normalise_to_mm,
                       slice_thickness=slice_thickness)
        rows = result.lesion_rows()
        for row in rows:
            row["slice"] = int(row["slice"] + offset[0])
            row["centroid_zyx"] = [round(c + o, 3) for c, o in zip(row["centroid_zyx"], offset)]
            for key in ("artery", "label", "mixed_labels", "mass_mg"):
                row.pop(key, None)
        results[name] = SiteScore(result.agatston, result.volume_mm3, result.lesion_count,
                                  sites.candidates.get(name, 0), rows)
    category, note = avc_category(results["aortic_valve"].agatston if sites.delineated.get("aortic_valve") else None,
                                  sex, ecg_gated)
    return NonCoronaryResult(results, dict(sites.delineated), list(sites.notes), category, note, dict(sites.noise))


def avc_category(agatston: float | None, sex: str | None, ecg_gated: bool | None) -> tuple[str | None, str]:
    """Sex-specific aortic valve calcium category and the caveat that goes with it."""
    if agatston is None:
        return None, "aortic valve not delineated"
    if sex not in AVC_SEVERE_AU:
        return None, "no category: PatientSex is not M or F (the thresholds are sex-specific)"
    cut = AVC_SEVERE_AU[sex]
    category = "likely severe aortic stenosis" if agatston >= cut else "below the severe aortic stenosis threshold"
    note = f"threshold {cut:g} AU for {'men' if sex == 'M' else 'women'}"
    if not ecg_gated:
        note += "; derived on ECG-gated CT, this scan is not gated: motion blurs valve calcium"
    return category, note


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DIGITS)
