"""``cac-mhub dashboard OUTPUT``: rebuild an output folder's dashboard.html from its cohort CSV.

Exit codes: 0 written, 2 not an output folder (no cohort CSV) or not writable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboard", help="rebuild OUTPUT/dashboard.html (cohort at a glance) from OUTPUT/cohort.csv")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="a cac-mhub output folder")
    parser.add_argument("--cohort-name", default="cohort", help="stem of the cohort files (ReportExporter.cohort_name; default cohort)")
    parser.add_argument("--report-name", default="report.json", help="per-series report file name (ReportExporter.report_name)")
    parser.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import write_dashboard

    cohort = args.output / f"{args.cohort_name}.csv"
    if not cohort.is_file():
        print(f"cac-mhub dashboard: not a cac-mhub output folder (no {cohort.name}): {args.output}", file=sys.stderr)
        return 2
    try:
        target = write_dashboard(args.output, args.cohort_name, args.report_name)
    except (OSError, UnicodeDecodeError) as error:
        print(f"cac-mhub dashboard: cannot write the dashboard: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
        return 2
    print(f"written: {target}")
    return 0
