"""Time of ``cac-mhub outcomes`` for an NLST-sized cohort (130,000 rows), stage by stage.

Input: a synthetic cohort.csv (keys, status, Agatston scores from a skewed distribution, age, sex; 3 %
not scored) and a follow-up table (exponential survival with hazard ratios 1 / 1.5 / 2.5 / 4 by CAC
group, age raising the hazard, censoring up to 7 years; a few bad rows: negative times, events that
are not 0/1, ids missing on either side). Output: seconds for reading + joining, Kaplan-Meier +
numbers at risk, the log-rank test, each Cox model with its Harrell's C, writing the json/html/png,
and the whole command (``cac-mhub outcomes`` run in-process), with the hazard ratios found.

Run:  .venv/bin/python benchmarks/bench_outcomes.py [--rows 130000] [--adjust age,sex]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cac_mhub.cli import main  # noqa: E402
from cac_mhub.stats import survival as S  # noqa: E402
from cac_mhub.stats.tables import read_rows  # noqa: E402

HAZARD_RATIOS = (1.0, 1.5, 2.5, 4.0)


def write_tables(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(55.0, 75.0, rows)
    score = np.where(rng.random(rows) < 0.45, 0.0, np.exp(rng.normal(4.0, 1.8, rows)))
    group = np.searchsorted([0.0, 100.0, 300.0], score, side="left")
    hazard = 0.01 * np.asarray(HAZARD_RATIOS)[group] * 1.04 ** (age - 65.0)
    event_time = rng.exponential(1.0 / hazard)
    censor = np.minimum(rng.uniform(0.0, 9.0, rows), 7.0)
    time_ = np.minimum(event_time, censor)
    event = (event_time <= censor).astype(int)
    status = np.where(rng.random(rows) < 0.03, "skipped", "scored")
    cohort, followup = folder / "cohort.csv", folder / "followup.csv"
    with open(cohort, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "status", "agatston", "age", "sex"])
        for i in range(rows):
            writer.writerow([f"1.2.840.99.{i}", status[i], "" if status[i] != "scored" else f"{score[i]:.3f}",
                             f"{age[i]:.1f}", "MF"[i % 2]])
    with open(followup, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "years", "death"])
        for i in range(rows):
            if i % 1000 == 7:
                continue  # no follow-up
            bad_time, bad_event = i % 5000 == 11, i % 5000 == 13
            writer.writerow([f"1.2.840.99.{i}", "-1" if bad_time else f"{time_[i]:.4f}", "9" if bad_event else event[i]])
        writer.writerow(["9.9.9", "1.0", "1"])  # no cohort row
    return cohort, followup


def timed(label: str, function):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = function()
    print(f"  {label:<38} {time.perf_counter() - start:7.2f} s", flush=True)
    return value


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=130_000)
    parser.add_argument("--adjust", default="age,sex")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-outcomes-") as tmp:
        folder = Path(tmp)
        cohort, followup = write_tables(folder, args.rows)
        adjust = [c for c in args.adjust.split(",") if c]
        spec = S.Spec(id="key", time="years", event="death", adjust=adjust)
        print(f"{args.rows} cohort rows, adjusted for {adjust or 'nothing'}; stages:")
        joined = timed("read + join", lambda: S.join(read_rows(cohort), read_rows(followup), spec))
        time_, event, group = joined.time, joined.event, np.asarray(joined.group, dtype=object)
        timed("Kaplan-Meier, 4 groups + at risk", lambda: ([S.kaplan_meier(time_[group == g], event[group == g], [1, 3, 5])
                                                             for g in joined.groups], S.at_risk_table(time_, group, joined.groups)))
        timed("log-rank", lambda: S.log_rank(time_, event, group))
        design, names = S.group_design(joined.group, joined.groups)
        crude = timed("Cox unadjusted + Harrell's C", lambda: S.cox(time_, event, design, names))
        if adjust:
            extra, extra_names, complete, _ = S.covariate_design(joined.covariates)
            timed("Cox adjusted + Harrell's C", lambda: S.cox(time_[complete], event[complete],
                                                              np.hstack([design[complete], extra[complete]]),
                                                              names + extra_names))
        command = ["outcomes", str(cohort), str(followup), "--time", "years", "--event", "death",
                   "--horizons", "1,3,5", "--output", str(folder / "out")] + (["--adjust", args.adjust] if adjust else [])
        code = timed("whole command (cac-mhub outcomes)", lambda: main(command))
        print(f"n {len(joined.ids)}, events {int(event.sum())}, left out {sum(len(v) for v in joined.excluded.values())}; "
              "unadjusted HR " + ", ".join(f"{t['term']} {t['hr']:.2f}" for t in crude["terms"]) +
              f" (true {HAZARD_RATIOS[1:]}, before age); exit code {code}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
