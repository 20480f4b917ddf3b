"""``cac-mhub outcomes``: survival of CAC groups from a cohort table and a follow-up table.

Writes ``outcomes.json`` (counts, left-out rows by reason, Kaplan-Meier at the horizons, log-rank,
Cox hazard ratios unadjusted and adjusted, Harrell's C), ``outcomes.html`` and
``outcomes_km.png`` into ``--output``; when that folder is a cac-mhub output (cohort.csv beside
dashboard.html), the dashboard is rebuilt so that it links the page.

Exit codes: 0 written, 2 bad usage or input (a table or column missing, nothing left to analyse).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes, atomic_write_text
from .survival import AGATSTON_GROUPS, OutcomeError, Spec
from .tables import COHORT_ID, TableError

EXIT_USAGE = 2
METHOD = ("Kaplan-Meier with log-log 95 % intervals, log-rank test and Harrell's C: scikit-survival; Cox "
          "proportional hazards (Breslow ties, Wald 95 % intervals): statsmodels PHReg. Numbers at risk: "
          "follow-up time >= t.")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "outcomes", help="Kaplan-Meier, log-rank and Cox hazard ratios of CAC groups from a cohort and a follow-up table",
        description="COHORT is a CSV file or a cac-mhub output folder (its cohort.csv); FOLLOWUP a CSV with an id, "
                    "a follow-up time and a 0/1 event per row. Rows that cannot be used are counted by reason.")
    parser.add_argument("cohort", type=Path, metavar="COHORT", help="cohort table: CSV file or output folder")
    parser.add_argument("followup", type=Path, metavar="FOLLOWUP", help="follow-up table (CSV)")
    parser.add_argument("--id", default=COHORT_ID, help=f"id column joining the tables (default {COHORT_ID!r})")
    parser.add_argument("--followup-id", default=None, help="id column of the follow-up table when its name differs")
    parser.add_argument("--time", required=True, help="follow-up time column (any unit; >= 0)")
    parser.add_argument("--event", required=True, help="event column: 1 event, 0 censored")
    parser.add_argument("--group", default=AGATSTON_GROUPS,
                        help=f"{AGATSTON_GROUPS!r} (default): CAC groups from --score cut at --cuts; or a column of "
                             "group labels")
    parser.add_argument("--score", default="agatston", help="score column of the CAC groups (default 'agatston')")
    parser.add_argument("--cuts", default="0,100,300",
                        help="CAC group cut points, ascending (default 0,100,300: 0 / >0-100 / >100-300 / >300)")
    parser.add_argument("--reference-group", default=None, help="reference group label (default: the lowest)")
    parser.add_argument("--adjust", default="", help="covariate columns of the adjusted Cox model, e.g. age,sex")
    parser.add_argument("--horizons", default="", help="times for Kaplan-Meier survival, e.g. 1,3,5 "
                        "(default: a quarter, half and three quarters of the longest follow-up)")
    parser.add_argument("--time-label", default="time", help="x-axis label of the plot, e.g. 'years'")
    parser.add_argument("--output", type=Path, required=True, help="folder for outcomes.json/.html")
    parser.set_defaults(func=cmd_outcomes)


def _error(message: str) -> int:
    print(f"cac-mhub outcomes: {message}", file=sys.stderr)
    return EXIT_USAGE


def _numbers(text: str, name: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be numbers separated by commas, not {text!r}") from None
    if any(b <= a for a, b in zip(values, values[1:])) or any(v != v for v in values):
        raise ValueError(f"{name} must be ascending numbers, not {text!r}")
    return values


def cmd_outcomes(args: argparse.Namespace) -> int:
    try:
        cuts = _numbers(args.cuts, "--cuts")
        horizons = _numbers(args.horizons, "--horizons") if args.horizons.strip() else None
    except ValueError as error:
        return _error(str(error))
    if not cuts:
        return _error("--cuts needs at least one number")
    if horizons and horizons[0] < 0:
        return _error("--horizons must not be negative")
    spec = Spec(id=args.id, followup_id=args.followup_id, time=args.time, event=args.event, group=args.group,
                score=args.score, cuts=cuts, adjust=[c.strip() for c in args.adjust.split(",") if c.strip()],
                reference_group=args.reference_group, horizons=horizons)
    try:
        result = run_outcomes(args.cohort, args.followup, spec)
    except (TableError, OutcomeError) as error:
        return _error(str(error))
    try:
        written = write_outcomes(result, args.output, args.time_label)
    except OSError as error:
        return _error(f"cannot write {args.output}: {error.strerror or error}")
    print(summary(result))
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def run_outcomes(cohort: Path, followup: Path, spec: Spec) -> dict[str, Any]:
    """Read both tables, join, analyse; the result with its inputs."""
    from .survival import analyse, join
    from .tables import read_rows, table_path

    cohort_path = table_path(cohort)
    cohort_rows, followup_rows = read_rows(cohort_path), read_rows(followup)
    result = analyse(join(cohort_rows, followup_rows, spec), spec)
    description = (f"{spec.score} cut at {', '.join(f'{c:g}' for c in spec.cuts)}" if spec.group == AGATSTON_GROUPS
                   else f"column {spec.group}")
    result["inputs"] = {"cohort": str(cohort_path), "followup": str(followup), "id": spec.id,
                        "followup_id": spec.followup_id or spec.id, "time": spec.time, "event": spec.event,
                        "group": spec.group, "group_description": description, "score": spec.score,
                        "cuts": list(spec.cuts), "adjust": list(spec.adjust)}
    result["method"] = METHOD
    return result


def write_outcomes(result: dict[str, Any], folder: Path, time_label: str = "time") -> list[Path]:
    """outcomes.json, outcomes_km.png, outcomes.html; the dashboard beside them rebuilt to link the page."""
    from ..report.outcomes_page import outcomes_html
    from ..report.outcomes_plots import kaplan_meier_png

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "outcomes.json", folder / "outcomes_km.png", folder / "outcomes.html"]
    atomic_write_text(written[0], json.dumps(result, indent=1) + "\n")
    atomic_write_bytes(written[1], kaplan_meier_png(result, time_label))
    atomic_write_text(written[2], outcomes_html(result, written[1].name))
    if (folder / "dashboard.html").is_file() and (folder / "cohort.csv").is_file():
        from ..report.dashboard import write_dashboard

        written.append(write_dashboard(folder))
    return written


def summary(result: dict[str, Any]) -> str:
    """A few lines for the console: n, events, left out, log-rank, hazard ratios."""
    lines = [f"n {result['n']}, events {result['events']}; left out: " +
             (", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result["excluded"].items()) or "none")]
    log_rank = result.get("log_rank")
    if log_rank:
        lines.append(f"log-rank chi2 {log_rank['chi2']:.2f} (df {log_rank['df']}), p {log_rank['p']:.3g}")
    for key in ("cox_unadjusted", "cox_adjusted"):
        block = result.get(key)
        if not block:
            continue
        for term in block["terms"]:
            if term["hr"] is None:
                continue
            lines.append(f"{key.split('_')[1]}: {term['term']}: HR {term['hr']:.2f} "
                         f"[{term['ci_lower']:.2f}, {term['ci_upper']:.2f}]")
        if block.get("concordance") is not None:
            lines.append(f"{key.split('_')[1]}: Harrell's C {block['concordance']:.3f}")
    return "\n".join(lines)
