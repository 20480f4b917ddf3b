"""Score tables for ``cac-mhub compare``: read a CSV or an output folder, pair two score columns by id.

A table is a CSV file (any columns; ours is ``cohort.csv``) or a cac-mhub output folder (its
``cohort.csv``). Rows of our cohort whose status is not ``scored`` have no score and count as
missing; so do empty or non-numeric cells in any table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..formatting import number

COHORT_CSV = "cohort.csv"
#: Defaults for our own cohort files: one row per series, keyed by the series folder name.
COHORT_ID, COHORT_SCORE = "key", "agatston"
ARTERIES = ("LM", "LAD", "LCX", "RCA")


class TableError(ValueError):
    """A table that cannot be read or lacks a column: bad input, exit code 2."""


def table_path(path: Path) -> Path:
    """The CSV behind ``path``: the file itself, or an output folder's cohort.csv."""
    path = Path(path)
    if path.is_dir():
        path = path / COHORT_CSV
    if not path.is_file():
        raise TableError(f"no such table: {path}")
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows of a CSV as dicts (utf-8, a leading BOM tolerated)."""
    try:
        with open(table_path(path), newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TableError(f"cannot read {path}: {error}") from None
    return rows


def scores(rows: list[dict[str, str]], id_column: str, column: str, name: str) -> dict[str, float | None]:
    """id -> score of one column; rows of a cohort that were not scored give None."""
    if rows and id_column not in rows[0]:
        raise TableError(f"{name}: no id column {id_column!r} (columns: {', '.join(rows[0])})")
    if rows and column not in rows[0]:
        raise TableError(f"{name}: no score column {column!r} (columns: {', '.join(rows[0])})")
    out: dict[str, float | None] = {}
    for row in rows:
        key = str(row[id_column]).strip()
        if not key:
            continue
        if key in out:
            raise TableError(f"{name}: id {key!r} appears twice in column {id_column!r}")
        scored = row.get("status", "scored") in ("scored", "", None)
        out[key] = number(row[column]) if scored else None
    return out


@dataclass
class Paired:
    """Two score columns paired by id: the matched scores and what could not be matched."""

    ids: list[str]
    reference: list[float]
    test: list[float]
    only_reference: list[str] = field(default_factory=list)
    only_test: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Ids on both sides where one side has no score (not scored, empty, not a number)."""

    def counts(self) -> dict[str, int]:
        return {"n": len(self.ids), "only_reference": len(self.only_reference),
                "only_test": len(self.only_test), "missing_score": len(self.missing)}


def pair(reference: dict[str, float | None], test: dict[str, float | None]) -> Paired:
    """Match two id -> score maps; ids in the reference's order."""
    out = Paired([], [], [])
    for key, value in reference.items():
        if key not in test:
            out.only_reference.append(key)
        elif value is None or test[key] is None:
            out.missing.append(key)
        else:
            out.ids.append(key)
            out.reference.append(value)
            out.test.append(test[key])  # type: ignore[arg-type]
    out.only_test = [key for key in test if key not in reference]
    return out


def artery_columns(reference_rows: list[dict[str, str]], test_rows: list[dict[str, str]],
                   reference_column: str, test_column: str) -> dict[str, tuple[str, str]]:
    """Per-artery column pairs that both sides have: ``<column>_<artery>`` (our cohort's
    ``agatston_LAD``), e.g. ``CAC_manual_LAD`` beside ``CAC_AI_LAD`` in a single table."""
    have_reference = set(reference_rows[0]) if reference_rows else set()
    have_test = set(test_rows[0]) if test_rows else set()
    out = {}
    for artery in ARTERIES:
        pair_ = (f"{reference_column}_{artery}", f"{test_column}_{artery}")
        if pair_[0] in have_reference and pair_[1] in have_test:
            out[artery] = pair_
    return out
