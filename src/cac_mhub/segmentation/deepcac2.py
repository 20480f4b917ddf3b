"""DeepCAC2's calcium segmentation on a CT grid, step by step as published (MHub ``models/deepcac2``).

The published pipeline runs torchio 0.19.1 on the NIfTI files MHub wrote (the CT and platipy's
heart mask); torchio does its spatial work with SimpleITK. Here the same SimpleITK calls run on
the same numbers, so the grids, the crop and the masks are the published ones voxel for voxel
(``tests/test_deepcac2_parity.py`` runs torchio itself beside this):

1. the CT as its NIfTI holds it: spacing, origin and direction in float32 (the file's precision),
   pixels in the series' stored type (``int16`` for integer HU, else ``float32``);
2. CT (linear) and heart mask (nearest) resampled to 0.7 x 0.7 x 2.5 mm on ``tio.Resample``'s
   grid: ``ceil(n * s / t)`` voxels, the first voxel's edge on the scan's edge, 0 outside; in the
   pixel type, so that an int16 CT is truncated to integers as SimpleITK casts;
3. a 256 x 256 x 58 box (x, y, z) cropped or padded with 0 by ``CropOrPad(mask_name='heart')``:
   centred on the bounding box of the *resampled* heart (``(first + last + 1) / 2``, shifted down
   half a voxel when its parity and the box's differ); without a heart, the volume centre;
4. clamp to [-135, 500] HU (in the pixel type), z-normalise (torch's float32 mean and unbiased std
   over torchio's x, y, z order), rescale min..max to 0..1;
5. 64 x 64 x 16 windows at a stride of 32 x 32 x 8, each window's sigmoid averaged where they
   overlap, then ``> 0.5``. ``edge_windows='as_published'`` keeps the published loops
   (``range(0, n - patch, stride)``: the last 32 x/y columns and 2 z slices of the box are never
   predicted) and skips windows without heart; ``'predict'`` adds a window flush with each far
   edge and predicts every window, so that every voxel of the box is predicted;
6. back onto the CT grid as torchio inverts the crop (the box pasted on the resampled grid, whose
   origin torchio moves there and back by whole voxels) and resamples by nearest neighbour;
7. optionally "mapped": every per-slice 8-connected >= 130 HU region that touches the prediction.

Arrays here are ``[z, y, x]``; the network sees its windows as ``[x, y, z]``, the order in which
torchio hands it the NIfTI volumes of MHub's converter (plastimatch: columns, rows, slices).
CPU and GPU run the same function (:func:`predict_windows`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

#: Target voxel size (z, y, x) in mm: 0.7 x 0.7 x 2.5 (x, y, z) as published.
SPACING_ZYX: tuple[float, float, float] = (2.5, 0.7, 0.7)
#: Box cut around the heart, voxels (z, y, x): 256 x 256 x 58 (x, y, z).
BOX_ZYX: tuple[int, int, int] = (58, 256, 256)
#: Network window and stride, voxels (z, y, x).
PATCH_ZYX: tuple[int, int, int] = (16, 64, 64)
STRIDE_ZYX: tuple[int, int, int] = (8, 32, 32)
THRESHOLD = 0.5
CLIP_HU: tuple[float, float] = (-135.0, 500.0)
MAP_HU = 130.0
EDGE_WINDOWS = ("predict", "as_published")
#: Pixel types a CT is resampled in: what its NIfTI stores (MHub's converter keeps integer HU as int16).
PIXEL_TYPES = ("int16", "float32")
#: Flips between SimpleITK's LPS and the RAS of torchio's affines.
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """A grid as SimpleITK holds it: voxel size and origin (x, y, z; LPS mm) and direction (9 numbers)."""

    spacing_xyz: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Crop:
    """Where the network's box lies on the resampled grid, and how it was placed."""

    start: tuple[int, int, int]
    """First voxel of the box on the resampled grid (z, y, x); negative: padded."""
    grid_shape: tuple[int, int, int]
    """Shape of the whole resampled grid (``ceil(n * s / t)``)."""
    spacing_zyx: tuple[float, float, float]
    """The CT's voxel size as its NIfTI holds it (float32)."""
    centre: str
    """``heart region`` or ``volume centre`` (the published fallback without a heart)."""
    pixel_type: str = "float32"
    """Pixel type the CT was resampled in."""
    size: tuple[int, int, int] = BOX_ZYX
    target_zyx: tuple[float, float, float] = SPACING_ZYX

    def as_dict(self) -> dict[str, Any]:
        return {"start_zyx": list(self.start), "size_zyx": list(self.size), "spacing_zyx_mm": list(self.target_zyx),
                "resampled_shape_zyx": list(self.grid_shape), "centred_on": self.centre,
                "pixel_type": self.pixel_type}


