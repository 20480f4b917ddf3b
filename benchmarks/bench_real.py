"""The default workflow on every real chest with a heart in ../shared/data/ct, as a new user runs it.

    .venv/bin/python benchmarks/bench_real.py                 # the real scans and their variants
    .venv/bin/python benchmarks/bench_real.py --no-variants   # the real scans only
    .venv/bin/python benchmarks/bench_real.py --keep /tmp/real_out   # keep outputs (qc.png) to look at

None of these scans has coronary calcium a reader would score (itkelastix_thorax_00 has at most
a ~10 mm3 focus near the AV groove), so every Agatston should be small (target: <= 10). Beside
each real scan the benchmark makes variants a new user meets: a heart-only (cardiac) field of
view, a gated-like one (3 mm, 200 mm on 512 x 512: 0.39 mm pixels), 5 mm slabs, and added low-dose noise (written as DICOM, scored by the
same `cac-mhub run`). Prints per series: status, Agatston, lesions kept, candidates excluded by
reason (count and the Agatston they would have added), heart region found, seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
#: Real scans with the heart in view (cip_ct64_chest_lowres: 4 mm pixels, too coarse to score
#: but a heart all the same).
REAL = ("ricord_chest_ge", "itkelastix_thorax_00", "cip_ct64_chest_lowres")
#: name -> (noise HU, slab mm, cardiac field of view mm, in-plane matrix the crop is resampled to)
VARIANTS = {"cardiac-fov": (0.0, 3.0, 220.0, None), "5mm": (0.0, 5.0, None, None), "low-dose": (40.0, None, None, None),
            # like an ECG-gated calcium scan: 3 mm, a 200 mm heart-centred field of view on 512 x 512 (0.39 mm pixels)
            "gated-fine": (0.0, 3.0, 200.0, 512)}


def write_variants(source: Path, target: Path) -> list[str]:
    """Write the variants of one real scan as DICOM series under ``target``; returns their names."""
    from cac_mhub.dicom.scan import SelectionRules, scan, select
    from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
    from cac_mhub.dicom.volume import assemble
    from cac_mhub.training.recipe import _variant

    series = select(scan(source).series, SelectionRules(max_increment_mm=10.0))
    if not series:
        return []
    volume, _ = assemble(series[0])
    written = []
    for index, (name, (noise, slab, fov, matrix)) in enumerate(VARIANTS.items()):
        hu, spacing = _variant(volume.hu, volume.spacing_zyx, noise, slab, fov, seed=index)
        if matrix:
            hu, spacing = _fine_pixels(hu, spacing, matrix)
        spec = CtSeriesSpec(patient_id="BENCH", series_description=f"{source.name} {name}",
                            series_number=100 + index, kvp=float(volume.acquisition.get("kvp") or 120.0))
        write_ct_series(hu, target / f"{source.name}-{name}", spacing, volume.origin_lps, spec)
        written.append(f"{source.name} {name}")
    return written


def _fine_pixels(hu: np.ndarray, spacing: tuple[float, float, float], matrix: int
                 ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resample each slice (linear) to ``matrix`` x ``matrix`` over the same field of view."""
    from scipy import ndimage

    factors = (1.0, matrix / hu.shape[1], matrix / hu.shape[2])
    fine = ndimage.zoom(hu.astype(np.float32), factors, order=1)
    return (np.round(fine).astype(np.int16),
            (spacing[0], spacing[1] * hu.shape[1] / fine.shape[1], spacing[2] * hu.shape[2] / fine.shape[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-variants", action="store_true", help="the real scans only")
    parser.add_argument("--keep", type=Path, default=None, help="write the outputs here and keep them")
    parser.add_argument("--shared", type=Path, default=SHARED_CT)
    args = parser.parse_args()
    from cac_mhub.cli import main as cac_mhub

    present = [name for name in REAL if (args.shared / name).is_dir()]
    if not present:
        print(f"no real scans under {args.shared}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench_real_"))
    rows = []
    try:
        for name in present:
            inputs = work / "in" / name
            inputs.mkdir(parents=True)
            (inputs / name).symlink_to(args.shared / name, target_is_directory=True)
            if not args.no_variants and name != "cip_ct64_chest_lowres":
                write_variants(args.shared / name, inputs)
            out = (args.keep / name) if args.keep else work / "out" / name
            start = time.perf_counter()
            code = cac_mhub(["run", "--input", str(inputs), "--output", str(out), "--quiet",
                             "--set", "modules.DicomImporter.per_study=all",
                             "--set", "modules.DicomImporter.max_increment_mm=5.0"])
            wall = time.perf_counter() - start
            cohort = json.loads((out / "cohort.json").read_text())
            for report in cohort["series"]:
                rows.append(row(name, report, code, wall))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    scored = [r for r in rows if r["status"] == "scored"]
    worst = max((r["agatston"] for r in scored), default=0.0)
    print(f"\n{len(scored)} scored series; highest Agatston {worst:.1f} (target <= 10 on these calcium-free scans)")
    return 0


def row(scan: str, report: dict, code: int, wall: float) -> dict:
    scores = report.get("scores") or {}
    guard = report.get("guard") or {}
    excluded = guard.get("excluded") or {}
    return {
        "series": report.get("series", {}).get("description") or scan,
        "status": report["status"],
        "reason": report.get("reason", ""),
        "agatston": float(scores.get("agatston") or 0.0),
        "lesions": int(scores.get("lesion_count") or 0),
        "excluded": {k: (v["candidates"], v["agatston"]) for k, v in excluded.items()},
        "heart": (report.get("heart") or {}).get("heart_found"),
        "seconds": round(sum((report.get("timings_s") or {}).values()), 1),
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'series':42s} {'status':8s} {'Agatston':>9s} {'lesions':>7s} {'heart':>5s} {'s':>6s}  excluded (candidates, Agatston)")
    for r in rows:
        excluded = ", ".join(f"{k} {n} ({a:.1f})" for k, (n, a) in r["excluded"].items()) or "-"
        print(f"{r['series'][:42]:42s} {r['status']:8s} {r['agatston']:9.1f} {r['lesions']:7d} "
              f"{str(r['heart']):>5s} {r['seconds']:6.1f}  {excluded}")
        if r["status"] != "scored":
            print(f"{'':42s} reason: {r['reason']}")


if __name__ == "__main__":
    sys.exit(main())
