"""Cohort throughput and catalog speed: prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_cohort.py                     # 24 chest phantoms, 512 x 512, 100-300 slices
    .venv/bin/python benchmarks/bench_cohort.py --series 8 --size 256 --catalog-files 20000   # quicker
    .venv/bin/python benchmarks/bench_cohort.py --skip-runs        # the catalog only

1. The same synthetic cohort (thorax phantoms, default workflow) scored three ways, each into a
   fresh output folder: sequentially (``--workers 1``), with ``--workers N`` (the engine's own
   Dask LocalCluster) and on a separately started Dask LocalCluster (``--scheduler``). Prints
   series per hour, the ratio to sequential, and the peak memory (max RSS) of a worker process.
2. The streaming catalog on a tree of small header-only files (collection/patient/study/series,
   100 files a series): files per second, headers read, peak Python memory and RSS growth.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from cac_mhub.cli import main; sys.exit(main(sys.argv[1:]))"]
INCREMENTS = (2.5, 2.0, 1.25, 1.0)  # with a 250 mm scan: 100, 125, 200, 250 slices


def make_cohort(root: Path, count: int, size: int) -> None:
    """``count`` thorax phantoms (one study each), cached between benchmark runs."""
    stamp = root / f".made-{count}-{size}"
    if stamp.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    for index in range(count):
        increment = INCREMENTS[index % len(INCREMENTS)]
        subprocess.run([*CLI, "phantom", "--output", str(root), "--seed", str(1000 + index), "--size", str(size),
                        "--increment", str(increment), "--z-extent", "250", "--burden",
                        ("zero", "mild", "moderate", "severe")[index % 4]],
                       check=True, stdout=subprocess.DEVNULL)
    stamp.touch()
    print(f"cohort: {count} phantoms of {size} x {size} written in {time.perf_counter() - start:.0f} s")


def score(input_dir: Path, extra: list[str], label: str, series: int) -> float:
    """Run the default workflow into a fresh folder; print and return series per hour."""
    out = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    env = {**os.environ, "CAC_MHUB_WORKERS": ""}
    start = time.perf_counter()
    result = subprocess.run([*CLI, "run", "--input", str(input_dir), "--output", str(out), "--quiet", *extra],
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(f"{label}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
        return 0.0
    with sqlite3.connect(out / "cac-mhub-state.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM series").fetchone()[0]
        peak = db.execute("SELECT MAX(peak_rss_mb) FROM units").fetchone()[0] or 0.0
        workers = db.execute("SELECT COUNT(DISTINCT worker) FROM units").fetchone()[0]
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM series GROUP BY status").fetchall())
    shutil.rmtree(out, ignore_errors=True)
    rate = done / seconds * 3600
    print(f"{label:<34} {seconds:7.1f} s  {rate:7.0f} series/h  {done}/{series} series {statuses}  "
          f"{workers} worker process(es), peak RSS {peak / 1024:.2f} GiB per worker")
    return rate


def runs(args: argparse.Namespace) -> None:
    cohort = Path(args.cohort)
    make_cohort(cohort, args.series, args.size)
    print(f"\n== {args.series} series, default workflow, {os.cpu_count()} cores ==")
    sequential = score(cohort, ["--workers", "1"], "sequential (--workers 1)", args.series)
    workers = score(cohort, ["--workers", str(args.workers)], f"--workers {args.workers} (LocalCluster)", args.series)
    import dask
    from distributed import LocalCluster

    from cac_mhub.cohort.engine import WORKER_ENVIRON

    scratch = tempfile.mkdtemp(prefix="bench-dask-")
    # the workers' environment docs/cohorts.md asks for (Dask's MALLOC_TRIM_THRESHOLD_ left out)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON}), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                         local_directory=scratch) as cluster:
        external = score(cohort, ["--scheduler", cluster.scheduler_address],
                         f"--scheduler (LocalCluster, {args.workers} workers)", args.series)
    shutil.rmtree(scratch, ignore_errors=True)
    if sequential:
        print(f"ratio to sequential: --workers {args.workers} {workers / sequential:.2f}x, "
              f"--scheduler {external / sequential:.2f}x (target >= 1.3x on 2 cores)")


def header_tree(root: Path, files: int, per_series: int = 100, series_per_study: int = 2) -> None:
    """``files`` header-only DICOM files; one serialised header per series, written per file."""
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    stamp = root / f".made-{files}"
    if stamp.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    series_count = max(1, files // per_series)
    for index in range(series_count):
        study = index // series_per_study
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.9.{index}.1"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"1.2.826.0.1.8.{study}", f"1.2.826.0.1.8.{study}.{index}"
        ds.Modality, ds.Rows, ds.Columns = "CT", 512, 512
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        folder = root / "nlst" / f"p{study // 3:05d}" / ds.StudyInstanceUID / ds.SeriesInstanceUID
        folder.mkdir(parents=True)
        for n in range(per_series):
            (folder / f"{n:04d}.dcm").write_bytes(data)
    stamp.touch()
    print(f"catalog tree: {series_count * per_series} files in {series_count} series folders, "
          f"written in {time.perf_counter() - start:.0f} s")


def catalog(args: argparse.Namespace) -> None:
    from cac_mhub.cohort.catalog import CatalogStats, iter_units

    root = Path(args.catalog_tree)
    header_tree(root, args.catalog_files)
    subprocess.run(["sync"], check=False)
    stats = CatalogStats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    units = sum(1 for _ in iter_units(root, stats=stats))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"\n== catalog: {stats.files} files, {stats.folders} series folders ==")
    print(f"{seconds:.1f} s, {stats.files / seconds:,.0f} files/s, {stats.headers_read} headers read, "
          f"{units} units; peak Python memory {peak / 2**20:.1f} MiB, RSS growth {rss_growth:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cohort", default="/tmp/cac-mhub-bench-cohort")
    parser.add_argument("--catalog-files", type=int, default=200_000)
    parser.add_argument("--catalog-tree", default="/tmp/cac-mhub-bench-catalog")
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--skip-catalog", action="store_true")
    args = parser.parse_args()
    if not args.skip_runs:
        runs(args)
    if not args.skip_catalog:
        catalog(args)


if __name__ == "__main__":
    main()
