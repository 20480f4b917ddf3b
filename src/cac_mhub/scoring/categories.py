"""Risk categories from an Agatston score: DeepCAC2's four groups and CAC-DRS.

Scores are real numbers here (normalisation by the slice increment makes them fractional),
so the integer ranges of the published tables are applied as intervals:

* DeepCAC2 groups: 0 -> "very low"; (0, 100] -> "low"; (100, 300] -> "moderate";
  > 300 -> "high" (same comparisons as the DeepCAC code).
* CAC-DRS Agatston category (Hecht et al., J Cardiovasc Comput Tomogr 2018;12:185-191):
  A0 = 0; A1 = (0, 100); A2 = [100, 300); A3 >= 300. The vessel modifier ``/N<n>`` counts the
  named arteries (LM, LAD, LCX, RCA) with a score above 0; it is left out for A0 and when no
  calcium is assigned to a named artery (binary label maps).
"""

from __future__ import annotations

from typing import Mapping

RISK_CATEGORIES: tuple[str, ...] = ("very low", "low", "moderate", "high")


def risk_group(agatston: float) -> int:
    """DeepCAC2 risk group 0..3 (0 / 1-100 / 101-300 / >300)."""
    if agatston <= 0:
        return 0
    if agatston <= 100:
        return 1
    if agatston <= 300:
        return 2
    return 3


def risk_category(agatston: float) -> str:
    """DeepCAC2 risk group in words: very low, low, moderate, high."""
    return RISK_CATEGORIES[risk_group(agatston)]


def cac_drs(agatston: float, per_artery: Mapping[str, float], arteries: tuple[str, ...]) -> str:
    """CAC-DRS string, e.g. ``A0``, ``A1/N1``, ``A3/N4``; ``A2`` when no artery is known."""
    if agatston <= 0:
        return "A0"
    category = "A1" if agatston < 100 else "A2" if agatston < 300 else "A3"
    vessels = sum(1 for name in arteries if per_artery.get(name, 0.0) > 0)
    return f"{category}/N{vessels}" if vessels else category