@dataclass
class Prepared:
    """The network's input and what is needed to bring its answer back onto the CT grid."""

    image: np.ndarray
    """The normalised box, float32 ``[z, y, x]``."""
    heart: np.ndarray | None
    """The resampled heart on the box (bool), None without a heart."""
    crop: Crop
    grid: Geometry
    """The resampled grid (the published ``tio.Resample`` output)."""
    ct: Geometry
    """The CT grid as the published pipeline reads it from the NIfTI."""
    ct_shape: tuple[int, int, int]


@dataclass
class Prediction:
    """The calcium mask on the CT grid and what the report needs to know about it."""

    mask: np.ndarray
    """uint8 0/1 on the CT grid."""
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- grids (SimpleITK)


def nifti_geometry(spacing_zyx: Sequence[float], origin_lps: Sequence[float],
                   direction: Sequence[float] = Geometry.direction) -> Geometry:
    """The grid as the published pipeline reads it: a NIfTI file holds spacing, origin and direction
    in float32, and torchio takes them through its RAS affine and back (:func:`from_ras_affine`)."""
    def f32(values: Sequence[float]) -> tuple[float, ...]:
        return tuple(float(np.float32(v)) for v in values)

    return from_ras_affine(ras_affine(Geometry(f32(tuple(spacing_zyx)[::-1]), f32(origin_lps),  # type: ignore[arg-type]
                                               f32(direction))))


def ras_affine(geometry: Geometry) -> np.ndarray:
    """torchio's 4 x 4 RAS affine of a SimpleITK grid (columns: direction times spacing)."""
    rotation = np.dot(_FLIP_XY, np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3))
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(geometry.spacing_xyz, dtype=np.float64)
    affine[:3, 3] = np.dot(_FLIP_XY, np.asarray(geometry.origin_lps, dtype=np.float64))
    return affine


def from_ras_affine(affine: np.ndarray) -> Geometry:
    """The SimpleITK grid torchio makes of an affine: spacing = column norms, direction = columns / spacing."""
    zoom = affine[:3, :3]
    spacing = np.sqrt(np.sum(zoom * zoom, axis=0))
    direction = np.dot(_FLIP_XY, zoom / spacing)
    origin = np.dot(_FLIP_XY, affine[:3, 3])
    return Geometry(tuple(float(v) for v in spacing), tuple(float(v) for v in origin),  # type: ignore[arg-type]
                    tuple(float(v) for v in direction.ravel()))


def as_image(array: np.ndarray, geometry: Geometry) -> Any:
    """A ``[z, y, x]`` array on ``geometry`` as a SimpleITK image of the array's pixel type."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing_xyz)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(geometry.direction)
    return image


def resampled_grid(shape_zyx: Sequence[int], geometry: Geometry,
                   target_zyx: Sequence[float] = SPACING_ZYX) -> tuple[tuple[int, int, int], Geometry]:
    """``tio.Resample(spacing)``'s grid: ``ceil(n * s / t)`` voxels (singleton axes stay 1), the first
    voxel's centre at continuous index ``0.5 * (t / s - 1)`` of the source, same direction."""
    import SimpleITK as sitk

    old_spacing = np.array(geometry.spacing_xyz, dtype=np.float64)
    new_spacing = np.array(tuple(target_zyx)[::-1], dtype=np.float64)
    old_size = np.array(tuple(shape_zyx)[::-1])
    size = np.ceil(old_size * old_spacing / new_spacing).astype(np.uint16)
    size[old_size == 1] = 1
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)  # geometry only: where is the new first voxel?
    probe.SetSpacing(geometry.spacing_xyz)
    probe.SetOrigin(geometry.origin_lps)
    probe.SetDirection(geometry.direction)
    origin = probe.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in 0.5 * (new_spacing / old_spacing - 1)))
    shape = tuple(int(v) for v in size[::-1])
    return shape, Geometry(tuple(float(v) for v in new_spacing), tuple(origin), geometry.direction)  # type: ignore[arg-type, return-value]


