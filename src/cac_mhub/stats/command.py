"""``cac-mhub compare``: agreement statistics of two score tables, or (``--check``) an
output-vs-reference check of two output folders.

Exit codes: 0 done (``--check``: every series within the tolerances), 1 ``--check`` found a
mismatch, 2 bad usage or input (a table or column missing, no id matched).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes, atomic_write_text
from .tables import COHORT_ID, COHORT_SCORE, TableError

EXIT_MISMATCH, EXIT_USAGE = 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare", help="agreement statistics of two score tables (or --check: two output folders against tolerances)",
        description="TABLE and OTHER_TABLE are CSV files or cac-mhub output folders (their cohort.csv). "
                    "One table may hold both columns (--reference and --test).")
    parser.add_argument("table", type=Path, metavar="TABLE", help="reference table: CSV file or output folder")
    parser.add_argument("other", type=Path, nargs="?", metavar="OTHER_TABLE",
                        help="test table (default: TABLE itself, then --test names its second column)")
    parser.add_argument("--id", default=COHORT_ID, help=f"id column pairing the rows (default {COHORT_ID!r}, our cohort's series folder)")
    parser.add_argument("--reference", default=COHORT_SCORE, help=f"reference score column (default {COHORT_SCORE!r})")
    parser.add_argument("--test", default=None, help="test score column (default: --reference's name; required with one table)")
    parser.add_argument("--output", type=Path, default=None, help="folder for agreement.json/.html and plots (check.json with --check)")
    parser.add_argument("--cuts", default="0,100,300", help="risk-group cut points, ascending (default 0,100,300: 0 / 1-100 / 101-300 / >300)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--check", action="store_true", help="TABLE and OTHER_TABLE are output folders of the same inputs: "
                        "same status, scores within tolerance, SEG Dice per segment; exit 1 on a mismatch")
    parser.add_argument("--abs-tol", type=float, default=1.0, help="--check: score tolerance, absolute (default 1)")
    parser.add_argument("--rel-tol", type=float, default=0.01, help="--check: score tolerance, relative (default 0.01)")
    parser.add_argument("--min-dice", type=float, default=0.99, help="--check: lowest Dice per SEG segment (default 0.99)")
    parser.set_defaults(func=cmd_compare)


def _error(message: str) -> int:
    print(f"cac-mhub compare: {message}", file=sys.stderr)
    return EXIT_USAGE


def parse_cuts(text: str) -> list[float]:
    try:
        cuts = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--cuts must be numbers separated by commas, not {text!r}") from None
    if not cuts or any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"--cuts must be ascending numbers, not {text!r}")
    return cuts


def cmd_compare(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    if args.output is None:
        return _error("--output DIR is required")
    if args.other is None and args.test is None:
        return _error("with one table, --test names its second score column")
    try:
        cuts = parse_cuts(args.cuts)
    except ValueError as error:
        return _error(str(error))
    if args.bootstrap < 0:
        return _error("--bootstrap must be 0 or more")
    from .compare import compare_tables

    try:
        result = compare_tables(args.table, args.other, args.id, args.reference, args.test or args.reference,
                                cuts, args.bootstrap, args.seed)
    except TableError as error:
        return _error(str(error))
    if not result["n"]:
        return _error(f"no id has a score on both sides (ids only in the reference: {result['unmatched']['only_reference']}, "
                      f"only in the test table: {result['unmatched']['only_test']})")
    try:
        write_agreement(result, args.output)
    except OSError as error:
        return _error(f"cannot write {args.output}: {error.strerror or error}")
    print(summary(result))
    print(f"written: {args.output / 'agreement.json'}, {args.output / 'agreement.html'}")
    return 0


def write_agreement(result: dict[str, Any], folder: Path) -> None:
    """agreement.json, the PNG plots and agreement.html into ``folder``."""
    import numpy as np

    from ..report import agreement_plots as plots
    from ..report.agreement_page import agreement_html

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "agreement.json", json.dumps(result, indent=1) + "\n")
    reference, test = np.asarray(result["pairs"]["reference"]), np.asarray(result["pairs"]["test"])
    names = (result["reference"]["column"], result["test"]["column"])
    pictures = {
        "scatter": ("scatter.png", plots.scatter(reference, test, names)),
        "Bland-Altman": ("bland_altman.png", plots.bland_altman(reference, test, result)),
        "Bland-Altman, log": ("bland_altman_log.png", plots.bland_altman(reference, test, result, log=True)),
        "risk groups": ("risk_groups.png", plots.confusion(result["confusion_matrix"], result["groups"])),
    }
    for name, data in pictures.values():
        atomic_write_bytes(folder / name, data)
    atomic_write_text(folder / "agreement.html", agreement_html(result, {k: v[0] for k, v in pictures.items()}))


def summary(result: dict[str, Any]) -> str:
    """One line per headline statistic, with its bootstrap interval."""
    ci = result.get("ci95", {})
    parts = [f"n {result['n']} (unmatched: {result['unmatched']['only_reference']} reference only, "
             f"{result['unmatched']['only_test']} test only, {result['unmatched']['missing_score']} without a score)"]
    for key in ("spearman", "pearson_log", "icc_1_1", "icc_2_1", "icc_3_1", "kappa", "kappa_linear",
                "kappa_quadratic", "group_agreement", "mean_difference"):
        value = result.get(key)
        interval = ci.get(key) or [None, None]
        text = "n/a" if value is None else f"{value:.3f}"
        if interval[0] is not None:
            text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        parts.append(f"{key}: {text}")
    return "\n".join(parts)


def _check(args: argparse.Namespace) -> int:
    from .check import Tolerances, check_outputs, summary_lines

    if args.other is None:
        return _error("--check compares two output folders: TABLE OTHER_TABLE")
    for folder in (args.table, args.other):
        if not (folder / "cohort.csv").is_file():
            return _error(f"not a cac-mhub output folder (no cohort.csv): {folder}")
    if args.abs_tol < 0 or args.rel_tol < 0 or not 0 <= args.min_dice <= 1:
        return _error("tolerances: --abs-tol and --rel-tol >= 0, --min-dice in [0, 1]")
    try:
        result = check_outputs(args.table, args.other, Tolerances(args.abs_tol, args.rel_tol, args.min_dice))
    except (TableError, KeyError) as error:
        return _error(f"cohort table not usable: {error}")
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output / "check.json", json.dumps(result, indent=1) + "\n")
    print("\n".join(summary_lines(result)))
    return 0 if result["passed"] else EXIT_MISMATCH
