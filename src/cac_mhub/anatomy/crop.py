"""The box the calcium network segments: a fixed physical box around the heart.

It lives with the rest of "where is the heart" (:mod:`cac_mhub.anatomy`): the box is centred on
the heart region's centre (HeartLocator, :meth:`~cac_mhub.anatomy.analysis.Anatomy.region_centre`)
whenever there is one, and on this module's cheap lung-based estimate only as a fallback (a chain
without HeartLocator, or a heart region not found). The nnU-Net runner and the training recipe
both cut their crops here, so the network is trained on the crop it is run on.

Why the fallback is an image heuristic rather than a second network: on two CPU cores a
whole-chest network pass costs more than the calcium model itself. The heart is the large
soft-tissue mass between the two lungs, above the diaphragm; that is found in well under a second
on a coarse copy of the scan. The box is generous enough to hold the whole coronary tree when the
estimate is off by a couple of centimetres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

#: Physical size (z, y, x) in mm of the box cut around the heart centre.
DEFAULT_BOX_MM = (150.0, 170.0, 180.0)
_COARSE_MM = 4.0
#: The widest mediastinal slices sit at the heart base and great vessels; the heart's centre is
#: lower. Measured on the phantoms and on a real thorax CT: about 15 mm.
_Z_SHIFT_MM = -15.0


@dataclass(frozen=True)
class HeartBox:
    """Index box of the heart crop on the CT grid, and how it was found."""

    slices: tuple[slice, slice, slice]
    center_index: tuple[float, float, float]
    method: str

    def as_dict(self) -> dict[str, object]:
        return {"box_zyx": [[s.start, s.stop] for s in self.slices],
                "center_zyx": [round(c, 1) for c in self.center_index], "method": self.method}


def locate_heart(hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                 box_mm: tuple[float, float, float] = DEFAULT_BOX_MM,
                 centre_index: Sequence[float] | None = None) -> HeartBox:
    """Box of ``box_mm`` around the heart centre, clipped to the volume.

    ``centre_index`` (z, y, x) is a centre found elsewhere (the anatomy's heart region, method
    ``anatomy``). Without it the centre is estimated from the lungs; when no lungs are found,
    e.g. on a scan that is not a chest CT, the volume centre is used (method ``center``).
    """
    step = [max(1, int(round(_COARSE_MM / s))) for s in spacing_zyx]
    if centre_index is not None:
        centre_idx = tuple(float(c) for c in centre_index)
        return _box(centre_idx, hu.shape, spacing_zyx, box_mm, "anatomy")
    coarse = hu[:: step[0], :: step[1], :: step[2]]
    centre = _heart_centre_coarse(coarse)
    if centre is None:
        centre_idx = tuple((n - 1) / 2.0 for n in hu.shape)
        method = "center"
    else:
        centre_idx = tuple(c * s for c, s in zip(centre, step))
        centre_idx = (max(0.0, centre_idx[0] + _Z_SHIFT_MM / spacing_zyx[0]), centre_idx[1], centre_idx[2])
        method = "lungs"
    return _box(centre_idx, hu.shape, spacing_zyx, box_mm, method)


def _box(centre_idx: Sequence[float], shape: Sequence[int], spacing_zyx: Sequence[float],
         box_mm: Sequence[float], method: str) -> HeartBox:
    slices = []
    for c, n, mm, sp in zip(centre_idx, shape, box_mm, spacing_zyx):
        width = min(n, int(round(mm / sp)))
        start = int(round(c - width / 2.0))
        start = min(max(0, start), n - width)
        slices.append(slice(start, start + width))
    return HeartBox(tuple(slices), tuple(float(c) for c in centre_idx), method)  # type: ignore[arg-type]


def _heart_centre_coarse(coarse: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (z, y, x) in coarse voxels of the soft tissue lying between the lungs."""
    body = coarse > -500
    labels, n = ndimage.label(body)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1))
    body = labels == (int(np.argmax(sizes)) + 1)
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    lungs = (coarse < -400) & body
    lungs = ndimage.binary_opening(lungs, iterations=1)
    lung_area = lungs.sum(axis=(1, 2))
    if lung_area.max() < 20:
        return None
    # Between the lungs, row by row: from the first to the last lung voxel of each row.
    rows = lungs.any(axis=2)
    first = np.argmax(lungs, axis=2)
    last = lungs.shape[2] - 1 - np.argmax(lungs[:, :, ::-1], axis=2)
    cols = np.arange(lungs.shape[2])[None, None, :]
    between = rows[..., None] & (cols > first[..., None]) & (cols < last[..., None]) & ~lungs
    soft = between & (coarse > -200) & (coarse < 200) & body
    # Keep slices where the lungs are well developed (above the domes, below the apices).
    keep = lung_area >= 0.35 * lung_area.max()
    area = soft.sum(axis=(1, 2)) * keep
    if area.max() == 0:
        return None
    smooth = ndimage.uniform_filter1d(area.astype(float), size=max(3, int(60 / _COARSE_MM) | 1))
    zc = int(np.argmax(smooth))
    window = max(2, int(35 / _COARSE_MM))
    z0, z1 = max(0, zc - window), min(coarse.shape[0], zc + window + 1)
    block = soft[z0:z1]
    # The largest connected soft-tissue mass there is the heart (not the thin tissue strands).
    lab, n = ndimage.label(block)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(block, lab, index=np.arange(1, n + 1))
    heart = lab == (int(np.argmax(sizes)) + 1)
    _, y, x = ndimage.center_of_mass(heart)
    return float(zc), float(y), float(x)
