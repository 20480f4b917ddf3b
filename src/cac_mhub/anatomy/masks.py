"""Body, lungs and skeleton from HU on the coarse grid (pure functions, numpy + scipy).

Conventions as everywhere: arrays ``[z, y, x]`` on an axial LPS grid, so +x is the patient's
left, +y posterior and +z superior. Thresholds are on block-averaged HU (about 2 mm voxels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from .fov import FieldOfView

#: Tissue vs air: fat is about -100 HU, aerated lung -900..-600.
TISSUE_HU = -400.0
#: Aerated lung, also emphysematous; consolidated lung is tissue and stays out.
LUNG_HU = -500.0
#: Bone on the coarse grid: cortex survives 2 mm block averaging; osteoporotic trabecular
#: bone (100-150 HU) does not, and is filled in from its cortical ring.
BONE_HU = 150.0
#: Coarse-grid noise (HU, :func:`noise_hu`) above which soft tissue is smoothed more: routine
#: scans are 3-20 HU on the 2 mm grid, low-dose sharp-kernel screening scans 25-45.
NOISY_HU = 20.0
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


def lungs_cut_by_field(body: np.ndarray, coarse: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """Per slice, the field's edge where a lung is cut by it (3D mask on the coarse grid).

    A heart-centred reconstruction (16-25 cm) cuts the chest: the lungs reach the edge of the
    picture (the reconstruction circle, else the image border) and are still inside the
    patient. Lung-like air (-970..-400 HU; the air around a patient is about -1000) on the edge,
    between two stretches of the body's tissue on that edge (chest wall in front, back behind),
    is such a lung. Air around the patient or a table pad at the edge is not flanked by the body
    on both sides.
    """
    smooth = ndimage.gaussian_filter(coarse, sigma=(0.0, 1.0, 1.0))  # noise must not lift outside air
    lung_like = (smooth > -970.0) & (smooth < TISSUE_HU)
    out = np.zeros(body.shape, bool)
    for z in range(body.shape[0]):
        # the body's edge is blurred by partial volume: a few mm of grace before the lung begins
        flank = ndimage.binary_dilation(body[z], iterations=2)
        out[z] = _flanked_by_body(rim, lung_like[z] & ~flank, flank)
    return out


def body_outline(body: np.ndarray, cut_lungs: np.ndarray | None = None, scanned: np.ndarray | None = None
                 ) -> np.ndarray:
    """The body's convex outline per slice, taking in the lungs cut by the field's edge (``cut_lungs``).

    The chest wall and back reach a narrow field's edge on both sides of each lung, so with
    those edge pieces the outline spans the lungs; air around the patient stays outside.
    """
    outline = convex_hull_slices(body if cut_lungs is None else body | cut_lungs)
    return outline & scanned[None] if scanned is not None else outline


#: A lung cut by the field spans at least this many of the 180 angle bins (8 degrees) of its edge.
MIN_CUT_BINS = 4


def _flanked_by_body(rim: np.ndarray, lung_like: np.ndarray, body: np.ndarray, bins: int = 180) -> np.ndarray:
    """Rim pixels of lung-like air whose stretch of the rim has the body's tissue at both ends.

    The rim is walked by angle around its centre; each angle is body, lung-like or other
    (air, padding). A lung-like stretch between two body stretches is a lung cut by the field.
    """
    ys, xs = np.nonzero(rim)
    out = np.zeros(rim.shape, bool)
    if ys.size == 0 or not lung_like[ys, xs].any() or not body[ys, xs].any():
        return out
    angle = np.arctan2(ys - ys.mean(), xs - xs.mean())
    index = np.minimum(((angle + np.pi) / (2 * np.pi) * bins).astype(int), bins - 1)
    kind = np.full(bins, -1, np.int8)  # -1 no rim pixel, 0 other, 1 lung-like, 2 body (body wins)
    np.maximum.at(kind, index, np.where(body[ys, xs], 2, np.where(lung_like[ys, xs], 1, 0)).astype(np.int8))
    if not (kind == 2).any():
        return out
    posterior = (3 * bins) // 4  # the bin straight behind the centre: angle +90 degrees, +y is posterior
    start = int(np.argmax(kind == 2))
    order = np.roll(np.arange(bins), -start)  # begin on body, so every run closes
    cut = np.zeros(bins, bool)
    run: list[int] = []  # lung-like bins since the last body stretch
    crossed_back = False  # the stretch passed the field's posterior pole
    other = 0  # length of the current stretch of air, padding or table
    after_body = True
    for b in list(order) + [order[0]]:
        if kind[b] == 2:
            # a lung is cut at the side of the field, never across its back (the spine, or
            # the table under a whole chest)
            cut[run] = after_body and not crossed_back and len(run) >= MIN_CUT_BINS
            run, after_body, other, crossed_back = [], True, 0, False
            continue
        crossed_back |= b == posterior
        if kind[b] == 1:
            run.append(b)
        elif kind[b] == 0:
            other += 1
            if other > 3:  # more than a partial-volume seam: not closed by the body on both sides
                run, after_body = [], False
    selected = cut[index] & lung_like[ys, xs]
    out[ys[selected], xs[selected]] = True
    return out


def body_mask(coarse: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The patient: largest tissue component after a 4 mm in-plane opening (drops table, leads, cables)."""
    tissue = coarse > TISSUE_HU
    opened = ndimage.binary_opening(tissue, structure=ball(4.0, spacing, flat=True))
    return largest_component(opened)


