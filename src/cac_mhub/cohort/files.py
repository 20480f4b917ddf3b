"""Cohort files (``cohort.csv``, ``cohort.json``) rebuilt from the state database.

Written when a run starts, every so often while it goes, and when it ends, always from the
database: after a crash they can be made again (``cac-mhub cohort OUTPUT``), and a run that
stopped shows exactly the series that finished. Both are written in a streaming way (one
series at a time): 130,000 reports never sit in memory together.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..cohort_schema import BASE_COLUMNS, STATUSES
from ..io import atomic_path, json_default
from .state import StateDB


def write_cohort_files(dbs: list[StateDB], output_dir: Path, stem: str, run: dict[str, Any],
                       config: dict[str, Any], extra: dict[str, Any] | None = None,
                       prefixes: list[str] | None = None) -> dict[str, int]:
    """Write ``<stem>.csv`` and ``<stem>.json`` from one or several (shards') databases; return counts.

    ``prefixes``: per database, put before each row's ``key`` (the folder of a nested output, as
    ``cac-mhub pacs`` writes one per study), so that ``<key>/qc.png`` is found from the top.
    """
    prefixes = prefixes or [""] * len(dbs)
    columns: set[str] = set()
    counts = {s: 0 for s in STATUSES}
    for db in dbs:
        for row, _ in db.series_rows():
            columns.update(row)
            status = row.get("status", "")
            counts[status] = counts.get(status, 0) + 1
    score_columns = sorted(columns - set(BASE_COLUMNS))
    with atomic_path(Path(output_dir) / f"{stem}.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=BASE_COLUMNS + score_columns, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            for db, prefix in zip(dbs, prefixes):
                writer.writerows({**row, "key": prefix + str(row.get("key", ""))} for row, _ in db.series_rows())
    head = {
        "software": {"name": "cac-mhub", "version": __version__},
        "run": run,
        "config": config,
        "counts": counts,
        **(extra or {}),
        "ignored_files": [{"path": p, "reason": r} for db in dbs for p, r in db.ignored()],
    }
    with atomic_path(Path(output_dir) / f"{stem}.json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            text = json.dumps(head, indent=2, default=json_default)
            handle.write(text[:-2] + ',\n  "series": [')  # the head without its closing brace
            first = True
            for db in dbs:
                for _, report in db.series_rows():
                    handle.write(("\n" if first else ",\n") + report)
                    first = False
            handle.write("\n  ]\n}\n")
    return counts


def reports(dbs: Iterable[StateDB]) -> Iterable[dict[str, Any]]:
    """Every series report (for modules that rebuild a cohort file of their own)."""
    for db in dbs:
        for _, report in db.series_rows():
            yield json.loads(report)


def state_databases(output_dir: Path) -> list[tuple[Path, str]]:
    """The state databases of an output folder with the key prefix of each: its own (and its
    shards'), then those of nested outputs one level down (``cac-mhub pacs``: one per study)."""
    from .state import STATE_NAME

    output_dir = Path(output_dir)
    found = [(p, "") for p in sorted(output_dir.glob(f"{STATE_NAME}*.sqlite"))]
    found += [(p, f"{p.parent.name}/") for p in sorted(output_dir.glob(f"*/{STATE_NAME}*.sqlite"))]
    return found


def rebuild(output_dir: Path, stem: str = "cohort") -> tuple[dict[str, int], list[Path]]:
    """Cohort files and dashboard.html of ``output_dir`` from every state database in it; returns
    the counts and the databases used (none: nothing written)."""
    found = state_databases(output_dir)
    if not found:
        return {}, []
    dbs = [StateDB(p, readonly=True) for p, _ in found]
    try:
        runs = [db.last_run() for db in dbs]
        names = [str(p.relative_to(output_dir)) for p, _ in found]
        run = {"id": ",".join(sorted({r.get("run_id", "") for r in runs})[:20]), "state": "rebuilt",
               "states": {n: r.get("state") for n, r in zip(names, runs)}}
        config = {"hashes": sorted({r.get("config_hash", "") for r in runs})}
        counts = write_cohort_files(dbs, output_dir, stem, run, config, {"state_databases": names},
                                    prefixes=[prefix for _, prefix in found])
    finally:
        for db in dbs:
            db.close()
    from ..report.dashboard import write_dashboard

    write_dashboard(output_dir, stem)
    return counts, [p for p, _ in found]
