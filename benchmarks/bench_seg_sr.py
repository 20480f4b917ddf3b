"""SEG + SR writing time for one 512x512x300 CT series with a sparse calcium mask, both SEG engines.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_seg_sr.py [--slices 300] [--repeats 3] [--workdir DIR]

Writes a synthetic CT series once (cached in the work folder), reads its headers as the chain
does, then times each step (median of the repeats, wall clock): ordering the headers, building +
saving the SEG with highdicom and with dcmqi, building + saving the SR. Target: SEG + SR
<= 1 s per series with the default engine (highdicom).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Volume

SPACING = (3.0, 0.7, 0.7)
ORIGIN = (-179.0, -179.0, -450.0)
NAMES = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}


def sparse_case(slices: int, size: int = 512, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """HU volume and a sparse label map: 24 lesions of 2-40 px on 1-3 slices, all four arteries."""
    rng = np.random.default_rng(seed)
    hu = np.full((slices, size, size), -1000, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    for k in range(24):
        z = int(rng.integers(slices // 3, 2 * slices // 3))
        y, x = (int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
        h, w, d = (int(v) for v in (rng.integers(1, 7), rng.integers(2, 7), rng.integers(1, 4)))
        labels[z:z + d, y:y + h, x:x + w] = 1 + k % 4
        hu[z:z + d, y:y + h, x:x + w] = int(rng.integers(150, 700))
    return hu, labels


def _cpu() -> float:
    """CPU seconds of this process and its children (dcmqi runs as a child process)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


CPU: dict[str, float] = {}


def timed(fn, repeats: int, name: str = "") -> tuple[float, object]:
    """Median wall time of ``fn``; its median CPU time goes into CPU[name] (less sensitive to a busy machine)."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _cpu()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu() - start_cpu)
    CPU[name] = statistics.median(cpu)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cac-bench-seg-sr")
    args = parser.parse_args()

    hu, labels = sparse_case(args.slices)
    ct_dir = args.workdir / f"ct{args.slices}"
    files = sorted(ct_dir.glob("*.dcm"))
    if len(files) != args.slices:
        print(f"writing a {args.slices}-slice 512x512 CT series to {ct_dir} (once) ...")
        files = write_ct_series(hu, ct_dir, SPACING, ORIGIN, CtSeriesSpec(series_uid="1.2.826.0.1.3680043.8.498.1"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    volume = Volume(hu=hu, spacing_zyx=SPACING, origin_lps=ORIGIN,
                    sop_instance_uids=[str(h.SOPInstanceUID) for h in headers])
    result = score(hu, SPACING, labels, NAMES)
    algorithm = S.AlgorithmInfo(model_id="model:benchmark")
    out = args.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    occupied = len(S.occupied_slices(labels))
    print(f"series: {args.slices} x 512 x 512, {int(np.count_nonzero(labels))} mask voxels on {occupied} slices, "
          f"Agatston {result.agatston:.1f}; median of {args.repeats} runs")

    t_order, ordered = timed(lambda: S.headers_in_volume_order(headers[::-1], volume), args.repeats, "order")

    def highdicom_seg() -> pydicom.Dataset:
        seg = S.build_seg(ordered, labels, NAMES, algorithm)
        seg.save_as(out / "hd.seg.dcm")
        return seg

    def dcmqi_seg() -> None:
        S.build_seg_dcmqi(files, labels, NAMES, volume, algorithm, out / "dcmqi.seg.dcm")

    t_hd, seg = timed(highdicom_seg, args.repeats, "hd")
    t_dcmqi, _ = timed(dcmqi_seg, args.repeats, "dcmqi")

    def write_sr() -> None:
        R.build_sr(headers, result, algorithm, seg=seg).save_as(out / "cac.sr.dcm")

    t_sr, _ = timed(write_sr, args.repeats, "sr")
    size = {name: (out / f).stat().st_size / 1e3 for name, f in
            (("hd", "hd.seg.dcm"), ("dcmqi", "dcmqi.seg.dcm"), ("sr", "cac.sr.dcm"))}
    print(f"{'step':24s}{'wall ms':>9s}{'cpu ms':>9s}{'size kB':>9s}")
    for label, key, wall in (("order headers", "order", t_order), ("SEG highdicom (+save)", "hd", t_hd),
                             ("SEG dcmqi (+save)", "dcmqi", t_dcmqi), ("SR (+save)", "sr", t_sr)):
        print(f"{label:24s}{wall * 1000:9.1f}{CPU[key] * 1000:9.1f}{size.get(key, 0):9.0f}")
    default = t_order + t_hd + t_sr
    verdict = "met" if default <= 1.0 else "NOT met"
    print(f"{'SEG + SR, highdicom':24s}{default * 1000:9.1f}{(CPU['order'] + CPU['hd'] + CPU['sr']) * 1000:9.1f}"
          f"   target <= 1000 ms wall: {verdict}")
    print(f"{'SEG + SR, dcmqi':24s}{(t_order + t_dcmqi + t_sr) * 1000:9.1f}"
          f"{(CPU['order'] + CPU['dcmqi'] + CPU['sr']) * 1000:9.1f}")

if __name__ == "__main__":
    main()
