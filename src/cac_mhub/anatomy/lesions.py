"""Calcium lesions between segmentation and scoring: whole lesions, and what no model labelled.

Pure: HU, a calcium label map and the :class:`~.analysis.Anatomy` in; a completed label map and
a table of candidates out.

Why: a network that has seen little real calcium labels a real lesion only in part (a few of its
voxels at or above 130 HU), and some lesions not at all. A reader's scoring tool takes the whole
connected >= 130 HU lesion from one click, and every reader looks at every bright spot on the
heart. So:

* **Completion.** Each labelled lesion grows to the whole connected calcium it belongs to,
  within the *free zone*: never into bone (grown by :data:`BONE_MARGIN_MM`), the aorta mask, the
  aortic valve's lumen or the blood pool (deeper than :data:`BLOOD_POOL_MM` inside the cardiac
  mass). On noisy scans (low dose, sharp kernels) calcium voxels are also held to the lesion's
  own bright core, so that noise speckle next to a plaque does not join it.
* **Candidates.** Every other connected calcium component in the free zone inside the heart
  region is a *candidate*: a lesion no model labelled. Each comes with the measurements a reader
  would weigh (size, peak HU, fat around it, distance to the heart's surface, to bone, the aorta,
  the lungs and the aortic root); a detector (:mod:`.detector`) decides which are coronary.

Noise is judged from the blood pool: its robust spread. Above :data:`NOISY_HU` the calcium
cores are found on a copy smoothed over :data:`SMOOTH_MM`, as a reader narrows the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .analysis import Anatomy
from .masks import fill_slices

#: Skeleton grown by this before it bounds a lesion: a lesion touching bone is bone's.
BONE_MARGIN_MM = 1.5
#: Deeper than this inside the cardiac mass is blood pool (or valve, annulus): not coronary.
BLOOD_POOL_MM = 4.0
#: Blood-pool noise (HU, robust SD on the CT grid) above which calcium cores are found on a smoothed
#: copy: the least smoothing (of :data:`SMOOTHING_MM`) that brings the blood's noise to :data:`QUIET_HU`.
NOISY_HU = 30.0
SMOOTHING_MM = (0.7, 1.0, 1.4, 2.0)
QUIET_HU = 20.0
#: Box around the heart region in which lesions are looked for.
BOX_MARGIN_MM = 12.0
#: Candidates larger than this are not lesions (a calcified aorta or valve ring the masks missed).
MAX_CANDIDATE_MM3 = 3000.0

FEATURES = (
    "volume_mm3", "area_max_mm2", "slices", "peak_hu", "mean_hu", "agatston", "contrast_sd",
    "fat_share", "soft_share", "air_share", "dist_mass_mm", "dist_bone_mm", "dist_aorta_mm",
    "dist_lung_mm", "dist_region_edge_mm", "z_from_root_mm", "dist_root_mm", "z_from_centre_mm",
    "elongation", "noise_hu", "increment_mm", "model_share", "peak_for_size",
)


@dataclass
class Lesion:
    """One connected calcium component in the free zone of the heart region."""

    voxels: np.ndarray
    """Flat indices of its voxels on the CT grid."""
    centroid_zyx: tuple[float, float, float]
    peak_zyx: tuple[int, int, int]
    features: dict[str, float]
    model_label: int = 0
    """The model's majority label on it (0: the model labelled none of it)."""
    in_region: bool = True


@dataclass
class LesionMap:
    """Completed labels, the lesions found, and what completion did."""

    labels: np.ndarray
    lesions: list[Lesion] = field(default_factory=list)
    noise_hu: float = 0.0
    smoothing_mm: float = 0.0
    """In-plane Gaussian sigma of the copy on which calcium cores were found (0: none, a quiet scan)."""
    added_voxels: int = 0
    """Voxels completion added to labelled lesions."""
    completed_lesions: int = 0

    def candidates(self) -> list[Lesion]:
        """Lesions in the heart region that no model labelled."""
        return [lesion for lesion in self.lesions if lesion.in_region and lesion.model_label == 0]


