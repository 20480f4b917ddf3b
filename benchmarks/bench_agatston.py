"""Time the vectorised Agatston scorer against a plain per-lesion loop on the same input.

Input: a 512 x 512 x 300 int16 CT-like volume with N calcified lesions (default 500: random
blobs of 130..1200 HU, 1..60 pixels, each inside a mask 1 pixel wider than the calcium, as a
segmentation model would draw it), spread over all slices. Two layouts: lesions inside a
heart-sized 200 x 200 pixel box (realistic), and anywhere in the 512 x 512 plane.

Run:  .venv/bin/python benchmarks/bench_agatston.py [--repeat 7] [--lesions 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cac_mhub.scoring.agatston import score  # noqa: E402
from cac_mhub.scoring.naive import naive_agatston  # noqa: E402


def make_input(shape: tuple[int, int, int], lesions: int, box: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    tile = rng.normal(40, 15, size=(ny, nx)).astype(np.int16)  # soft tissue with noise
    hu = np.broadcast_to(tile, shape).copy()
    labels = np.zeros(shape, dtype=np.uint8)
    y0, x0 = (ny - box) // 2, (nx - box) // 2
    for _ in range(lesions):  # building the input, not scoring it
        z = int(rng.integers(0, nz))
        cy, cx = int(rng.integers(y0 + 6, y0 + box - 6)), int(rng.integers(x0 + 6, x0 + box - 6))
        radius = float(rng.uniform(0.5, 4.5))
        yy, xx = np.mgrid[-5:6, -5:6]
        blob = yy**2 + xx**2 <= radius**2
        peak = float(rng.uniform(130, 1200))
        window = (z, slice(cy - 5, cy + 6), slice(cx - 5, cx + 6))
        hu[window] = np.where(blob, np.maximum(hu[window], (peak * rng.uniform(0.6, 1.0, blob.shape))), hu[window])
        ring = ndimage.binary_dilation(blob)
        labels[window] = np.where(ring, int(rng.integers(1, 5)), labels[window])
    return hu, labels


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--naive-repeat", type=int, default=2)
    parser.add_argument("--lesions", type=int, default=500)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    shape = (args.slices, 512, 512)
    spacing = (0.625, 0.7, 0.7)
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}
    print(f"input {shape[::-1]} (x, y, z) int16, {args.lesions} lesions, spacing zyx {spacing} mm")
    for layout, box in (("heart box 200x200", 200), ("whole plane", 500)):
        hu, labels = make_input(shape, args.lesions, box, seed=1)
        fast = timed(lambda: score(hu, spacing, labels, names), args.repeat)
        result = score(hu, spacing, labels, names)
        slow = timed(lambda: naive_agatston(hu, spacing, labels), args.naive_repeat)
        reference = naive_agatston(hu, spacing, labels)
        same = abs(result.agatston - reference[0]) <= 1e-9 * max(1.0, reference[0]) and result.lesion_count == reference[2]
        to_dict = timed(result.to_dict, 3)
        fast_ms, slow_ms = statistics.median(fast) * 1e3, statistics.median(slow) * 1e3
        print(
            f"[{layout}] lesions scored {result.lesion_count}, Agatston {result.agatston:.1f}; "
            f"vectorised median {fast_ms:.1f} ms (min {min(fast) * 1e3:.1f}, n={args.repeat}); "
            f"per-lesion loop median {slow_ms:.0f} ms (n={args.naive_repeat}); "
            f"speed-up x{slow_ms / fast_ms:.1f}; same result: {same}; "
            f"to_dict {statistics.median(to_dict) * 1e3:.1f} ms"
        )
    print("target: <= 50 ms for the vectorised scorer")


if __name__ == "__main__":
    main()
