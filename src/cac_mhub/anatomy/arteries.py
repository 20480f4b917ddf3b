"""Which coronary artery a lesion belongs to, from where it lies on the heart (pure numpy).

Why: a network trained on synthetic hearts mislabels real ones (LAD calcium called LCX), and a
lesion no model labelled has no label at all. Readers name the artery from the anatomy: the left
main leaves the aortic root to the left and splits within 1-2 cm; the LAD runs down the anterior
interventricular groove towards the apex; the LCX turns left and back in the left
atrioventricular groove; the RCA leaves the root to the right, runs in the right
atrioventricular groove and round the heart's inferior surface to the crux.

The frame: ``origin`` is the aortic root (the ascending aorta's lowest clear disc), ``centre``
the cardiac mass's centroid, ``long`` the mass's long axis (its first principal axis, turned to
point from the base towards the apex: anterior, left and down). A lesion's *angle* is measured
round the long axis in the plane across it: 0 degrees anterior, +90 the patient's left, +-180
posterior, -90 the right. Territories, in this order:

1. ``LM``: within :data:`LM_REACH_MM` of the root's centre, on its left, no lower than
   :data:`LM_BELOW_MM` under it;
2. ``RCA``: right of the heart (angle below :data:`RCA_FROM_DEG`, i.e. from the right anterior
   groove round to the back), or posterior (|angle| > :data:`POSTERIOR_DEG`) and right of the
   centre (the crux and the inferior surface of a right-dominant heart);
3. ``LAD``: anterior, angle up to :data:`LAD_TO_DEG`, or anywhere towards the apex beyond
   :data:`APEX_SHARE` of the heart's length (the LAD wraps the apex);
4. ``LCX``: the rest: left and posterior, near the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .analysis import Anatomy

LM_REACH_MM = 30.0
LM_ALONG_SHARE = 0.3
RCA_BELOW_DEG = -10.0
LAD_TO_DEG = 55.0
POSTERIOR_DEG = 150.0
APEX_SHARE = 0.7
#: A model's label stands unless the position lies this far (degrees round the long axis)
#: inside another artery's territory.
OVERRIDE_MARGIN_DEG = 20.0
ARTERIES = ("LM", "LAD", "LCX", "RCA")


@dataclass(frozen=True)
class HeartFrame:
    """The heart's own axes, in mm on the CT grid's (z, y, x) axes (LPS: +x left, +y posterior, +z up)."""

    origin: np.ndarray
    """The aortic root's centre (mm)."""
    centre: np.ndarray
    long: np.ndarray
    """Unit vector from the base towards the apex."""
    anterior: np.ndarray
    """Unit vector across the long axis, pointing forwards."""
    left: np.ndarray
    """Unit vector across the long axis, pointing to the patient's left."""
    length_mm: float
    """Extent of the cardiac mass along the long axis."""
    base_mm: float
    """Position of the base (the mass's end towards the root) along the long axis, from the centre."""

    def angle_deg(self, point_mm: np.ndarray) -> float:
        d = point_mm - self.centre
        return float(np.degrees(np.arctan2(d @ self.left, d @ self.anterior)))

    def along_share(self, point_mm: np.ndarray) -> float:
        """0 at the base, 1 at the apex."""
        return float(((point_mm - self.centre) @ self.long - self.base_mm) / max(self.length_mm, 1.0))


def heart_frame(anatomy: Anatomy, spacing_zyx: Sequence[float]) -> HeartFrame | None:
    """The frame of a found heart; None without a cardiac mass or an aortic root."""
    root = anatomy.info.get("_aortic_root")
    if not anatomy.found or not anatomy.heart_mass.any() or not root:
        return None
    grid = anatomy.grid
    spacing = np.asarray(spacing_zyx, float)
    points = np.argwhere(anatomy.heart_mass)
    mm = np.array([grid.to_full_index(tuple(p)) for p in points[:: max(1, len(points) // 20000)]]) * spacing
    centre = mm.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((mm - centre).T))
    long = vectors[:, -1]
    towards_apex = np.array([-1.0, -1.0, 1.0])  # down (-z), forwards (-y), left (+x)
    if long @ towards_apex < 0:
        long = -long
    anterior = np.array([0.0, -1.0, 0.0]) - long * (-long[1])
    anterior /= max(np.linalg.norm(anterior), 1e-9)
    left = np.cross(long, anterior)
    if left[2] < 0:  # array order (z, y, x): the patient's left is +x
        left = -left
    along = (mm - centre) @ long
    origin = np.asarray(grid.to_full_index(tuple(root[:3])), float) * spacing
    return HeartFrame(origin, centre, long, anterior, left, float(along.max() - along.min()), float(along.min()))


def artery_of(point_mm: np.ndarray, frame: HeartFrame) -> tuple[str, float]:
    """The territory of a lesion at ``point_mm`` (mm, CT grid axes z, y, x) and how far inside it
    the lesion lies (degrees from the nearest boundary round the long axis; inf for LM)."""
    angle = frame.angle_deg(point_mm)
    right_of_centre = (point_mm - frame.centre)[2] < 0.0
    if abs(angle) >= POSTERIOR_DEG:
        return ("RCA" if right_of_centre else "LCX"), 180.0 - abs(angle)
    if angle < RCA_BELOW_DEG:
        return "RCA", min(RCA_BELOW_DEG - angle, angle + POSTERIOR_DEG)
    if np.linalg.norm(point_mm - frame.origin) <= LM_REACH_MM and frame.along_share(point_mm) <= LM_ALONG_SHARE:
        return "LM", float("inf")
    if angle <= LAD_TO_DEG or frame.along_share(point_mm) >= APEX_SHARE:
        return "LAD", min(angle - RCA_BELOW_DEG, LAD_TO_DEG - angle) if angle <= LAD_TO_DEG else 0.0
    return "LCX", min(angle - LAD_TO_DEG, POSTERIOR_DEG - angle)


def choose(model: str | None, position: tuple[str, float] | None) -> tuple[str | None, str]:
    """The artery of a lesion and why: the model's label unless the position clearly says otherwise.

    Returns the artery and its source: ``model``, ``position`` (no model label, or a model label
    :data:`OVERRIDE_MARGIN_DEG` or more inside another territory) or ``none``.
    """
    if position is None:
        return model, ("model" if model else "none")
    artery, margin = position
    if model is None or model not in ARTERIES:
        return artery, "position"
    if model != artery and margin >= OVERRIDE_MARGIN_DEG:
        return artery, "position"
    return model, "model"


def label_by_position(points_mm: Sequence[np.ndarray], frame: HeartFrame | None) -> list[str | None]:
    """Territory per point; None for every point when the frame is unknown."""
    if frame is None:
        return [None] * len(points_mm)
    return [artery_of(np.asarray(p, float), frame)[0] for p in points_mm]
