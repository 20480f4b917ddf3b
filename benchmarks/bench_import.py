"""Benchmark: DicomImporter scan + NiftiConverter assembly of a 512x512x300 CT series, against
SimpleITK's ImageSeriesReader alone on the same files. Prints both times and the ratio.

    .venv/bin/python benchmarks/bench_import.py [--slices 300] [--folder DIR] [--repeat 3]

Without --folder, a synthetic series is written once to a temporary folder. Not a test: figures only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cac_mhub.dicom.scan import SelectionRules, scan, select
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
from cac_mhub.dicom.volume import assemble


def ours(folder: Path) -> np.ndarray:
    result = scan(folder)
    series = select(result.series, SelectionRules(min_slices=1))[0]
    volume, _ = assemble(series)
    return volume.hu


def simpleitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def best_of(fn, folder: Path, repeat: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(folder)
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / "series"
            rng = np.random.default_rng(0)
            hu = rng.normal(0, 20, size=(args.slices, 512, 512)).astype(np.float32)
            write_ct_series(hu, folder, (2.5, 0.7, 0.7), spec=CtSeriesSpec())
        ours_s, a = best_of(ours, folder, args.repeat)
        sitk_s, b = best_of(simpleitk, folder, args.repeat)
        same = np.array_equal(a.astype(np.float32), b.astype(np.float32))
        print(f"series: {folder} {a.shape}")
        print(f"cac-mhub import+convert: {ours_s:.2f} s (best of {args.repeat})")
        print(f"SimpleITK ImageSeriesReader: {sitk_s:.2f} s (best of {args.repeat})")
        print(f"ratio ours/SimpleITK: {ours_s / sitk_s:.2f}; identical HU arrays: {same}")


if __name__ == "__main__":
    main()
