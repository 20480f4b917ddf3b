"""Size of dashboard.html and its time to first render in headless Chromium, for synthetic cohorts.

Input: a synthetic cohort.csv of N series (default 1,000 and 130,000) with realistic columns:
UID-like keys, pseudonymised patients, study dates, kVp, thickness, kernels, Agatston scores from
a skewed distribution, 85 % scored / 10 % skipped / 5 % failed with their reasons, warnings.
For each N: the seconds to build the page in Python (``write_dashboard``), its size, and in
Chromium (``--dump-dom``): the page's own first-render time (``performance.now()`` when the
table is drawn: parse + JSON + first rows) and the wall time of the whole browser process; then
the same with a text filter given in the URL (``#q=...``, which filters all N rows on load).

Run:  .venv/bin/python benchmarks/bench_dashboard.py [--sizes 1000 130000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cac_mhub.modules.report_exporter import BASE_COLUMNS  # noqa: E402
from cac_mhub.report.dashboard import write_dashboard  # noqa: E402
from cac_mhub.scoring.categories import risk_category  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
KERNELS = ["B30f", "B31f", "STANDARD", "BODY", "FC10", "B50f", "LUNG", "C", "D"]
REASONS = ["DicomImporter: too few slices: 4 < 10", "DicomImporter: slice increment 5.0 mm > 3.0 mm",
           "HeartLocator: no heart region: no lungs in the field of view", "AgatstonCalculator: contrast-enhanced CT"]
FAILURES = ["NiftiConverter: missing slices: 1 slice between z = 120.0 and 125.0", "NnunetCacRunner: CUDA out of memory"]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random(n) < 0.35, 0.0, np.round(rng.lognormal(4, 1.8, n), 3))
    kind = rng.random(n)
    rows = []
    for i in range(n):
        status = "scored" if kind[i] < 0.85 else "skipped" if kind[i] < 0.95 else "failed"
        score = float(scores[i])
        lad = round(score * 0.5, 3)
        row = {
            "key": f"1.2.826.0.1.3680043.8.498.{rng.integers(10**17, 10**18)}{i:07d}",
            "status": status,
            "reason": "" if status == "scored" else str(rng.choice(REASONS if status == "skipped" else FAILURES)),
            "patient_id": f"{rng.integers(16**14, 16**15):015x}",
            "study_date": f"{rng.integers(1999, 2003)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
            "series_description": "NLST T0", "kvp": int(rng.choice([100, 120, 140])),
            "kernel": str(rng.choice(KERNELS)), "slice_thickness_mm": float(rng.choice([1.0, 1.25, 2.0, 2.5])),
            "excluded_candidates": int(rng.integers(0, 20)) if status == "scored" else "",
            "excluded_agatston": round(float(rng.gamma(1, 200)), 3) if status == "scored" else "",
            "warnings": "missing ImageType: accepted" if rng.random() < 0.05 else "",
            "run_id": "20260101T000000Z-bench0",
        }
        if status == "scored":
            row |= {"agatston": score, "risk_category": risk_category(score), "agatston_LAD": lad,
                    "agatston_RCA": round(score * 0.3, 3), "agatston_LCX": round(score * 0.15, 3),
                    "agatston_LM": round(score * 0.05, 3)}
        rows.append(row)
    return rows


def write_cohort(folder: Path, rows: list[dict]) -> None:
    columns = BASE_COLUMNS + ["agatston", "agatston_LAD", "agatston_LCX", "agatston_LM", "agatston_RCA", "risk_category"]
    with open(folder / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def chromium_render(page: Path, fragment: str = "") -> tuple[float, float, str]:
    """(in-page first render ms, browser wall seconds, 'N of M series') of one --dump-dom run."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found")
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
                              capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - start
    render = re.search(r'data-render-ms="(\d+)"', done.stdout)
    shown = re.search(r'id="shown"[^>]*>([^<]*)<', done.stdout)
    if render is None or shown is None:
        raise SystemExit(f"page did not render: {done.stderr[-500:]}")
    return float(render.group(1)), wall, shown.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 130000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'series':>8} {'build s':>8} {'size MB':>8} {'render ms':>10} {'browser s':>10} "
          f"{'filtered render ms':>19}  shown (filter 'failed')")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_cohort(folder, synthetic_rows(n))
            start = time.perf_counter()
            page = write_dashboard(folder)
            build = time.perf_counter() - start
            runs = [chromium_render(page) for _ in range(args.repeat)]
            filtered = [chromium_render(page, "#q=failed") for _ in range(args.repeat)]
            print(f"{n:>8} {build:>8.2f} {page.stat().st_size / 1e6:>8.2f} "
                  f"{statistics.median(r[0] for r in runs):>10.0f} {statistics.median(r[1] for r in runs):>10.2f} "
                  f"{statistics.median(r[0] for r in filtered):>19.0f}  {filtered[0][2]}")


if __name__ == "__main__":
    main()
