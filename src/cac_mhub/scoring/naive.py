"""A deliberately plain per-slice, per-lesion loop (the approach of published DeepCAC code).

Why it exists: it is an independent oracle for the tests (different connected-component code,
no sparse tricks) and the baseline of ``benchmarks/bench_agatston.py``. Do not use it to score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


def naive_agatston(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: np.ndarray,
    *,
    profile: str = "standard",
    threshold_hu: float = 130.0,
    min_area_mm2: float = 1.0,
) -> tuple[float, float, int]:
    """(Agatston, volume mm^3, lesion count) by looping over slices and lesions."""
    if profile == "deepcac2":
        return _naive_deepcac2(hu, spacing_zyx, labels)
    dz, dy, dx = (float(s) for s in spacing_zyx)
    total, volume, lesions = 0.0, 0.0, 0
    if profile == "deepcac":
        factor = round(dz * dy * dx / 3.0, 3)
    for z in range(hu.shape[0]):
        mask = labels[z] > 0
        if profile == "standard":
            mask = mask & (hu[z] >= threshold_hu)
        components, count = ndimage.label(mask, structure=_EIGHT)
        for number in range(1, count + 1):
            lesion = components == number
            pixels = int(lesion.sum())
            peak = float(hu[z][lesion].max())
            if profile == "standard":
                if pixels * dy * dx < min_area_mm2 * (1 - 1e-9):
                    continue
                weight = 1 if peak < 200 else 2 if peak < 300 else 3 if peak < 400 else 4
                total += pixels * dy * dx * weight * dz / 3.0
            else:
                if pixels <= 3:
                    continue
                weight = 0 if peak < 130 else 1 if peak < 200 else 2 if peak < 300 else 3 if peak < 400 else 4
                if weight == 0:
                    continue
                total += round(pixels * factor * weight, 3)
            volume += pixels * dz * dy * dx
            lesions += 1
    if profile == "deepcac":
        total = round(total, 3)
    return total, volume, lesions


def _naive_deepcac2(hu: np.ndarray, spacing_zyx: Sequence[float], labels: np.ndarray) -> tuple[float, float, int]:
    """DeepCAC2's loop, step by step: slices as ``[x, y]`` arrays, float32 (NIfTI) spacing,
    numpy scalar rounding per component, a running sum, an integer total."""
    sz, sy, sx = (float(np.float32(s)) for s in spacing_zyx)
    factor = round(sx * sy * sz / 3, 3)
    total, volume, lesions = 0, 0.0, 0
    for z in range(hu.shape[0]):
        mask = (labels[z] > 0).T.astype(np.float64)
        image = hu[z].T
        components, count = ndimage.label(mask, structure=_EIGHT)
        for number in range(1, count + 1):
            lesion = (components == number).astype(np.float64)
            pixels = np.sum(lesion)
            if pixels <= 3:
                continue
            peak = (image * lesion).max()
            weight = 1 if peak < 200 else 2 if peak < 300 else 3 if peak < 400 else 4
            total += round(pixels * factor * weight, 3)
            volume += float(pixels) * sz * sy * sx
            lesions += 1
    return float(round(total)), volume, lesions
