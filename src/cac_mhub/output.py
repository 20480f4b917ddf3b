"""The output folder belongs to one run at a time, and a run replaces what an earlier one left.

* A run locks the output folder (``flock`` on the folder itself: a second run into it stops with
  exit 2) and, before any work, removes what a killed run left: temporaries (``.tmp-*``, here
  and in the series folders), its work folder, half-swapped series folders.
* Each series is built in a private work folder, ``.cac-mhub-work/<key>/``, and moved onto
  ``<key>/`` as a whole when the series is finished: no file of an earlier run stays beside the
  new ones, and a killed run leaves every series folder either old or new, never mixed.
* Every series folder the run moves into place carries a ``.cac-mhub`` marker (run id); at the
  end of a complete run, marked folders of series no longer in the input are removed. Folders
  without the marker (the user's own) are never touched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

from .io import TMP_PREFIX

log = logging.getLogger("cac_mhub")

WORK = ".cac-mhub-work"
"""Where series folders are built before they are moved into place."""
OLD_PREFIX = ".cac-mhub-old-"
"""An earlier series folder on its way out (renamed beside the new one, then removed)."""
MARKER = ".cac-mhub"
"""In every series folder a run wrote: it may be replaced or removed by a later run."""
LOCK_PREFIX = ".cac-mhub-lock."
"""Lock file of one shard (a whole run locks the folder itself)."""
PROBE_PREFIX = ".write-test-"
"""The write probe of :func:`cac_mhub.cli.check_folders`."""


class OutputBusy(Exception):
    """Another run holds the output folder."""


def new_run_id() -> str:
    """UTC start time plus a random part: sortable, unique, safe as a file name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class OutputFolder:
    """The output folder of one run: lock, clean-up, series swap, stale series."""

    def __init__(self, root: Path, input_dir: Path, run_id: str | None = None, shard: str = "",
                 staging: Path | None = None) -> None:
        self.root = Path(root)
        self.input_dir = Path(input_dir)
        self.run_id = run_id or new_run_id()
        self.shard = shard
        """Set for one shard of a split cohort: shards share the output folder, each locks and
        cleans only its own part."""
        self._staging = staging
        self._lock: int | None = None
        self.cleaned = 0
        """How many leftovers of earlier runs :meth:`open` removed."""

    @property
    def staging(self) -> Path:
        """The output folder modules see while a series is built (``<staging>/<key>/...``)."""
        if self._staging is not None:
            return self._staging
        return self.root / WORK / self.shard if self.shard else self.root / WORK

    def unit(self, name: str) -> OutputFolder:
        """The folder a worker builds one unit's series in (under this run's work folder); not
        locked: the run that opened this folder holds the lock."""
        return OutputFolder(self.root, self.input_dir, self.run_id, self.shard, self.staging / name)

    def prepare(self) -> None:
        """An empty staging folder (a retried unit may find its earlier attempt's)."""
        remove(self.staging)
        self.staging.mkdir(parents=True)

    def open(self) -> None:
        """Lock the folder and remove what an interrupted run left; raise OutputBusy or OSError."""
        if self.shard:
            fd = os.open(self.root / f"{LOCK_PREFIX}{self.shard}", os.O_RDWR | os.O_CREAT, 0o644)
        else:
            fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            what = f"shard {self.shard} of " if self.shard else ""
            raise OutputBusy(f"another cac-mhub run is using {what}the output folder {self.root}") from None
        except OSError:  # no locks on this file system: go on unlocked
            log.debug("output folder not locked (flock unsupported)")
        self._lock = fd
        # shards run side by side: each removes only its own work folder
        self.cleaned = 0 if self.shard else self.clean()
        remove(self.staging)
        self.staging.mkdir(parents=True)

    def clean(self) -> int:
        """Remove temporaries of earlier runs; return how many went (what cannot go waits for the next run)."""
        doomed = [p for p in self.root.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX, PROBE_PREFIX))]
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".") \
                    and not _contains(folder, self.input_dir):
                doomed += [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
        removed = 0
        for path in doomed:
            try:
                remove(path)
                removed += 1
            except OSError:
                pass
        return removed

    def close(self) -> None:
        """Remove the work folder and release the lock (errors ignored: the next run cleans up)."""
        try:
            remove(self.staging)
        except OSError:
            pass
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def commit(self, key: str) -> None:
        """Move the series' built folder onto ``<key>/``, replacing what was there as a whole.

        Nothing built (no report could be written): the earlier folder is removed all the same,
        so that it cannot pass for this run's result.
        """
        built, target = self.staging / key, self.root / key
        if _contains(target, self.input_dir):
            raise PermissionError(errno.EACCES, "holds the input folder; not replaced", str(target))
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise FileExistsError(errno.EEXIST, "not a series folder; not replaced", str(target))
        if built.is_dir():
            (built / MARKER).write_text(json.dumps({"run_id": self.run_id}) + "\n", encoding="utf-8")
        old = None
        if target.exists():
            old = self.root / f"{OLD_PREFIX}{secrets.token_hex(4)}"
            os.rename(target, old)  # same parent: works even when the old folder is read-only
        if built.is_dir():
            try:
                os.rename(built, target)
            except OSError:
                if old is not None:
                    os.rename(old, target)
                raise
        if old is not None:
            try:
                remove(old)
            except OSError as error:
                log.warning("%s: the earlier folder could not be removed (%s); the next run tries again",
                            key, error.strerror or error)

    def remove_stale(self, keys: set[str]) -> list[str]:
        """Remove marked series folders that this run did not produce; return their names."""
        removed = []
        for folder in sorted(self.root.iterdir()):
            if folder.name in keys or folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
                continue
            if not (folder / MARKER).is_file() or _contains(folder, self.input_dir):
                continue
            try:
                remove(folder)
                removed.append(folder.name)
            except OSError as error:
                log.warning("%s: series no longer in the input, but its folder could not be removed (%s)",
                            folder.name, error.strerror or error)
        if removed:
            log.info("removed %d series folder(s) of series no longer in the input", len(removed))
        return removed


def remove(path: Path) -> None:
    """Remove a file, link or folder tree; read-only folders of our own are made writable first."""
    if not (path.is_dir() and not path.is_symlink()):
        if path.exists() or path.is_symlink():
            path.unlink()
        return
    try:
        shutil.rmtree(path)
    except OSError:
        _make_writable(path)
        shutil.rmtree(path)


def _make_writable(folder: Path) -> None:
    os.chmod(folder, stat.S_IRWXU | os.stat(folder).st_mode)
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            sub = os.path.join(root, name)
            if not os.path.islink(sub):
                os.chmod(sub, stat.S_IRWXU | os.stat(sub).st_mode)


def _contains(folder: Path, path: Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