def resample(image: Any, shape_zyx: Sequence[int], geometry: Geometry, nearest: bool = False) -> Any:
    """``image`` on the grid ``shape_zyx`` / ``geometry``, linear or nearest neighbour, 0 outside, in its pixel type."""
    import SimpleITK as sitk

    resampler = sitk.ResampleImageFilter()
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetSize([int(v) for v in tuple(shape_zyx)[::-1]])
    resampler.SetOutputSpacing(geometry.spacing_xyz)
    resampler.SetOutputOrigin(geometry.origin_lps)
    resampler.SetOutputDirection(geometry.direction)
    return resampler.Execute(image)


# ----------------------------------------------------------------------------- the box


def box_start(first: int, stop: int, size: int) -> int:
    """``CropOrPad(mask_name=...)`` on one axis: the box start for a mask spanning ``first..stop - 1``.

    The centre is ``(first + stop) / 2``; when the box's parity and the centre's do not match, the
    centre moves down half a voxel, so the start is always a whole ``centre - size / 2``.
    """
    centre = (first + stop) / 2.0
    if (size % 2 == 0) != (centre % 1 == 0):
        centre -= 0.5
    return int(centre - size / 2.0)


def centre_start(n: int, size: int) -> int:
    """Box start when there is no heart: torchio crops / pads ``ceil(d / 2)`` at the start."""
    return int(math.ceil((n - size) / 2.0)) if n >= size else -int(math.ceil((size - n) / 2.0))


def mask_box_start(mask: np.ndarray, size: Sequence[int] = BOX_ZYX) -> tuple[int, int, int] | None:
    """The box around ``mask``'s bounding box by torchio's rule, or None for an empty mask."""
    starts = []
    for axis in range(3):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        starts.append(box_start(int(present[0]), int(present[-1]) + 1, size[axis]))
    return tuple(starts)  # type: ignore[return-value]