@dataclass
class Zones:
    """The heart region's box on the CT grid, the masks that bound lesions there, and distances."""

    box: tuple[slice, slice, slice]
    region: np.ndarray
    """The heart region in the box (CT grid)."""
    free: np.ndarray
    """Where a coronary lesion may lie (CT grid, box): not bone (+margin), aorta, valve lumen or blood pool."""
    distances: dict[str, np.ndarray]
    """On the coarse grid, in mm: ``mass`` (signed: > 0 outside the cardiac mass, < 0 inside it),
    ``bone``, ``aorta``, ``lung``, and ``region_edge`` (inside the region, to its edge)."""
    anatomy: Anatomy

    def distance(self, name: str, full_index: tuple[int, int, int]) -> float:
        """A coarse distance map's value at a CT-grid index (absolute, not box-relative)."""
        coarse = tuple(min(int(i) // f, m - 1) for i, f, m in
                       zip(full_index, self.anatomy.grid.factors, self.anatomy.grid.shape))
        return float(self.distances[name][coarse])


def zones(anatomy: Anatomy, spacing_zyx: tuple[float, float, float]) -> Zones | None:
    """Masks on the CT grid within the heart region's box (None without a region)."""
    if not anatomy.found or not anatomy.region.any():
        return None
    grid, coarse_spacing = anatomy.grid, anatomy.grid.spacing
    cbox = ndimage.find_objects(anatomy.region.astype(np.uint8))[0]
    pad = [int(np.ceil(BOX_MARGIN_MM / s)) for s in coarse_spacing]
    cbox = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(cbox, pad, grid.shape))
    box = tuple(slice(b.start * f, min(n, b.stop * f) if b.stop < m else n)
                for b, f, n, m in zip(cbox, grid.factors, grid.full_shape, grid.shape))
    iz, iy, ix = (index[s] for index, s in zip(grid.index_maps(), box))

    def full(mask: np.ndarray) -> np.ndarray:
        return mask[np.ix_(iz, iy, ix)]

    solid = fill_slices(anatomy.heart_mass)
    depth = ndimage.distance_transform_edt(solid, sampling=coarse_spacing)
    outside = ndimage.distance_transform_edt(~solid, sampling=coarse_spacing)
    distances = {
        "mass": np.where(solid, -depth, outside).astype(np.float32),
        "bone": ndimage.distance_transform_edt(~anatomy.bone, sampling=coarse_spacing).astype(np.float32),
        "aorta": ndimage.distance_transform_edt(~anatomy.aorta, sampling=coarse_spacing).astype(np.float32),
        "lung": ndimage.distance_transform_edt(~anatomy.lungs, sampling=coarse_spacing).astype(np.float32),
        "region_edge": ndimage.distance_transform_edt(anatomy.region, sampling=coarse_spacing).astype(np.float32),
    }
    barrier = (distances["bone"] <= BONE_MARGIN_MM + 0.5 * min(coarse_spacing)) | anatomy.aorta \
        | (distances["mass"] <= -BLOOD_POOL_MM) | _valve_lumen(anatomy)
    return Zones(box, full(anatomy.region), ~full(barrier), distances, anatomy)


def _valve_lumen(anatomy: Anatomy) -> np.ndarray:
    """The aortic root's lumen just below the ascending aorta's lowest clear disc (coarse grid)."""
    out = np.zeros(anatomy.grid.shape, bool)
    root = anatomy.info.get("_aortic_root")
    if not root:
        return out
    z0, y0, x0, radius = root
    sz, sy, sx = anatomy.grid.spacing
    zz, yy, xx = np.ogrid[: out.shape[0], : out.shape[1], : out.shape[2]]
    dz = (zz - z0) * sz
    inside = (np.hypot((yy - y0) * sy, (xx - x0) * sx) <= 0.75 * radius) & (dz >= -20.0) & (dz <= 0.0)
    return inside & ~anatomy.lungs


