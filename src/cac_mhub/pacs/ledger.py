"""The PACS ledger, ``pacs-state.sqlite`` in the output folder: what was seen, scored and pushed.

Its own small SQLite file, beside (never inside) the run's state, so that the PACS round trip
and ``cac-mhub run`` never write the same database. It is what makes re-runs safe:

* ``studies``: one row per (endpoint, study): ``failed`` (pull or scoring failed: tried again),
  ``scored`` (outputs on disk, push pending: pushed again without re-scoring), ``done``,
  ``nothing`` (no series qualified), ``ignored`` (there before ``watch --skip-existing``).
* ``pushes``: one row per (endpoint, source series, kind) once the PACS confirmed it holds the
  object: a series whose SEG or SR was stored is never pushed twice.
* ``polls``: when ``watch`` last polled each endpoint successfully.

Only UIDs, states and one-line errors are kept; no names or patient IDs.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

LEDGER_NAME = "pacs-state.sqlite"
TERMINAL = ("done", "nothing", "ignored")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    endpoint TEXT NOT NULL, study_uid TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', updated TEXT NOT NULL,
    PRIMARY KEY (endpoint, study_uid));
CREATE TABLE IF NOT EXISTS pushes (
    endpoint TEXT NOT NULL, series_uid TEXT NOT NULL, kind TEXT NOT NULL, study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL, stored TEXT NOT NULL,
    PRIMARY KEY (endpoint, series_uid, kind));
CREATE TABLE IF NOT EXISTS polls (
    endpoint TEXT PRIMARY KEY, last_poll TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 0);
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Ledger:
    """The ledger of one output folder, for one endpoint (``dicomweb:URL`` or ``dimse:AET@host:port``)."""

    def __init__(self, folder: Path, endpoint: str) -> None:
        self.path = Path(folder) / LEDGER_NAME
        self.endpoint = endpoint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> Any:
        connection = sqlite3.connect(self.path, timeout=30)
        return _Transaction(connection)

    # -- studies -----------------------------------------------------------------------------

    def study(self, study_uid: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT key, state, attempts, error FROM studies WHERE endpoint=? AND study_uid=?",
                             (self.endpoint, study_uid)).fetchone()
        return None if row is None else {"key": row[0], "state": row[1], "attempts": row[2], "error": row[3]}

    def set_study(self, study_uid: str, key: str, state: str, error: str = "", attempt: bool = False) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO studies (endpoint, study_uid, key, state, attempts, error, updated) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (endpoint, study_uid) DO UPDATE SET state=excluded.state, error=excluded.error, "
                "updated=excluded.updated, attempts=studies.attempts + ?",
                (self.endpoint, study_uid, key, state, int(attempt), error, _now(), int(attempt)))

    def studies(self, state: str | None = None) -> list[tuple[str, str, str]]:
        """(study uid, key, state) rows, optionally of one state."""
        with self._db() as db:
            sql = "SELECT study_uid, key, state FROM studies WHERE endpoint=?"
            args: tuple[Any, ...] = (self.endpoint,)
            if state:
                sql, args = sql + " AND state=?", args + (state,)
            return [tuple(r) for r in db.execute(sql + " ORDER BY updated, study_uid", args)]

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM studies WHERE endpoint=? GROUP BY state",
                                   (self.endpoint,)).fetchall())

    # -- pushes ------------------------------------------------------------------------------

    def pushed(self, series_uid: str, kind: str) -> str | None:
        """The SOPInstanceUID stored for this series' output ``kind`` (seg/sr), or None."""
        with self._db() as db:
            row = db.execute("SELECT sop_uid FROM pushes WHERE endpoint=? AND series_uid=? AND kind=?",
                             (self.endpoint, series_uid, kind)).fetchone()
        return None if row is None else row[0]

    def record_push(self, series_uid: str, kind: str, study_uid: str, sop_uid: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO pushes VALUES (?,?,?,?,?,?)",
                       (self.endpoint, series_uid, kind, study_uid, sop_uid, _now()))

    def push_count(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM pushes WHERE endpoint=?", (self.endpoint,)).fetchone()[0])

    # -- polls -------------------------------------------------------------------------------

    def last_poll(self) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT last_poll FROM polls WHERE endpoint=?", (self.endpoint,)).fetchone()
        return None if row is None else row[0]

    def record_poll(self) -> None:
        with self._db() as db:
            db.execute("INSERT INTO polls VALUES (?,?,1) ON CONFLICT (endpoint) DO UPDATE SET "
                       "last_poll=excluded.last_poll, count=polls.count + 1", (self.endpoint, _now()))


class _Transaction:
    """``with``: one connection, committed on success, rolled back on error, always closed."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, kind: Any, *_: Any) -> None:
        with closing(self.connection):
            if kind is None:
                self.connection.commit()
            else:
                self.connection.rollback()


def iter_rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """Every study row of a ledger file (for ``cac-mhub pacs status``)."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        yield from db.execute("SELECT endpoint, key, state, attempts, error, updated FROM studies ORDER BY updated")