def cut(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The box of ``size`` at ``start`` (may leave the array: 0 there), in the array's type."""
    out = np.zeros(tuple(size), dtype=array.dtype)
    source, target = [], []
    for s, b, n in zip(start, size, array.shape):
        lo, hi = max(s, 0), min(s + b, n)
        source.append(slice(lo, max(lo, hi)))
        target.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out[tuple(target)] = array[tuple(source)]
    return out


def paste(box: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The box put back on a grid of ``shape`` at ``start`` (what falls outside is dropped), 0 elsewhere."""
    return cut(box, [-s for s in start], shape)


def uncropped_grid(grid: Geometry, start_zyx: Sequence[int]) -> Geometry:
    """The grid torchio gives the prediction after inverting its crop: the origin moved by the pad
    and the crop (forward) and back again (inverse), each a float step of whole voxels, as torchio's
    ``Pad``/``Crop`` do to the affine; the steps need not cancel to the last bit."""
    affine = ras_affine(grid)
    start = np.asarray(tuple(start_zyx)[::-1])
    pad, crop = np.maximum(-start, 0), np.maximum(start, 0)
    for index in (-pad, crop, -crop, pad):
        affine[:3, 3] = np.dot(index.reshape(1, 3), affine[:3, :3].T)[0] + affine[:3, 3]
    return from_ras_affine(affine)


def stored_pixels(hu: np.ndarray, pixel_type: str) -> np.ndarray:
    """``hu`` in the pixel type a NIfTI would store: int16 rounds and clips as the converter does."""
    if pixel_type not in PIXEL_TYPES:
        raise ValueError(f"pixel_type must be one of {PIXEL_TYPES}, got {pixel_type!r}")
    if pixel_type == "float32":
        return np.asarray(hu, dtype=np.float32)
    if hu.dtype == np.int16:
        return hu
    info = np.iinfo(np.int16)
    return np.clip(np.rint(hu), info.min, info.max).astype(np.int16)


def prepare(hu: np.ndarray, ct: Geometry, heart: np.ndarray | None = None, pixel_type: str = "float32") -> Prepared:
    """Steps 1-4 for a CT (``[z, y, x]`` HU on ``ct``, see :func:`nifti_geometry`) and its heart mask."""
    import SimpleITK as sitk

    shape, grid = resampled_grid(hu.shape, ct)
    resampled = resample(as_image(stored_pixels(hu, pixel_type), ct), shape, grid)
    start = None
    heart_grid = None
    if heart is not None:
        heart_grid = sitk.GetArrayFromImage(resample(as_image(np.asarray(heart, dtype=np.uint8), ct), shape, grid,
                                                     nearest=True)) > 0
        start = mask_box_start(heart_grid)
    how = "heart region" if start is not None else "volume centre"
    if start is None:
        start = tuple(centre_start(n, b) for n, b in zip(shape, BOX_ZYX))
    crop = Crop(start, shape, tuple(ct.spacing_xyz[::-1]), how, pixel_type)  # type: ignore[arg-type]
    image = normalise(cut(sitk.GetArrayViewFromImage(resampled), start, BOX_ZYX))
    heart_box = cut(heart_grid, start, BOX_ZYX) if heart_grid is not None else None
    return Prepared(image, heart_box, crop, grid, ct, tuple(int(n) for n in hu.shape))  # type: ignore[arg-type]


def normalise(box: np.ndarray) -> np.ndarray:
    """Clamp to [-135, 500] HU in the box's pixel type, z-normalise, rescale min..max to 0..1 (float32).

    As torchio does it: the mean and unbiased std are torch's float32 reductions over the box in
    torchio's ``[x, y, z]`` order (the order changes their last bits), the rescale subtracts the
    float32 minimum and divides by the float32 range. The rescale makes the z-normalisation a
    no-op up to float rounding; it is kept for fidelity. A box of one value cannot be normalised
    (torchio raises): a ValueError says so.
    """
    import torch

    clipped = np.clip(box, int(CLIP_HU[0]), int(CLIP_HU[1])) if box.dtype.kind in "iu" else np.clip(box, *CLIP_HU)
    xyz = torch.from_numpy(np.ascontiguousarray(clipped.transpose(2, 1, 0), dtype=np.float32))
    values = xyz.reshape(-1)
    mean, std = values.mean(), values.std()
    if not float(std) > 0.0:
        raise ValueError("the heart box has one intensity only (all padding or all clipped): nothing to segment")
    xyz -= mean
    xyz /= std
    array = xyz.numpy()
    low, high = array.min(), array.max()
    array -= low
    array /= high - low
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def window_starts(n: int, patch: int, stride: int, edge_windows: str = "predict") -> list[int]:
    """Window starts along one axis: the published ``range(0, n - patch, stride)``, or (``predict``)
    every stride up to and including ``n - patch``, so that the far edge is covered."""
    if edge_windows == "as_published":
        return list(range(0, n - patch, stride))
    starts = list(range(0, n - patch + 1, stride))
    if starts and starts[-1] != n - patch:
        starts.append(n - patch)
    return starts


def window_corners(edge_windows: str = "predict", heart: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """Window corners (z, y, x) over the box, in the published loop order (x, then y, then z inner).

    ``as_published`` with a heart mask on the box skips windows without heart, as published.
    """
    if edge_windows not in EDGE_WINDOWS:
        raise ValueError(f"edge_windows must be one of {EDGE_WINDOWS}, got {edge_windows!r}")
    zs, ys, xs = (window_starts(n, p, s, edge_windows) for n, p, s in zip(BOX_ZYX, PATCH_ZYX, STRIDE_ZYX))
    corners = [(z, y, x) for x in xs for y in ys for z in zs]
    if edge_windows == "as_published" and heart is not None:
        pz, py, px = PATCH_ZYX
        corners = [c for c in corners if heart[c[0]:c[0] + pz, c[1]:c[1] + py, c[2]:c[2] + px].any()]
    return corners


def predict_windows(network: Any, image: np.ndarray, corners: Sequence[tuple[int, int, int]], device: Any,
                    batch_size: int = 4) -> np.ndarray:
    """Mean sigmoid of the windows covering each voxel of ``image`` (``[z, y, x]``); 0 where none does.

    The one prediction function for CPU and GPU: windows are stacked in batches, moved to
    ``device``, run as ``[x, y, z]`` (the published layout) and their probabilities summed on the CPU.
    """
    import torch

    pz, py, px = PATCH_ZYX
    total = np.zeros(image.shape, np.float64)
    count = np.zeros(image.shape, np.int32)
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    with torch.inference_mode():
        for first in range(0, len(corners), max(1, batch_size)):
            batch = corners[first:first + max(1, batch_size)]
            windows = torch.stack([source[z:z + pz, y:y + py, x:x + px].permute(2, 1, 0) for z, y, x in batch])
            logits = network(windows[:, None].to(device))
            probabilities = torch.sigmoid(logits)[:, 0].permute(0, 3, 2, 1).float().cpu().numpy()
            for (z, y, x), probability in zip(batch, probabilities):
                total[z:z + pz, y:y + py, x:x + px] += probability
                count[z:z + pz, y:y + py, x:x + px] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def to_ct_grid(box_mask: np.ndarray, prepared: Prepared) -> np.ndarray:
    """The box's 0/1 mask on the CT grid: pasted on the resampled grid (0 elsewhere) and resampled
    onto the CT by nearest neighbour, on the grids torchio's inverse transforms give them."""
    import SimpleITK as sitk

    crop = prepared.crop
    full = paste(np.asarray(box_mask, dtype=np.uint8), crop.start, crop.grid_shape)
    image = as_image(full, uncropped_grid(prepared.grid, crop.start))
    return sitk.GetArrayFromImage(resample(image, prepared.ct_shape, prepared.ct, nearest=True)).astype(np.uint8)


def map_to_calcium(hu: np.ndarray, mask: np.ndarray, threshold: float = MAP_HU) -> np.ndarray:
    """DeepCAC2's "mapped" mask: every >= 130 HU region (8-connected within its axial slice) that
    touches the prediction, whole; nothing else. Only slices with a prediction are labelled."""
    out = np.zeros(mask.shape, np.uint8)
    slices = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
    if slices.size == 0:
        return out
    z0, z1 = int(slices[0]), int(slices[-1]) + 1
    bright = hu[z0:z1] >= threshold
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within a slice, never across slices
    regions, _ = ndimage.label(bright, structure=structure)
    touched = np.unique(regions[(mask[z0:z1] > 0) & bright])
    touched = touched[touched > 0]
    out[z0:z1] = np.isin(regions, touched)
    return out


class DeepCac2Model:
    """DeepCAC2's network with verified weights on a device, ready for many scans."""

    def __init__(self, weights: str | Path = "", device: str = "auto", features: Sequence[int] | None = None,
                 sha256: str = "", batch_size: int = 4, threads: int = 0) -> None:
        import torch

        from .deepcac2_net import PUBLISHED_FEATURES, load_network
        from .deepcac2_weights import resolve_weights
        from .runner import pick_device

        self.path = resolve_weights(str(weights))
        self.features = tuple(int(f) for f in (features or PUBLISHED_FEATURES))
        network, self.sha256 = load_network(self.path, self.features, sha256)
        self.device = pick_device(device)
        if threads > 0:
            torch.set_num_threads(threads)
        self.network = network.to(self.device)
        self.batch_size = int(batch_size)
        self.published = self.features == tuple(PUBLISHED_FEATURES)

    def segment(self, hu: np.ndarray, spacing_zyx: Sequence[float], origin_lps: Sequence[float] = (0.0, 0.0, 0.0),
                direction: Sequence[float] = Geometry.direction, heart: np.ndarray | None = None,
                edge_windows: str = "predict", mapped: bool = False, pixel_type: str = "float32") -> Prediction:
        """Calcium mask (uint8 0/1) on the CT grid of ``hu``.

        ``heart``: a heart mask on the CT grid; the box is centred on it (else on the volume) and
        ``as_published`` predicts only the windows that hold some of it (none without a heart, as
        published with an empty heart mask). ``pixel_type``: int16 or float32, the CT's pixel type
        while it is resampled. ``mapped``: return the mapped mask instead of the network's.
        """
        start = time.perf_counter()
        if edge_windows not in EDGE_WINDOWS:
            raise ValueError(f"edge_windows must be one of {EDGE_WINDOWS}, got {edge_windows!r}")
        prepared = prepare(hu, nifti_geometry(spacing_zyx, origin_lps, direction), heart, pixel_type)
        heart_box = None
        if edge_windows == "as_published":
            heart_box = prepared.heart if prepared.heart is not None else np.zeros(BOX_ZYX, bool)
        corners = window_corners(edge_windows, heart_box)
        probability = predict_windows(self.network, prepared.image, corners, self.device, self.batch_size)
        mask = to_ct_grid(probability > THRESHOLD, prepared)
        if mapped:
            mask = map_to_calcium(hu, mask)
        extra = {
            "model": "deepcac2", "weights": str(self.path), "sha256": self.sha256,
            "network": "published 3D U-Net" if self.published else f"3D U-Net, features {list(self.features)} "
                                                                   "(not the published size)",
            "device": str(self.device), "edge_windows": edge_windows, "windows": len(corners),
            "mapped": bool(mapped), "crop": prepared.crop.as_dict(), "threshold": THRESHOLD,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return Prediction(mask, extra)