def blood_noise(hu: np.ndarray, anatomy: Anatomy) -> float:
    """Robust SD (HU) of the blood pool on the CT grid: 1.48 x median absolute deviation of the
    chambers' voxels (away from their walls) in a few slices through the heart's middle.

    Blood is uniform to a few HU, so its spread is the scan's noise, correlated (smooth) noise
    of a sharp kernel or low dose included.
    """
    if not anatomy.heart_mass.any():
        return 0.0
    core = ndimage.binary_erosion(fill_slices(anatomy.heart_mass), iterations=2)
    if not core.any():
        core = anatomy.heart_mass
    zs = np.nonzero(core.any(axis=(1, 2)))[0]
    grid = anatomy.grid
    iz, iy, ix = grid.index_maps()
    samples = []
    for z in zs[len(zs) // 4: max(len(zs) // 4 + 1, 3 * len(zs) // 4): max(1, len(zs) // 8)]:
        rows = np.nonzero(iz == z)[0]
        mask = core[z][np.ix_(iy, ix)]
        samples.append(hu[int(rows[len(rows) // 2])][mask].astype(np.float32))
    values = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if values.size < 50:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def find_lesions(labels: np.ndarray, hu: np.ndarray, anatomy: Anatomy, spacing_zyx: tuple[float, float, float],
                 threshold_hu: float = 130.0, min_area_mm2: float = 1.0, complete: bool = True) -> LesionMap:
    """Complete the labelled lesions and list every other calcium lesion of the heart region.

    ``labels`` is the model's (or a SEG's) label map on the CT grid; it is not changed. Voxels
    below ``threshold_hu`` never count; lesions whose largest in-slice area is below
    ``min_area_mm2`` are not candidates (Agatston drops them too).
    """
    out = LesionMap(labels.copy())
    zone = zones(anatomy, spacing_zyx)
    if zone is None:
        return out
    box = zone.box
    values = hu[box].astype(np.float32)
    out.noise_hu = blood_noise(hu, anatomy)
    calcium = values >= threshold_hu
    if out.noise_hu > NOISY_HU:
        smooth, out.smoothing_mm = _denoised(values, hu, anatomy, zone, spacing_zyx)
        core = smooth >= threshold_hu
        calcium &= ndimage.binary_dilation(core, structure=np.ones((1, 3, 3), bool))
    free = calcium & zone.free
    components, count = ndimage.label(free, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return out
    local_labels = out.labels[box]
    labelled = (local_labels > 0) & calcium
    voxel_mm3 = float(np.prod(spacing_zyx))
    pixel_mm2 = float(spacing_zyx[1] * spacing_zyx[2])
    objects = ndimage.find_objects(components)
    for index, where in enumerate(objects, start=1):
        if where is None:
            continue
        part = components[where] == index
        n_voxels = int(part.sum())
        if n_voxels * voxel_mm3 > MAX_CANDIDATE_MM3:
            continue
        area_max = float(part.reshape(part.shape[0], -1).sum(axis=1).max()) * pixel_mm2
        hits = labelled[where] & part
        model_label = _majority(local_labels[where][hits]) if hits.any() else 0
        in_region = bool(zone.region[where][part].mean() >= 0.5)
        if model_label and complete and in_region:  # outside the region the guard decides as labelled
            grow = part & ~hits
            out.added_voxels += int(grow.sum())
            out.completed_lesions += int(grow.any())
            local = local_labels[where]
            local[grow] = model_label
        if area_max < min_area_mm2 and not model_label:
            continue
        lesion = _describe(part, where, box, values, zone, anatomy, spacing_zyx, threshold_hu, out.noise_hu,
                           model_share=float(hits.sum()) / n_voxels)
        lesion.model_label = model_label
        out.lesions.append(lesion)
    return out


def _denoised(values: np.ndarray, hu: np.ndarray, anatomy: Anatomy, zone: Zones,
              spacing: tuple[float, float, float]) -> tuple[np.ndarray, float]:
    """The box smoothed in-plane just enough that the blood pool's noise falls to :data:`QUIET_HU`."""
    core = ndimage.binary_erosion(fill_slices(anatomy.heart_mass), iterations=2)
    grid = anatomy.grid
    iz, iy, ix = (index[s] for index, s in zip(grid.index_maps(), zone.box))
    blood = core[np.ix_(iz, iy, ix)]
    smooth = values
    for sigma_mm in SMOOTHING_MM:
        smooth = ndimage.gaussian_filter(values, (0.0, sigma_mm / spacing[1], sigma_mm / spacing[2]))
        sample = smooth[blood]
        if sample.size < 50:
            break
        spread = float(1.4826 * np.median(np.abs(sample - np.median(sample))))
        if spread <= QUIET_HU:
            break
    return smooth, sigma_mm


def _majority(values: np.ndarray) -> int:
    counts = np.bincount(values.astype(np.int64))
    counts[0] = 0
    return int(counts.argmax())


def _describe(part: np.ndarray, where: tuple[slice, ...], box: tuple[slice, ...], values: np.ndarray,
              zone: Zones, anatomy: Anatomy, spacing: tuple[float, float, float], threshold: float,
              noise: float, model_share: float) -> Lesion:
    """The measurements of one lesion (see :data:`FEATURES`)."""
    local = np.argwhere(part) + [w.start for w in where]
    full = local + [b.start for b in box]
    hu_values = values[tuple(local.T)]
    peak_at = int(np.argmax(hu_values))
    centroid = full.mean(axis=0)
    mm = local * np.asarray(spacing)
    if len(mm) >= 3:
        eig = np.sort(np.linalg.eigvalsh(np.cov(mm.T)))[::-1]
        elongation = float(np.sqrt(max(eig[0], 1e-6) / max(eig[1], 1e-2)))
    else:
        elongation = 1.0
    shell = _shell(part, where, values.shape, spacing)
    around = values[shell]
    fat = float(np.mean((around >= -190) & (around <= -30))) if around.size else 0.0
    soft = float(np.mean((around > -30) & (around < threshold))) if around.size else 0.0
    air = float(np.mean(around < -400)) if around.size else 0.0
    background = float(np.median(around)) if around.size else 0.0
    c = tuple(int(round(v)) for v in centroid)
    slices_hit = int(part.any(axis=(1, 2)).sum())
    pixel_mm2 = spacing[1] * spacing[2]
    area_max = float(part.reshape(part.shape[0], -1).sum(axis=1).max()) * pixel_mm2
    root = anatomy.info.get("_aortic_root")
    centre_mm = anatomy.info.get("centre_zyx_mm")
    point_mm = centroid * np.asarray(spacing)
    if root:
        root_mm = np.asarray(anatomy.grid.to_full_index(root[:3])) * np.asarray(spacing)
        z_root, d_root = float(point_mm[0] - root_mm[0]), float(np.linalg.norm(point_mm - root_mm))
    else:
        z_root, d_root = float("nan"), float("nan")
    z_centre = float(point_mm[0] - centre_mm[0]) if centre_mm else float("nan")
    front = anatomy.spine_front[min(int(centroid[0]) // anatomy.grid.factors[0], len(anatomy.spine_front) - 1)]
    front_y = anatomy.grid.to_full_index((0.0, float(front), 0.0))[1]
    front_of_spine = float((front_y - centroid[1]) * spacing[1])  # NaN where the spine is not seen
    features = {
        "volume_mm3": float(len(local) * np.prod(spacing)),
        "area_max_mm2": area_max,
        "slices": float(slices_hit),
        "peak_hu": float(hu_values.max()),
        "mean_hu": float(hu_values.mean()),
        "agatston": _agatston(part, values[where], spacing, threshold),
        "contrast_sd": float((hu_values.max() - background) / max(noise, 5.0)),
        "fat_share": fat, "soft_share": soft, "air_share": air,
        "dist_mass_mm": zone.distance("mass", c), "dist_bone_mm": zone.distance("bone", c),
        "dist_aorta_mm": zone.distance("aorta", c), "dist_lung_mm": zone.distance("lung", c),
        "dist_region_edge_mm": zone.distance("region_edge", c),
        "z_from_root_mm": z_root, "dist_root_mm": d_root, "z_from_centre_mm": z_centre,
        "elongation": elongation, "noise_hu": float(noise), "increment_mm": float(spacing[0]),
        # dense calcium is bright for its size; a large faint patch is partial volume of tissue
        "peak_for_size": float((hu_values.max() - threshold) / np.sqrt(max(len(local) * np.prod(spacing), 1.0))),
        "model_share": model_share,
        "front_of_spine_mm": front_of_spine,
    }
    in_region = bool(zone.region[tuple(local.T)].mean() >= 0.5)
    return Lesion(voxels=full, centroid_zyx=tuple(float(v) for v in centroid),
                  peak_zyx=tuple(int(v) for v in full[peak_at]), features=features, in_region=in_region)


def _shell(part: np.ndarray, where: tuple[slice, ...], shape: tuple[int, ...], spacing: tuple[float, float, float],
           inner_mm: float = 1.0, outer_mm: float = 3.0) -> np.ndarray:
    """Voxels 1-3 mm around a lesion (in the box's coordinates)."""
    pad = [int(np.ceil(outer_mm / s)) + 1 for s in spacing]
    grown = tuple(slice(max(0, w.start - p), min(n, w.stop + p)) for w, p, n in zip(where, pad, shape))
    local = np.zeros(tuple(g.stop - g.start for g in grown), bool)
    offset = tuple(w.start - g.start for w, g in zip(where, grown))
    local[tuple(slice(o, o + s) for o, s in zip(offset, part.shape))] = part
    distance = ndimage.distance_transform_edt(~local, sampling=spacing)
    ring = (distance > inner_mm) & (distance <= outer_mm)
    out = np.zeros(shape, bool)
    out[grown] = ring
    return out


def _agatston(part: np.ndarray, values: np.ndarray, spacing: tuple[float, float, float], threshold: float) -> float:
    """Agatston of one lesion's voxels (standard rules: 2D components per slice, weight by peak)."""
    total = 0.0
    pixel_mm2 = spacing[1] * spacing[2]
    for z in range(part.shape[0]):
        plane = part[z] & (values[z] >= threshold)
        if not plane.any():
            continue
        blobs, count = ndimage.label(plane, structure=np.ones((3, 3), bool))
        for b in range(1, count + 1):
            pixels = blobs == b
            area = float(pixels.sum()) * pixel_mm2
            if area < 1.0:
                continue
            peak = float(values[z][pixels].max())
            weight = 1 if peak < 200 else 2 if peak < 300 else 3 if peak < 400 else 4
            total += area * weight
    return total * spacing[0] / 3.0


def candidate_table(lesions: list[Lesion]) -> list[dict[str, Any]]:
    """Report rows for lesions: where they are and what they measure."""
    return [{"peak_zyx": list(lesion.peak_zyx),
             **{k: round(float(lesion.features[k]), 3) for k in ("volume_mm3", "peak_hu", "agatston",
                                                                  "area_max_mm2")}}
            for lesion in lesions]
