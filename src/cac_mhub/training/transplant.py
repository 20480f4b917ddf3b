"""Real calcium moved onto real hearts: labelled training and test cases from scans without calcium labels.

Why: no scan here has an expert's coronary calcium outline, and a detector that has only seen
synthetic calcium misses real lesions. Real calcified tissue is plentiful all the same: the wall
of the aorta, costal and bronchial cartilage, valves. Cut out with its own partial-volume edge
and noise texture, and laid into the epicardial fat of another real heart (where the coronary
arteries run, preferring the fat-filled grooves), it makes a lesion whose every voxel is known.

Pure numpy/scipy. A *patch* holds, per voxel, the share of calcium in it (partial volume):
``(HU - background) / (density - background)``, with the calcification's own background and
its density taken as its peak (at least :data:`MIN_DENSITY_HU`). Pasting blends that share of
calcium with whatever lies at the target, so in fat the edge falls below 130 HU as it would
in a real artery, and the core keeps its brightness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..anatomy.analysis import Anatomy, root_zone
from ..anatomy.lesions import zones

#: A source calcification: bright enough to be calcium beyond doubt, small enough to be a plaque.
MIN_PEAK_HU = 250.0
PATCH_MM3 = (2.0, 250.0)
#: Calcium is at least this dense; a faint calcification's peak is a partial volume of it.
MIN_DENSITY_HU = 600.0
#: Its core, smoothed over 0.7 mm, still peaks at this: noise speckle of a sharp kernel does not.
MIN_SMOOTH_PEAK_HU = 200.0
#: Margin (mm) of background kept around a calcification in its patch.
PATCH_MARGIN_MM = 2.0
#: Target sites: epicardial fat this far (mm) outside the cardiac mass.
SITE_MASS_MM = (0.5, 7.0)
#: ... or in the fat round the aortic root (the proximal arteries), this far from the aorta mask.
SITE_AORTA_MM = 1.5


@dataclass
class Patch:
    """A real calcification as a calcium share per voxel, on its own grid."""

    share: np.ndarray
    """Share of calcium in each voxel (float32 0..1, ``[z, y, x]``), 0 outside the lesion's support."""
    density_hu: float
    """HU of pure calcium in this calcification (its peak, at least :data:`MIN_DENSITY_HU`)."""
    spacing: tuple[float, float, float]
    peak_hu: float
    volume_mm3: float
    source: str = ""