def lung_mask(coarse: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float],
              inside: np.ndarray | None = None, fov: "FieldOfView | None" = None) -> np.ndarray:
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
    if fov is not None:  # where the picture stops, air is not outside the patient
        rim &= ~ndimage.binary_dilation(fov.rim, iterations=2)[None]
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


def noise_hu(coarse: np.ndarray) -> float:
    """Noise of the coarse grid in soft tissue (HU): robust spread of each voxel about its in-plane 3 x 3 median.

    Why: low-dose and sharp-kernel scans (lung screening) carry 3-5 times the noise of a
    routine scan even after block averaging; the soft-tissue band must be smoothed to match.
    """
    sample = coarse[:: max(1, coarse.shape[0] // 24)]  # a couple of dozen slices suffice
    residual = sample - ndimage.median_filter(sample, size=(1, 3, 3))
    band = (sample > -60.0) & (sample < 160.0)
    return float(1.4826 * np.median(np.abs(residual[band]))) if band.any() else 0.0


def soft_tissue(coarse: np.ndarray, body: np.ndarray, lungs: np.ndarray, noise: float = 0.0) -> np.ndarray:
    """Heart, vessels, muscle and organs: the HU band between fat and bone, inside the body.

    Smoothed over about 2 mm first, more on noisy scans (``noise``: :func:`noise_hu`): in
    low-dose scans single noisy voxels below the band would otherwise riddle the heart with
    holes, and noise lifted into the band would join the heart to what surrounds it.
    """
    low, high = SOFT_HU
    sigma_xy = 1.0 if noise <= NOISY_HU else float(min(2.5, noise / 15.0))
    smooth = ndimage.gaussian_filter(coarse, sigma=(0.5 if noise <= NOISY_HU else 1.0, sigma_xy, sigma_xy))
    return (smooth > low) & (smooth < high) & body & ~lungs


#: Air in an airway's lumen (trachea, bronchi) or the oesophagus is pure air (-1000..-930 HU as
#: scanners calibrate it); aerated lung parenchyma, with its vessels and walls, is brighter once
#: smoothed over 1 mm: a lumen is darker than the parenchyma's median by this much, and below -900.
LUMEN_BELOW_LUNG_HU = 90.0
#: A lumen at least this wide (mm) is an airway (or the oesophagus, a bulla), not parenchyma.
LUMEN_WIDTH_MM = 4.0


def air_lumens(hu: np.ndarray, factors: tuple[int, int, int], spacing_full: tuple[float, float, float],
               coarse_box: tuple[slice, slice, slice], coarse_shape: tuple[int, int, int],
               inside: np.ndarray, lung_hu: float = -800.0) -> np.ndarray:
    """Coarse mask of wide pure-air lumens inside the body's outline, found on the CT grid in ``coarse_box``.

    Why: calcified cartilage of the trachea and bronchi (common with age) lies in their wall,
    right beside the heart's base; no coronary artery lies against an airway. The lumen is told
    from lung parenchyma (median ``lung_hu``) by being pure air over at least :data:`LUMEN_WIDTH_MM`.
    """
    out = np.zeros(coarse_shape, bool)
    box = tuple(slice(b.start * f, b.stop * f) for b, f in zip(coarse_box, factors))
    values = hu[box].astype(np.float32)
    if values.size == 0:
        return out
    smooth = ndimage.gaussian_filter(values, (0.0, 1.0 / spacing_full[1], 1.0 / spacing_full[2]))
    air = smooth < min(-900.0, lung_hu - LUMEN_BELOW_LUNG_HU)
    if not air.any():
        return out
    wide = ndimage.distance_transform_edt(air, sampling=spacing_full) >= 0.5 * LUMEN_WIDTH_MM
    lumen = ndimage.binary_dilation(wide, iterations=int(np.ceil(0.5 * LUMEN_WIDTH_MM / min(spacing_full[1:]))),
                                    mask=air)
    fz, fy, fx = factors
    nz, ny, nx = (b.stop - b.start for b in coarse_box)
    blocks = lumen[: nz * fz, : ny * fy, : nx * fx].reshape(nz, fz, ny, fy, nx, fx).mean(axis=(1, 3, 5))
    out[coarse_box] = (blocks >= 0.25) & inside[coarse_box]
    return out
