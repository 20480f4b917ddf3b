"""The default workflow on every real chest in ../shared/data/ct and on real-derived reconstructions, as a new user runs it.

    .venv/bin/python benchmarks/bench_real.py                       # real scans and their variants
    .venv/bin/python benchmarks/bench_real.py --no-variants         # the real scans only
    .venv/bin/python benchmarks/bench_real.py --only lidc_0028 --keep /tmp/real_out   # keep outputs (qc.png)

Each real chest is scored as it is and remade the way other scans come
(:mod:`cac_mhub.phantom.real_variants`): ECG-gated-like heart-centred reconstructions (165, 200 and
245 mm on 512 x 512, i.e. 0.32-0.48 mm pixels, 3 mm slices, about 150 mm from above the heart's
base to below its apex, the reconstruction circle padded), 5 mm slices keeping the liver dome,
and added low-dose noise. All are written as DICOM and scored by the same `cac-mhub run`.

Prints per series: status, heart region (cm3), where it sits (the aortic root's height above the
heart's centre, mm; the lungs' share at the centre's level), confidence and its reasons,
Agatston, what completion added, lesions the detector took, candidates left uncounted and their
would-be Agatston, and for the real plaques (hand-clicked reference, tests/data) the reference
Agatston. lidc_0295 and lidc_0028 carry coronary calcium; the other chests none a reader would
score (itkelastix_thorax_00: a ~10 mm3 focus), so their Agatston should stay <= 10.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
REAL = ("ricord_chest_ge", "itkelastix_thorax_00", "lidc_0028", "lidc_0295", "lidc_0306", "lungdx_a0001",
        "lungdx_a0002", "cip_ct64_chest_lowres")
WITH_CALCIUM = ("lidc_0295", "lidc_0028")


def write_variants(source: Path, target: Path, seed: int = 0) -> list[str]:
    """The real-derived reconstructions of one scan, written as DICOM series under ``target``."""
    from scipy import ndimage

    from cac_mhub.anatomy import analyse
    from cac_mhub.dicom.scan import SelectionRules, scan, select
    from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
    from cac_mhub.dicom.volume import assemble
    from cac_mhub.phantom.real_variants import Reconstruction, cardiac_field_of_view, low_dose, resample_z

    series = select(scan(source).series, SelectionRules(max_increment_mm=10.0))
    if not series:
        return []
    volume, _ = assemble(series[0])
    real = Reconstruction(volume.hu, tuple(float(s) for s in volume.spacing_zyx),
                          tuple(float(o) for o in volume.origin_lps))
    anatomy = analyse(real.hu, real.spacing)
    rng = np.random.default_rng(seed)
    made: list[tuple[str, Reconstruction]] = []
    if anatomy.found:
        mass = anatomy.full("heart_mass")
        bottom = real.point_of((ndimage.find_objects(mass.astype(np.uint8))[0][0].start, 0, 0))[2]
        centre = real.point_of(ndimage.center_of_mass(mass))
        for fov in (165.0, 200.0, 245.0):
            low = bottom - rng.uniform(5.0, 20.0)
            shifted = (centre[0] + rng.uniform(-10, 10), centre[1] + rng.uniform(-10, 10), centre[2])
            made.append((f"gated {fov:.0f} mm", cardiac_field_of_view(
                real, shifted, fov, (low, low + rng.uniform(138.0, 171.0)), increment_mm=max(3.0, real.spacing[0]))))
    if real.spacing[0] < 4.0:
        made.append(("5 mm", resample_z(real, 5.0)))
    made.append(("low dose", low_dose(real, 45.0, seed=seed)))
    names = []
    for index, (name, variant) in enumerate(made):
        spec = CtSeriesSpec(patient_id="BENCH", series_description=f"{source.name} {name}", series_number=100 + index,
                            kvp=float(volume.acquisition.get("kvp") or 120.0))
        write_ct_series(variant.hu, target / f"{source.name}-{index}", variant.spacing, variant.origin, spec)
        names.append(f"{source.name} {name}")
    return names


def reference_agatston(shared: Path) -> dict[str, float]:
    """Agatston of the hand-clicked plaques (tests/data/real_calcium_reference.json)."""
    from cac_mhub.dicom.scan import SelectionRules, scan, select
    from cac_mhub.dicom.volume import assemble
    from cac_mhub.scoring.agatston import score
    from cac_mhub.scoring.reader import reader_mask

    reference = json.loads((ROOT / "tests" / "data" / "real_calcium_reference.json").read_text())
    out = {}
    for name, block in reference["scans"].items():
        if not (shared / name).is_dir():
            continue
        volume, _ = assemble(select(scan(shared / name).series, SelectionRules(max_increment_mm=10.0))[0])
        mask = np.zeros(volume.hu.shape, np.uint8)
        for lesion in block["lesions"]:
            mask[reader_mask(volume.hu, volume.spacing_zyx, lesion["clicks"])] = 1
        out[name] = float(score(volume.hu, volume.spacing_zyx, mask, {1: "CAC"}).agatston)
    return out


def row(scan: str, report: dict) -> dict:
    scores = report.get("scores") or {}
    heart = report.get("heart") or {}
    lesions = report.get("lesions") or {}
    confidence = report.get("confidence") or {}
    return {
        "series": (report.get("series") or {}).get("description") or scan,
        "status": report["status"], "reason": report.get("reason", ""),
        "region_cm3": heart.get("heart_region_cm3"), "root_above": heart.get("root_above_centre_mm"),
        "lung_level": heart.get("lung_level"),
        "confidence": confidence.get("verdict", ""),
        "reasons": ",".join(r["code"] for r in confidence.get("reasons", [])),
        "agatston": float(scores.get("agatston") or 0.0),
        "arteries": {k: round(v["agatston"], 1) for k, v in (scores.get("per_artery") or {}).items() if v["agatston"]},
        "added": lesions.get("added_agatston"), "detected": len(lesions.get("detected") or []),
        "unlabelled": len(lesions.get("unlabelled") or []), "unlabelled_agatston": lesions.get("unlabelled_agatston"),
        "seconds": round(sum((report.get("timings_s") or {}).values()), 1),
    }


def _fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    print(f"{'series':34s} {'status':7s} {'region':>7s} {'root':>5s} {'lungs':>5s} {'conf':6s} {'Agatston':>8s} "
          f"{'added':>6s} {'det':>3s} {'uncounted':>13s} {'s':>5s}  arteries / confidence reasons")
    for r in rows:
        uncounted = f"{r['unlabelled']} ({_fmt(r['unlabelled_agatston'], '.1f')})"
        print(f"{r['series'][:34]:34s} {r['status'][:7]:7s} {_fmt(r['region_cm3'], '7.0f')} "
              f"{_fmt(r['root_above'], '5.0f')} {_fmt(r['lung_level'], '5.2f')} {r['confidence']:6s} "
              f"{r['agatston']:8.1f} {_fmt(r['added'], '6.1f')} {r['detected']:3d} {uncounted:>13s} {r['seconds']:5.1f}  "
              f"{r['arteries'] or ''} {r['reasons']}")
        if r["status"] != "scored":
            print(f"{'':34s} reason: {r['reason']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-variants", action="store_true", help="the real scans only")
    parser.add_argument("--only", nargs="*", default=None, help="these real scans only")
    parser.add_argument("--keep", type=Path, default=None, help="write the outputs here and keep them")
    parser.add_argument("--shared", type=Path, default=SHARED_CT)
    parser.add_argument("--set", action="append", default=[], help="extra --set for cac-mhub run")
    args = parser.parse_args()
    from cac_mhub.cli import main as cac_mhub

    present = [n for n in (args.only or REAL) if (args.shared / n).is_dir()]
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
            extra = [a for s in args.set for a in ("--set", s)]
            start = time.perf_counter()
            cac_mhub(["run", "--input", str(inputs), "--output", str(out), "--quiet",
                      "--set", "modules.DicomImporter.per_study=all",
                      "--set", "modules.DicomImporter.max_increment_mm=10.0", *extra])
            print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
            cohort = json.loads((out / "cohort.json").read_text())
            rows += [row(name, report) for report in cohort["series"]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    reference = reference_agatston(args.shared)
    for name, value in reference.items():
        print(f"reference (hand-clicked) {name}: Agatston {value:.1f}")
    free = [r for r in rows if r["status"] == "scored" and not r["series"].startswith(WITH_CALCIUM)]
    worst = max((r["agatston"] for r in free), default=0.0)
    print(f"\n{len(free)} calcium-free series scored; highest Agatston {worst:.1f} (target <= 10); "
          f"confidence {sum(r['confidence'] == 'high' for r in rows)} high, "
          f"{sum(r['confidence'] == 'medium' for r in rows)} medium, {sum(r['confidence'] == 'low' for r in rows)} low")
    return 0


if __name__ == "__main__":
    sys.exit(main())