def calcified_patches(hu: np.ndarray, spacing: tuple[float, float, float], anatomy: Anatomy | None = None,
                      source: str = "", threshold: float = 130.0) -> list[Patch]:
    """Every small, bright calcification of a scan that is not part of the skeleton, as a patch.

    Bone is left out (its patches would carry marrow and cortex); aortic-wall plaques, costal
    and bronchial cartilage, valve and lymph-node calcifications stay.
    """
    bright = hu >= threshold
    labels, count = ndimage.label(bright, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return []
    voxel = float(np.prod(spacing))
    sizes = np.bincount(labels.ravel()) * voxel
    peaks = ndimage.maximum(hu, labels, index=np.arange(count + 1))
    bone = anatomy.full("bone") if anatomy is not None else np.zeros(hu.shape, bool)
    pad = [int(np.ceil(PATCH_MARGIN_MM / s)) + 1 for s in spacing]
    patches = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None or not PATCH_MM3[0] <= sizes[index] <= PATCH_MM3[1] or peaks[index] < MIN_PEAK_HU:
            continue
        box = tuple(slice(max(0, w.start - p), min(n, w.stop + p)) for w, p, n in zip(where, pad, hu.shape))
        lesion = labels[box] == index
        if bone[box][lesion].any() or lesion[0].any() or lesion[-1].any():
            continue  # on bone, or cut by the first or last slice
        values = hu[box].astype(np.float32)
        support = ndimage.binary_dilation(lesion, structure=_ball(1.0, spacing))
        ring = ndimage.binary_dilation(support, structure=_ball(1.5, spacing)) & ~support
        if not ring.any():
            continue
        background = float(np.median(values[ring]))
        if background > 100.0:  # inside dense tissue: the excess would be wrong
            continue
        smooth = ndimage.gaussian_filter(values, (0.0, 0.7 / spacing[1], 0.7 / spacing[2]))
        if smooth[lesion].max() < MIN_SMOOTH_PEAK_HU:
            continue
        density = max(float(peaks[index]), MIN_DENSITY_HU)
        share = np.where(support, np.clip((values - background) / (density - background), 0.0, 1.0), 0.0)
        patches.append(Patch(share.astype(np.float32), density, tuple(float(s) for s in spacing),
                             float(peaks[index]), float(sizes[index]), source))
    return patches


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    half = [max(0, int(radius_mm / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s / max(radius_mm, 1e-6)) ** 2 for g, s in zip(grids, spacing)) <= 1.0


def coronary_sites(hu: np.ndarray, anatomy: Anatomy, spacing: tuple[float, float, float], count: int,
                   rng: np.random.Generator, min_apart_mm: float = 20.0) -> list[tuple[int, int, int]]:
    """Points in the epicardial fat of the heart region where coronary arteries could run.

    Fat (-190..-30 HU, smoothed over 1 mm) in the free zone of the heart region, 0.5-7 mm
    outside the cardiac mass or in the fat round the aortic root (where the proximal arteries
    run); points where the fat is thick (the grooves) are drawn three times as often. At least
    ``min_apart_mm`` apart.
    """
    zone = zones(anatomy, spacing)
    if zone is None:
        return []
    values = ndimage.gaussian_filter(hu[zone.box].astype(np.float32), (0.0, 1.0 / spacing[1], 1.0 / spacing[2]))
    fat = (values >= -190.0) & (values <= -30.0) & zone.free & zone.region
    grid = anatomy.grid
    iz, iy, ix = (index[s] for index, s in zip(grid.index_maps(), zone.box))
    mass = zone.distances["mass"][np.ix_(iz, iy, ix)]
    near = (mass >= SITE_MASS_MM[0]) & (mass <= SITE_MASS_MM[1])
    root = anatomy.info.get("_aortic_root")
    if root:  # the proximal arteries in the fat round the aortic root, clear of its wall
        around = root_zone(grid.shape, grid.spacing, root) & (zone.distances["aorta"] >= SITE_AORTA_MM)
        near |= around[np.ix_(iz, iy, ix)]
    fat &= near
    points = np.argwhere(fat)
    if len(points) == 0:
        return []
    thick = ndimage.distance_transform_edt(fat, sampling=spacing)[tuple(points.T)]
    weight = np.where(thick >= 2.5, 3.0, 1.0)
    order = rng.choice(len(points), size=min(len(points), 4000), replace=False, p=weight / weight.sum())
    chosen: list[np.ndarray] = []
    for i in order:
        p = points[i]
        if all(np.linalg.norm((p - q) * np.asarray(spacing)) >= min_apart_mm for q in chosen):
            chosen.append(p)
        if len(chosen) >= count:
            break
    return [tuple(int(v) for v in p + [b.start for b in zone.box]) for p in chosen]


def paste(hu: np.ndarray, spacing: tuple[float, float, float], patch: Patch, at_zyx: tuple[int, int, int],
          rng: np.random.Generator, threshold: float = 130.0) -> np.ndarray:
    """Add ``patch`` into ``hu`` (in place) centred at ``at_zyx``; returns the new lesion's mask (>= threshold).

    The patch is resampled to the target grid (linear), turned by a random multiple of 90 degrees
    in-plane and mirrored at random, as a plaque may lie any way round the artery. Each voxel
    becomes ``target + share x (density - target)``.
    """
    factors = [s / t for s, t in zip(patch.spacing, spacing)]
    share = ndimage.zoom(patch.share, factors, order=1) if not np.allclose(factors, 1.0) else patch.share
    share = np.rot90(share, k=int(rng.integers(4)), axes=(1, 2))
    if rng.random() < 0.5:
        share = share[:, :, ::-1]
    if rng.random() < 0.5:
        share = share[::-1]
    starts = [c - n // 2 for c, n in zip(at_zyx, share.shape)]
    target = tuple(slice(max(0, s), min(n, s + e)) for s, e, n in zip(starts, share.shape, hu.shape))
    source = tuple(slice(t.start - s, t.stop - s) for t, s in zip(target, starts))
    piece = np.clip(share[source], 0.0, 1.0)
    before = hu[target].astype(np.float32)
    after = before + piece * (patch.density_hu - before)
    hu[target] = np.clip(np.round(after), -1024, 3071).astype(hu.dtype)
    mask = np.zeros(hu.shape, bool)
    mask[target] = (piece > 0) & (after >= threshold)
    return mask
