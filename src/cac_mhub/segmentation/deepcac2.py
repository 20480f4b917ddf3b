"""DeepCAC2's calcium segmentation on a CT grid, step by step as published (MHub ``models/deepcac2``).

1. resample to 0.7 x 0.7 x 2.5 mm (linear; the grid of ``tio.Resample``: corner-aligned,
   ``ceil(n * s / t)`` voxels, 0 outside the scan);
2. crop or pad (with 0) a 256 x 256 x 58 box (x, y, z) around the heart, by torchio's
   ``CropOrPad(mask_name='heart')`` rule: the box starts at ``floor(c - size / 2)`` where ``c`` is
   the centre of the heart's bounding box in voxel-edge units; without a heart, the volume centre;
3. clip to [-135, 500] HU, z-normalise, rescale to [0, 1];
4. 64 x 64 x 16 windows at a stride of 32 x 32 x 8, each window's sigmoid averaged where they
   overlap, then ``> 0.5``. ``edge_windows='as_published'`` keeps the published loops
   (``range(0, n - patch, stride)``: the last 32 x/y columns and 2 z slices of the box are never
   predicted) and skips windows without heart; ``'predict'`` adds a window flush with each far
   edge and predicts every window, so that every voxel of the box is predicted;
5. nearest neighbour back onto the CT grid (SimpleITK's rounding), 0 outside the box;
6. optionally "mapped": every per-slice 8-connected >= 130 HU region that touches the prediction.

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


@dataclass(frozen=True)
class Crop:
    """Where the network's box lies on the resampled grid, and how it was placed."""

    start: tuple[int, int, int]
    """First voxel of the box on the resampled grid (z, y, x); negative: padded."""
    grid_shape: tuple[int, int, int]
    """Shape of the whole resampled grid (``ceil(n * s / t)``)."""
    spacing_zyx: tuple[float, float, float]
    """The CT's voxel size."""
    centre: str
    """``heart region`` or ``volume centre`` (the published fallback without a heart)."""
    size: tuple[int, int, int] = BOX_ZYX
    target_zyx: tuple[float, float, float] = SPACING_ZYX

    def as_dict(self) -> dict[str, Any]:
        return {"start_zyx": list(self.start), "size_zyx": list(self.size), "spacing_zyx_mm": list(self.target_zyx),
                "resampled_shape_zyx": list(self.grid_shape), "centred_on": self.centre}


@dataclass
class Prediction:
    """The calcium mask on the CT grid and what the report needs to know about it."""

    mask: np.ndarray
    """uint8 0/1 on the CT grid."""
    extra: dict[str, Any] = field(default_factory=dict)


def resampled_shape(shape: Sequence[int], spacing_zyx: Sequence[float],
                    target_zyx: Sequence[float] = SPACING_ZYX) -> tuple[int, int, int]:
    """torchio's ``Resample`` grid: ``ceil(n * s / t)`` voxels per axis (singleton axes stay 1)."""
    return tuple(1 if n == 1 else int(math.ceil(n * s / t))  # type: ignore[return-value]
                 for n, s, t in zip(shape, spacing_zyx, target_zyx))


def heart_start(centre_index: float, source_spacing: float, target_spacing: float, size: int) -> int:
    """Box start on the resampled axis for a heart centred at CT index ``centre_index``.

    torchio centres on the heart's bounding box, ``(first + last + 1) / 2`` in voxel-edge units,
    and shifts half-integer centres down: ``floor(c - size / 2)`` in every case.
    """
    edge_centre = (centre_index + 0.5) * (source_spacing / target_spacing)
    return int(math.floor(edge_centre - size / 2.0 + 1e-6))  # a half-integer centre must not fall by rounding


def centre_start(n: int, size: int) -> int:
    """Box start when there is no heart: torchio crops / pads ``ceil(d / 2)`` at the start."""
    return int(math.ceil((n - size) / 2.0)) if n >= size else -int(math.ceil((size - n) / 2.0))


def plan_crop(shape: Sequence[int], spacing_zyx: Sequence[float],
              centre_index: Sequence[float] | None = None) -> Crop:
    """The box for a CT of ``shape``: around ``centre_index`` (CT index z, y, x) or the volume centre."""
    grid = resampled_shape(shape, spacing_zyx)
    if centre_index is not None:
        start = tuple(heart_start(c, s, t, b) for c, s, t, b in zip(centre_index, spacing_zyx, SPACING_ZYX, BOX_ZYX))
        how = "heart region"
    else:
        start = tuple(centre_start(n, b) for n, b in zip(grid, BOX_ZYX))
        how = "volume centre"
    return Crop(start, grid, tuple(float(s) for s in spacing_zyx), how)  # type: ignore[arg-type]


