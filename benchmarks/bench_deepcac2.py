"""Speed and memory of DeepCAC2's full-size 3D U-Net on a 512x512x300 chest phantom (random weights).

    .venv/bin/python benchmarks/bench_deepcac2.py                       # CPU, and the GPU when there is one
    .venv/bin/python benchmarks/bench_deepcac2.py --edge-windows predict --pixel-type float32
    .venv/bin/python benchmarks/bench_deepcac2.py --threads 2 --batch-size 4

The weights are random (the published file is the user's); their size and layout are the
published ones, so the time is the real one. They go through the real loader from a temporary
file. Prints, per device: the heart region (HeartLocator's image rules), the seconds of
DeepCAC2's steps for the whole scan (resample, normalise, windows, back to the CT grid), the
number of windows and the peak memory (the process's peak RSS during the step, on the CPU;
torch's peak allocation on a GPU).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from cac_mhub.anatomy import analyse
from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.segmentation.deepcac2 import DeepCac2Model
from cac_mhub.segmentation.deepcac2_net import PUBLISHED_FEATURES, UNet3D
from cac_mhub.segmentation.deepcac2_weights import WEIGHTS_FILE


def peak_rss_mb() -> float:
    """The process's peak resident memory since start, or since :func:`reset_peak` (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak() -> None:
    """Start the peak-memory count afresh (Linux >= 4.0; elsewhere the peak is since start)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run(device: str, folder: Path, phantom, anatomy, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    model = DeepCac2Model(folder, device=device, features=PUBLISHED_FEATURES, batch_size=args.batch_size,
                          threads=args.threads)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reset_peak()
    start = time.perf_counter()
    result = model.segment(phantom.hu, phantom.spacing_zyx, phantom.origin_lps, heart=anatomy.full("region"),
                           edge_windows=args.edge_windows, mapped=args.mapped, pixel_type=args.pixel_type)
    seconds = time.perf_counter() - start
    extra = result.extra
    memory = (f"GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, " if model.device.type == "cuda" else "")
    print(f"[{extra['device']}] {seconds:.1f} s per scan ({extra['windows']} windows of 64x64x16, "
          f"{seconds / max(1, extra['windows']):.3f} s each, edge_windows={extra['edge_windows']}, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}); {memory}"
          f"process peak RSS during it {peak_rss_mb():.0f} MiB (the scan, its anatomy and the network "
          f"included); {int(result.mask.sum())} voxels labelled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge-windows", default="as_published", choices=("as_published", "predict"))
    parser.add_argument("--pixel-type", default="int16", choices=("int16", "float32"))
    parser.add_argument("--mapped", action="store_true")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=900_123)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    phantom = generate_thorax(args.seed, size=512, increment=1.0, z_extent_mm=299.0, burden="moderate")
    print(f"phantom {tuple(phantom.hu.shape[::-1])} (x, y, z) {phantom.hu.dtype}, spacing zyx "
          f"{tuple(round(s, 3) for s in phantom.spacing_zyx)} mm, made in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    anatomy = analyse(phantom.hu, phantom.spacing_zyx)
    print(f"heart region (image rules): found={anatomy.found} in {time.perf_counter() - start:.1f} s")
    print(f"process peak RSS before the network: {peak_rss_mb():.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        torch.save(UNet3D().state_dict(), Path(tmp) / WEIGHTS_FILE)
        print(f"random full-size weights: {(Path(tmp) / WEIGHTS_FILE).stat().st_size / 2**20:.0f} MiB, "
              f"{sum(p.numel() for p in UNet3D().parameters()) / 1e6:.1f} M parameters")
        run("cpu", Path(tmp), phantom, anatomy, args)
        if args.cpu_only:
            return
        if torch.cuda.is_available():
            run("cuda", Path(tmp), phantom, anatomy, args)
        else:
            print("[cuda] no GPU here: GPU timing not measured (the GPU runs the same predict_windows function)")


if __name__ == "__main__":
    main()
