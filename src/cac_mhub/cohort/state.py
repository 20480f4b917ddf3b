"""The state database: the cohort's memory, in the output folder (SQLite, owned by the client).

Every unit of work (one study's files) and every series it held is recorded once its outputs are
in place, in one transaction. A run that is killed (``kill -9``, power loss) loses at most the
units in flight: their outputs were either moved into place whole or not at all (see
:mod:`cac_mhub.output`), and a unit without its record is simply done again. Re-running the same
command skips units recorded as done with the same input fingerprint, config hash and model
hashes; ``retry_failed`` redoes those that failed. Cohort files are rebuilt from here
(:mod:`cac_mhub.cohort.files`), so they can always be made again, also after a crash.

WAL journal with ``synchronous=FULL``: a committed record survives power loss, and readers (a
dashboard, ``cac-mhub cohort``) never block the run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..io import json_default
from .catalog import Unit

STATE_NAME = "cac-mhub-state"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, state TEXT, stopped TEXT,
    config_name TEXT, config_hash TEXT, models_hash TEXT, shard TEXT, workers INTEGER);
CREATE TABLE IF NOT EXISTS units (
    unit_id TEXT PRIMARY KEY, folders TEXT, fingerprint TEXT, config_hash TEXT, models_hash TEXT,
    status TEXT, reason TEXT, run_id TEXT, finished TEXT, seconds REAL, worker TEXT, peak_rss_mb REAL);
CREATE TABLE IF NOT EXISTS series (
    key TEXT PRIMARY KEY, unit_id TEXT, status TEXT, reason TEXT, study_uid TEXT, series_uid TEXT,
    input_folder TEXT, config_hash TEXT, models_hash TEXT, run_id TEXT, finished TEXT,
    outputs TEXT, row TEXT, report TEXT);
CREATE INDEX IF NOT EXISTS series_by_unit ON series(unit_id);
CREATE INDEX IF NOT EXISTS series_by_uid ON series(series_uid);
CREATE TABLE IF NOT EXISTS ignored (unit_id TEXT, path TEXT, reason TEXT);
CREATE TABLE IF NOT EXISTS started (unit_id TEXT PRIMARY KEY, fingerprint TEXT, deaths INTEGER);
CREATE INDEX IF NOT EXISTS ignored_by_unit ON ignored(unit_id);
"""


def state_file(output_dir: Path, tag: str = "") -> Path:
    """``cac-mhub-state.sqlite``, or ``cac-mhub-state.<tag>.sqlite`` for a shard."""
    return Path(output_dir) / (f"{STATE_NAME}.{tag}.sqlite" if tag else f"{STATE_NAME}.sqlite")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class SeriesRecord:
    """One series as a worker finished it (the cohort row and the report are JSON-ready dicts)."""

    key: str
    status: str
    reason: str
    study_uid: str = ""
    series_uid: str = ""
    input_folder: str = ""
    outputs: dict[str, str] | None = None
    row: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


