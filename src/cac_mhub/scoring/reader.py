"""A reader's calcium scoring tool, for hand-made references: click a spot, get its 130 HU region.

Scoring workstations work slice by slice: the reader clicks each calcified spot and the tool
takes the connected voxels at or above the threshold in that slice (8-connected). Clicks are
where a reader put them, so the tool starts from the brightest voxel within a pixel or two of
each click. On a noisy scan (a sharp kernel) the region is held to ``radius_mm`` around the
click, as a reader would not accept speckle running off into the myocardium.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage


def reader_mask(hu: np.ndarray, spacing_zyx: Sequence[float], clicks: Iterable[Sequence[int]],
                threshold_hu: float = 130.0, radius_mm: float = 4.0, snap_px: int = 2) -> np.ndarray:
    """Boolean mask of the lesions clicked (each click: slice, row, column)."""
    mask = np.zeros(hu.shape, bool)
    dy, dx = float(spacing_zyx[1]), float(spacing_zyx[2])
    for z, y, x in clicks:
        plane = hu[z]
        y0, y1 = max(0, y - snap_px), min(plane.shape[0], y + snap_px + 1)
        x0, x1 = max(0, x - snap_px), min(plane.shape[1], x + snap_px + 1)
        window = plane[y0:y1, x0:x1]
        if window.max() < threshold_hu:
            continue
        sy, sx = np.unravel_index(int(np.argmax(window)), window.shape)
        seed = (y0 + sy, x0 + sx)
        yy, xx = np.ogrid[: plane.shape[0], : plane.shape[1]]
        near = ((yy - seed[0]) * dy) ** 2 + ((xx - seed[1]) * dx) ** 2 <= radius_mm ** 2
        blobs, _ = ndimage.label((plane >= threshold_hu) & near, structure=np.ones((3, 3), bool))
        mask[z] |= blobs == blobs[seed]
    return mask
