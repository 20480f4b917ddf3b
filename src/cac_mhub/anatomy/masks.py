"""Body, lungs and skeleton from HU on the coarse grid (pure functions, numpy + scipy).

Conventions as everywhere: arrays ``[z, y, x]`` on an axial LPS grid, so +x is the patient's
left, +y posterior and +z superior. Thresholds are on block-averaged HU (about 2 mm voxels).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Tissue vs air: fat is about -100 HU, aerated lung -900..-600.
TISSUE_HU = -400.0
#: Aerated lung, also emphysematous; consolidated lung is tissue and stays out.
LUNG_HU = -500.0
#: Bone on the coarse grid: cortex survives 2 mm block averaging; osteoporotic trabecular
#: bone (100-150 HU) does not, and is filled in from its cortical ring.
BONE_HU = 150.0
#: Heart, vessels, muscle, liver: soft tissue between fat and bone.
SOFT_HU = (-40.0, 180.0)


def ball(radius_mm: float, spacing: tuple[float, float, float], flat: bool = False) -> np.ndarray:
    """Boolean ellipsoidal structuring element of ``radius_mm`` (a disk in-plane when ``flat``)."""
    half = [0 if flat and i == 0 else max(0, int(radius_mm / s)) for i, s in enumerate(spacing)]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    distance = sum((g * s / max(radius_mm, 1e-6)) ** 2 for g, s in zip(grids, spacing))
    return distance <= 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def fill_slices(mask: np.ndarray) -> np.ndarray:
    """2D hole filling slice by slice (a 3D fill would leak through the open ends)."""
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]) if mask.size else mask


def convex_hull_slices(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import convex_hull_image

    out = np.zeros_like(mask)
    for i, s in enumerate(mask):
        if np.count_nonzero(s) >= 3:
            try:
                out[i] = convex_hull_image(s)
            except Exception:  # noqa: BLE001 - degenerate (collinear) slices keep the raw mask
                out[i] = s
    return out


def body_outline(body: np.ndarray, coarse: np.ndarray | None = None) -> np.ndarray:
    """The body's convex outline per slice, reaching the image edge where the field of view cuts the body.

    A cardiac reconstruction (20-25 cm field of view) cuts the chest: the lungs reach the image
    edge and are still inside the patient. Edge pixels of lung-like air (-970..-400 HU; the air
    around a patient is about -1000) join the outline; so does the whole edge of a slice that the
    body covers for the most part.
    """
    support = body.copy()
    if coarse is not None:
        smooth = ndimage.gaussian_filter(coarse, sigma=(0.0, 2.0, 2.0))  # noise must not lift outside air
        lung_like = (smooth > -970.0) & (smooth < TISSUE_HU)
        edge = np.zeros(body.shape[1:], bool)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        support |= lung_like & edge[None]
    outline = convex_hull_slices(support)
    for z, section in enumerate(body):
        border = np.concatenate([section[0], section[-1], section[:, 0], section[:, -1]])
        if border.size and border.mean() >= 0.3:
            outline[z] = True
    return outline


def body_mask(coarse: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The patient: largest tissue component after a 4 mm in-plane opening (drops table, leads, cables)."""
    tissue = coarse > TISSUE_HU
    opened = ndimage.binary_opening(tissue, structure=ball(4.0, spacing, flat=True))
    return largest_component(opened)


def lung_mask(coarse: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float],
              inside: np.ndarray | None = None) -> np.ndarray:
    """Aerated lungs (trachea and main bronchi included): large air inside the body outline.

    ``inside`` is the body's outline per slice (its convex hull), so that lungs cut by a small
    field of view (cardiac reconstructions) still count. Air is split at thin connections by
    one erosion; the largest part is lung, and so is any other part at least 3 % as large that
    spans at least half its height (the other lung). That keeps stomach and bowel gas out.
    """
    if inside is None:
        inside = convex_hull_slices(body)
    air = (coarse < LUNG_HU) & inside
    core = ndimage.binary_erosion(air, structure=np.ones((3, 3, 3), bool))
    labels, count = ndimage.label(core)
    if count == 0:
        return np.zeros_like(air)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    # air open to the outline's edge is outside the patient (above the shoulders, between arm
    # and chest), except where the field of view itself cuts the body (cardiac reconstructions)
    rim = inside & ~ndimage.binary_erosion(inside, structure=np.ones((1, 3, 3), bool), border_value=1)
    near_rim = ndimage.binary_dilation(rim, structure=np.ones((1, 3, 3), bool), iterations=2)
    on_rim = np.bincount(labels[near_rim].ravel(), minlength=count + 1)
    sizes[on_rim > 0.02 * np.maximum(sizes, 1)] = 0
    if sizes.max() == 0:
        return np.zeros_like(air)
    largest = int(sizes.argmax())
    zs = ndimage.find_objects(labels)
    height = lambda i: zs[i - 1][0].stop - zs[i - 1][0].start  # noqa: E731
    # the other lung: comparable volume and height (a small field of view may cut it to a sliver
    # of its volume, never of its height); stomach and bowel gas are short
    keep = [i for i in range(1, count + 1)
            if i == largest or (sizes[i] >= 0.03 * sizes[largest] and height(i) >= 0.5 * height(largest))]
    lungs = np.isin(labels, keep)
    # grow back within the air what the erosion took: thin rims of lung pressed by the heart
    return ndimage.binary_dilation(lungs, structure=np.ones((3, 3, 3), bool), iterations=4, mask=air)


def bone_mask(coarse: np.ndarray, spacing: tuple[float, float, float], min_cm3: float = 5.0,
              min_extent_mm: float = 40.0) -> np.ndarray:
    """Skeleton: dense components of at least ``min_cm3`` spanning ``min_extent_mm`` or more.

    Vertebrae, ribs, sternum, scapulae and calcified costal cartilage joined to them are large;
    a calcified coronary segment is far smaller. Trabecular bone inside the cortex is filled in.
    """
    dense = coarse > BONE_HU
    labels, count = ndimage.label(dense, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return dense
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel()) * voxel_cm3
    keep = np.zeros(count + 1, bool)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[i] < min_cm3:
            continue
        extent = max((b.stop - b.start) * s for b, s in zip(box, spacing))
        keep[i] = extent >= min_extent_mm
    skeleton = ndimage.binary_closing(keep[labels], structure=ball(3.0, spacing, flat=True))
    return fill_slices(skeleton)


def soft_tissue(coarse: np.ndarray, body: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Heart, vessels, muscle and organs: the HU band between fat and bone, inside the body.

    Smoothed over about 2 mm first: in low-dose scans single noisy voxels below the band would
    otherwise riddle the heart with holes and break every distance measure.
    """
    low, high = SOFT_HU
    smooth = ndimage.gaussian_filter(coarse, sigma=(0.5, 1.0, 1.0))
    return (smooth > low) & (smooth < high) & body & ~lungs