def _linear_axis(count: int, start: int, n_source: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of linear interpolation along one axis, SimpleITK's way.

    Output voxel ``j`` (of the resampled grid) sits at source index ``(j + 0.5) * scale - 0.5``;
    within half a voxel of the edge the edge value is used, further out the value is 0.
    """
    position = (np.arange(start, start + count) + 0.5) * scale - 0.5
    inside = (position >= -0.5) & (position < n_source - 0.5)
    low = np.floor(position)
    weight = np.where(inside, position - low, 0.0)
    i0 = np.clip(low, 0, n_source - 1).astype(np.intp)
    i1 = np.clip(low + 1, 0, n_source - 1).astype(np.intp)
    return i0, i1, np.stack([np.where(inside, 1.0 - weight, 0.0), weight]).astype(np.float32)


def resample_box(hu: np.ndarray, crop: Crop) -> np.ndarray:
    """The box (float32 HU, ``[z, y, x]``) cut from the linearly resampled CT; 0 where padded.

    Separable: one axis at a time, z first, so only the slices the box needs are ever touched.
    """
    out = np.asarray(hu)
    for axis in range(3):
        i0, i1, w = _linear_axis(crop.size[axis], crop.start[axis], hu.shape[axis],
                                 crop.target_zyx[axis] / crop.spacing_zyx[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        a = np.take(out, i0, axis=axis).astype(np.float32, copy=False)
        b = np.take(out, i1, axis=axis).astype(np.float32, copy=False)
        out = a * w[0].reshape(shape) + b * w[1].reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def normalise(box: np.ndarray) -> np.ndarray:
    """Clip to [-135, 500] HU, z-normalise (unbiased std, as torch), rescale min..max to 0..1.

    The rescale makes the z-normalisation a no-op up to float rounding; it is kept for fidelity.
    A box of one value cannot be normalised (torchio raises): a ValueError says so.
    """
    clipped = np.clip(box, *CLIP_HU).astype(np.float32)
    std = float(clipped.std(dtype=np.float64, ddof=1)) if clipped.size > 1 else 0.0
    if std == 0.0:
        raise ValueError("the heart box has one intensity only (all padding or all clipped): nothing to segment")
    z = ((clipped - np.float32(clipped.mean(dtype=np.float64))) / np.float32(std)).astype(np.float32)
    low, high = float(z.min()), float(z.max())
    return ((z - np.float32(low)) / np.float32(high - low)).astype(np.float32)


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


def nearest_index(count: int, scale: float, offset: int = 0) -> np.ndarray:
    """Nearest source index of output voxels ``0..count-1``: ``floor((j + offset + 0.5) * scale)``
    (SimpleITK rounds the continuous index ``(j + 0.5) * scale - 0.5`` half up)."""
    return np.floor((np.arange(count) + offset + 0.5) * scale).astype(np.intp)


def to_ct_grid(box_mask: np.ndarray, crop: Crop, shape: Sequence[int]) -> np.ndarray:
    """The box's 0/1 mask on the CT grid by nearest neighbour; 0 outside the box."""
    index, valid = [], []
    for n, s, t, start, size in zip(shape, crop.spacing_zyx, crop.target_zyx, crop.start, crop.size):
        k = nearest_index(n, s / t) - start
        valid.append((k >= 0) & (k < size))
        index.append(np.clip(k, 0, size - 1))
    out = box_mask[np.ix_(*index)].astype(np.uint8)
    out &= (valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]).astype(np.uint8)
    return out


def mask_on_box(mask: np.ndarray, index_maps: Sequence[np.ndarray], crop: Crop) -> np.ndarray:
    """A mask given on any grid (``index_maps``: CT index -> its index, per axis) sampled onto the box
    by nearest neighbour, as torchio resamples the heart label map; False outside the CT."""
    index, valid = [], []
    for n_ct, s, t, start, size, to_grid in zip((len(m) for m in index_maps), crop.spacing_zyx, crop.target_zyx,
                                                crop.start, crop.size, index_maps):
        k = nearest_index(size, t / s, start)
        valid.append((k >= 0) & (k < n_ct))
        index.append(to_grid[np.clip(k, 0, n_ct - 1)])
    out = mask[np.ix_(*index)].astype(bool)
    return out & valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]


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

    def segment(self, hu: np.ndarray, spacing_zyx: Sequence[float], centre_index: Sequence[float] | None = None,
                heart: tuple[np.ndarray, Sequence[np.ndarray]] | None = None, edge_windows: str = "predict",
                mapped: bool = False) -> Prediction:
        """Calcium mask (uint8 0/1) on the CT grid of ``hu``.

        ``centre_index``: the heart's centre (CT index z, y, x), else the volume centre is used.
        ``heart``: a heart mask and its index maps from the CT grid (for ``as_published``'s window
        skipping). ``mapped``: return the mapped mask instead of the network's.
        """
        start = time.perf_counter()
        crop = plan_crop(hu.shape, spacing_zyx, centre_index)
        image = normalise(resample_box(hu, crop))
        heart_box = mask_on_box(heart[0], heart[1], crop) \
            if heart is not None and edge_windows == "as_published" else None
        corners = window_corners(edge_windows, heart_box)
        probability = predict_windows(self.network, image, corners, self.device, self.batch_size)
        mask = to_ct_grid(probability > THRESHOLD, crop, hu.shape)
        if mapped:
            mask = map_to_calcium(hu, mask)
        extra = {
            "model": "deepcac2", "weights": str(self.path), "sha256": self.sha256,
            "network": "published 3D U-Net" if self.published else f"3D U-Net, features {list(self.features)} "
                                                                   "(not the published size)",
            "device": str(self.device), "edge_windows": edge_windows, "windows": len(corners),
            "mapped": bool(mapped), "crop": crop.as_dict(), "threshold": THRESHOLD,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return Prediction(mask, extra)
