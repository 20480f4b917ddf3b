"""The guard before scoring: calcium counts only inside the heart region, never on bone or aorta.

Pure: label map + HU + anatomy in, kept label map + a table of excluded candidates out. A
*candidate* is one 3D (26-connected) component of labelled voxels at or above the calcium
threshold. Each candidate gets exactly one verdict, checked in this order:

1. ``outside_body`` -- its centre is outside the patient;
2. ``bone`` -- it touches the skeleton (vertebrae, ribs, sternum, costal cartilage joined to them);
3. ``aorta`` -- a third or more of it lies on the aorta (wall of the ascending, arch, descending);
4. ``outside_heart`` -- less than half of it lies in the heart region;
5. ``aortic_valve`` -- its centre lies in the aortic root's lumen, just below the ascending
   aorta's lowest clear disc (the coronary ostia sit on the root's wall, outside the lumen);
6. ``intracardiac`` -- it lies deep inside the cardiac mass (at least ``DEPTH_MM`` from fat or
   lung; calcium enclosed by the mass counts as mass): the mitral annulus, papillary muscles. Coronary arteries run in the epicardial fat on
   the heart's surface, so they never lie deep inside it. Valve and annulus calcium are
   reported as non-coronary calcium;
7. otherwise kept.

The score each excluded group would have added is computed with the same scoring code, so
the report can say exactly what the guard took away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from .analysis import Anatomy

#: A candidate this deep inside the cardiac mass is not in a coronary artery.
DEPTH_MM = 6.0
REASONS = ("outside_body", "bone", "aorta", "outside_heart", "aortic_valve", "intracardiac")
#: What each reason means, for reports and logs.
REASON_TEXT = {
    "outside_body": "outside the body",
    "bone": "on bone (vertebra, rib, sternum, costal cartilage)",
    "aorta": "on the aorta (wall of the ascending aorta, arch or descending aorta)",
    "outside_heart": "outside the heart region",
    "aortic_valve": "aortic valve (not coronary)",
    "intracardiac": "inside the heart: mitral annulus, valve or papillary muscle (not coronary)",
}
NON_CORONARY = ("aortic_valve", "intracardiac")


@dataclass
class Candidate:
    """One excluded or kept 3D calcium candidate."""

    verdict: str
    """``kept`` or one of :data:`REASONS`."""
    voxels: int
    centroid_zyx: tuple[float, float, float]
    labels: list[int]


@dataclass
class GuardResult:
    kept: np.ndarray
    """The label map with every excluded candidate cleared."""
    candidates: list[Candidate]
    excluded_maps: dict[str, np.ndarray] = field(default_factory=dict)
    """Reason -> label map holding only the candidates excluded for it (for their would-be score)."""

    def counts(self) -> dict[str, int]:
        return {r: sum(c.verdict == r for c in self.candidates) for r in ("kept", *REASONS)}


def guard(labels: np.ndarray, hu: np.ndarray, anatomy: Anatomy, threshold_hu: float = 130.0) -> GuardResult:
    """Sort every calcium candidate of ``labels`` into kept or excluded-with-reason.

    Vectorised over voxels (one pass of bincounts), so a label map with thousands of bright
    spots (a SEG of every bone, a careless model) costs about as much as one with ten.
    """
    calcium = (labels > 0) & (hu >= threshold_hu)
    components, count = ndimage.label(calcium, structure=np.ones((3, 3, 3), bool))
    kept = labels.copy()
    result = GuardResult(kept, [])
    if count == 0:
        return result
    zz, yy, xx = np.nonzero(components)
    comp = components[zz, yy, xx]
    iz, iy, ix = anatomy.grid.index_maps()
    cz, cy, cx = iz[zz], iy[yy], ix[xx]
    n = count + 1
    voxels = np.bincount(comp, minlength=n).astype(np.float64)
    size = np.maximum(voxels, 1.0)

    def share(mask: np.ndarray) -> np.ndarray:
        return np.bincount(comp, weights=mask[cz, cy, cx], minlength=n) / size

    centroid = np.stack([np.bincount(comp, weights=a.astype(np.float64), minlength=n) / size for a in (zz, yy, xx)],
                        axis=1)
    c_centroid = np.stack([np.minimum((centroid[:, k] // f).astype(int), m - 1) for k, (f, m) in
                           enumerate(zip(anatomy.grid.factors, anatomy.grid.shape))], axis=1)
    in_body = anatomy.body[c_centroid[:, 0], c_centroid[:, 1], c_centroid[:, 2]]
    on_bone = share(ndimage.binary_dilation(anatomy.bone, iterations=1)) > 0
    on_aorta = share(anatomy.aorta) >= 1.0 / 3.0
    in_region = share(anatomy.region) >= 0.5
    depth = np.zeros(n)
    np.maximum.at(depth, comp, _depth_map(anatomy)[cz, cy, cx])
    valve = _valve_test(anatomy)
    verdicts = np.full(n, "kept", dtype=object)
    for index in range(1, n):
        if not in_body[index]:
            verdicts[index] = "outside_body"
        elif on_bone[index]:
            verdicts[index] = "bone"
        elif on_aorta[index]:
            verdicts[index] = "aorta"
        elif not in_region[index]:
            verdicts[index] = "outside_heart"
        elif valve(tuple(c_centroid[index])):
            verdicts[index] = "aortic_valve"
        elif depth[index] >= DEPTH_MM:
            verdicts[index] = "intracardiac"
    values = labels[zz, yy, xx].astype(np.int64)
    top = int(values.max()) + 1
    present = np.bincount(comp * top + values, minlength=n * top).reshape(n, top) > 0
    for index in range(1, n):
        result.candidates.append(Candidate(str(verdicts[index]), int(voxels[index]),
                                           tuple(float(v) for v in centroid[index]),
                                           [int(v) for v in np.nonzero(present[index])[0]]))
    per_voxel = verdicts[comp]
    for reason in REASONS:
        hit = per_voxel == reason
        if not hit.any():
            continue
        target = np.zeros_like(labels)
        where = (zz[hit], yy[hit], xx[hit])
        target[where] = labels[where]
        kept[where] = 0
        result.excluded_maps[reason] = target
    return result


def _depth_map(anatomy: Anatomy) -> np.ndarray:
    """Distance (mm) from fat/lung into the cardiac mass, calcium enclosed by it counted as mass."""
    # calcium embedded in the heart (valve, annulus) is too dense for the soft-tissue mass and
    # leaves holes in it: fill them (slice by slice). A coronary plaque in the epicardial fat
    # touches the fat, is no hole, and keeps depth 0.
    from .masks import fill_slices

    solid = fill_slices(anatomy.heart_mass)
    return ndimage.distance_transform_edt(solid, sampling=anatomy.grid.spacing)


def _valve_test(anatomy: Anatomy) -> Callable[[tuple[int, int, int]], bool]:
    """True for coarse points in the aortic root's lumen: just below the ascending aorta's lowest disc, within its radius."""
    root = anatomy.info.get("_aortic_root")
    if not root:
        return lambda point: False
    z0, y0, x0, radius = root
    spacing = anatomy.grid.spacing

    def near(point: tuple[int, int, int]) -> bool:
        dz = (point[0] - z0) * spacing[0]
        dr = np.hypot((point[1] - y0) * spacing[1], (point[2] - x0) * spacing[2])
        return -25.0 <= dz <= 5.0 and dr <= radius

    return near


def summarise(result: GuardResult, score_of: Callable[[np.ndarray], Any]) -> dict[str, Any]:
    """Report block: per reason the candidates and the score they would have added."""
    excluded: dict[str, Any] = {}
    for reason in REASONS:
        group = [c for c in result.candidates if c.verdict == reason]
        if not group:
            continue
        scores = score_of(result.excluded_maps[reason])
        excluded[reason] = {
            "meaning": REASON_TEXT[reason],
            "candidates": len(group),
            "voxels": int(sum(c.voxels for c in group)),
            "agatston": round(float(scores.agatston), 3),
            "volume_mm3": round(float(scores.volume_mm3), 3),
        }
    return {
        "candidates": len(result.candidates),
        "kept": sum(c.verdict == "kept" for c in result.candidates),
        "excluded": excluded,
        "excluded_agatston": round(sum(v["agatston"] for k, v in excluded.items() if k not in NON_CORONARY), 3),
        "non_coronary_agatston": round(sum(v["agatston"] for k, v in excluded.items() if k in NON_CORONARY), 3),
    }
