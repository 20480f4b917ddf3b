"""Benchmark: DicomImporter scan + NiftiConverter assembly of a 512x512x300 CT series, against
SimpleITK's ImageSeriesReader alone on the same files. Prints both times and the ratio, then the
scan rate (MB/s and files/s) over the series plus large junk files, as input folders often hold
(archives, videos, disk images): junk is recognised from its first bytes, never read whole.

    .venv/bin/python benchmarks/bench_import.py [--slices 300] [--folder DIR] [--repeat 3]
                                                [--junk-files 5] [--junk-mb 60]

Without --folder, a synthetic series is written once to a temporary folder; the junk files
(zero-filled) are made in a temporary folder beside links to the series' files. Not a test:
figures only.
"""

from __future__ import annotations

import argparse
import os
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


def scan_rate(folder: Path, repeat: int) -> tuple[float, int, int, int]:
    """(best scan time s, files, bytes, files ignored) of :func:`scan` over ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    best, ignored = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = scan(folder)
        best = min(best, time.perf_counter() - start)
        ignored = len(result.ignored)
    return best, len(files), size, ignored


def junk_folder(series: Path, target: Path, count: int, megabytes: int) -> Path:
    """``target`` with links to the series' files and ``count`` zero-filled junk files."""
    (target / "series").mkdir(parents=True)
    for path in sorted(series.iterdir()):
        if path.is_file():
            os.symlink(path.resolve(), target / "series" / path.name)
    for k in range(count):
        with open(target / f"junk{k:02d}.bin", "wb") as handle:
            handle.write(b"\x00" * (megabytes * 2**20))
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--junk-files", type=int, default=5, help="large junk files beside the series")
    parser.add_argument("--junk-mb", type=int, default=60, help="size of each junk file (MB)")
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
        junk = junk_folder(folder, Path(tmp) / "with_junk", args.junk_files, args.junk_mb)
        for label, where in (("series only", folder), (f"series + {args.junk_files} x {args.junk_mb} MB junk", junk)):
            seconds, files, size, ignored = scan_rate(where, args.repeat)
            print(f"scan rate, {label}: {files} files, {size / 2**20:.0f} MB in {seconds:.2f} s: "
                  f"{size / 2**20 / seconds:.0f} MB/s, {files / seconds:.0f} files/s ({ignored} ignored)")


if __name__ == "__main__":
    main()