class StateDB:
    """Read and write the state database of one output folder (one client process at a time)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, run_id: str, config_name: str, config_hash: str, models_hash: str,
                  shard: str = "", workers: int = 1) -> None:
        self.db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (run_id, now(), None, "running", None, config_name, config_hash, models_hash, shard, workers))

    def end_run(self, run_id: str, state: str, stopped: str = "") -> None:
        self.db.execute("UPDATE runs SET finished=?, state=?, stopped=? WHERE run_id=?",
                        (now(), state, stopped or None, run_id))

    def run(self, run_id: str) -> dict[str, Any]:
        cursor = self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,))
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        return dict(zip(names, row)) if row else {}

    def last_run(self) -> dict[str, Any]:
        cursor = self.db.execute("SELECT * FROM runs ORDER BY started DESC, rowid DESC LIMIT 1")
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        return dict(zip(names, row)) if row else {}

    # --- units --------------------------------------------------------------------------------

    def is_done(self, unit: Unit, config_hash: str, models_hash: str, retry_failed: bool,
                output_dir: Path | None = None) -> bool:
        """True when ``unit`` was finished with this input, config and models (and, unless
        ``retry_failed``, also when it failed there); its reports must still be on disk."""
        found = self.db.execute(
            "SELECT status FROM units WHERE unit_id=? AND fingerprint=? AND config_hash=? AND models_hash=?",
            (unit.id, unit.fingerprint, config_hash, models_hash)).fetchone()
        if found is None or (found[0] != "done" and retry_failed):
            return False
        if output_dir is not None:
            for (outputs,) in self.db.execute("SELECT outputs FROM series WHERE unit_id=?", (unit.id,)):
                report = json.loads(outputs or "{}").get("report")
                if report and not (Path(output_dir) / report).is_file():
                    return False  # the user removed a series folder: make it again
        return True

    def start(self, unit: Unit) -> None:
        """Mark ``unit`` in flight in this process: if the process dies, the next run knows."""
        self.db.execute(
            "INSERT INTO started VALUES (?,?,0) ON CONFLICT(unit_id) DO UPDATE SET "
            "deaths = CASE WHEN fingerprint = excluded.fingerprint THEN deaths ELSE 0 END, "
            "fingerprint = excluded.fingerprint", (unit.id, unit.fingerprint))
        self.db.execute("UPDATE started SET deaths = deaths + 1 WHERE unit_id=?", (unit.id,))

    def unstart(self, unit: Unit) -> None:
        """``unit`` was stopped on purpose (Ctrl-C, a full disk): not a death of its process."""
        self.db.execute("UPDATE started SET deaths = MAX(deaths - 1, 0) WHERE unit_id=?", (unit.id,))

    def deaths(self, unit: Unit) -> int:
        """How many runs died while their process worked on ``unit`` (with these input files)."""
        found = self.db.execute("SELECT deaths FROM started WHERE unit_id=? AND fingerprint=?",
                                (unit.id, unit.fingerprint)).fetchone()
        return int(found[0]) if found else 0

    def record(self, unit: Unit, status: str, reason: str, series: list[SeriesRecord],
               ignored: list[tuple[str, str]], config_hash: str, models_hash: str, run_id: str,
               seconds: float = 0.0, worker: str = "", peak_rss_mb: float = 0.0) -> list[str]:
        """Replace what is known of ``unit`` in one transaction; return the keys of series that
        another unit had recorded (the same series found in two places)."""
        moved = []
        finished = now()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM series WHERE unit_id=?", (unit.id,))
            self.db.execute("DELETE FROM ignored WHERE unit_id=?", (unit.id,))
            self.db.execute("DELETE FROM started WHERE unit_id=?", (unit.id,))
            for item in series:
                other = self.db.execute("SELECT unit_id FROM series WHERE key=?", (item.key,)).fetchone()
                if other is not None and other[0] != unit.id:
                    moved.append(item.key)
                self.db.execute(
                    "INSERT OR REPLACE INTO series VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (item.key, unit.id, item.status, item.reason, item.study_uid, item.series_uid,
                     item.input_folder, config_hash, models_hash, run_id, finished,
                     json.dumps(item.outputs or {}), json.dumps(item.row or {}, default=json_default),
                     json.dumps(item.report or {}, default=json_default)))
            self.db.executemany("INSERT INTO ignored VALUES (?,?,?)", [(unit.id, p, r) for p, r in ignored])
            self.db.execute(
                "INSERT OR REPLACE INTO units VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (unit.id, json.dumps(list(unit.folders)), unit.fingerprint, config_hash, models_hash, status,
                 reason, run_id, finished, round(seconds, 3), worker, round(peak_rss_mb, 1)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return moved

    def replace_ignored(self, owner: str, ignored: list[tuple[str, str]]) -> None:
        """Set the ignored entries found outside any unit (the catalog's: unreadable folders)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM ignored WHERE unit_id=?", (owner,))
        self.db.executemany("INSERT INTO ignored VALUES (?,?,?)", [(owner, p, r) for p, r in ignored])
        self.db.execute("COMMIT")

    def forget_units_except(self, keep: set[str]) -> int:
        """Remove the records of units that are no longer in the input; return how many went."""
        gone = [u for (u,) in self.db.execute("SELECT unit_id FROM units") if u not in keep]
        self.db.execute("BEGIN IMMEDIATE")
        for unit_id in gone:
            self.db.execute("DELETE FROM series WHERE unit_id=?", (unit_id,))
            self.db.execute("DELETE FROM ignored WHERE unit_id=?", (unit_id,))
            self.db.execute("DELETE FROM started WHERE unit_id=?", (unit_id,))
            self.db.execute("DELETE FROM units WHERE unit_id=?", (unit_id,))
        self.db.execute("COMMIT")
        return len(gone)

    def add_warning(self, key: str, message: str, unless: str = "") -> bool:
        """Append ``message`` to the warnings of series ``key`` (row and report), unless a warning
        starting with ``unless`` (or the message itself) is there; True when it was added."""
        found = self.db.execute("SELECT row, report FROM series WHERE key=?", (key,)).fetchone()
        if found is None:
            return False
        row, report = json.loads(found[0] or "{}"), json.loads(found[1] or "{}")
        warnings = list(report.get("warnings") or [])
        if message in warnings or (unless and any(str(w).startswith(unless) for w in warnings)):
            return False
        warnings.append(message)
        report["warnings"] = warnings
        row["warnings"] = " | ".join(str(w) for w in warnings)
        self.db.execute("UPDATE series SET row=?, report=? WHERE key=?",
                        (json.dumps(row, default=json_default), json.dumps(report, default=json_default), key))
        return True

    # --- reading ------------------------------------------------------------------------------

    def series_with_uid(self, series_uid: str) -> list[str]:
        """Keys of the recorded series with this SeriesInstanceUID."""
        return [k for (k,) in self.db.execute("SELECT key FROM series WHERE series_uid=? ORDER BY key", (series_uid,))]

    def outputs(self, key: str) -> dict[str, str]:
        found = self.db.execute("SELECT outputs FROM series WHERE key=?", (key,)).fetchone()
        return json.loads(found[0] or "{}") if found else {}

    def keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM series")}

    def kept_series(self, run_id: str) -> int:
        """Series recorded by earlier runs (kept, not redone, by ``run_id``)."""
        return self.db.execute("SELECT COUNT(*) FROM series WHERE run_id != ?", (run_id,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM series GROUP BY status").fetchall())

    def series_rows(self) -> Iterator[tuple[dict[str, Any], str]]:
        """(cohort row, report JSON text) of every series, in input order."""
        query = "SELECT row, report FROM series ORDER BY input_folder, study_uid, key"
        for row, report in self.db.execute(query):
            yield json.loads(row), report

    def ignored(self) -> Iterator[tuple[str, str]]:
        yield from self.db.execute("SELECT path, reason FROM ignored ORDER BY path")

    def unit_stats(self) -> dict[str, Any]:
        found = self.db.execute(
            "SELECT COUNT(*), SUM(status='failed'), MAX(peak_rss_mb), SUM(seconds) FROM units").fetchone()
        return {"units": found[0] or 0, "failed_units": found[1] or 0, "peak_rss_mb_per_worker": found[2] or 0.0,
                "worker_seconds": round(found[3] or 0.0, 1)}
