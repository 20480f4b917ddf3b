"""Pull -> score -> push, one study at a time, and the watch loop around it.

A study goes: series listed -> metadata fetched -> series selected (no pixels yet) -> chosen
series retrieved into a temporary cache -> ``cac-mhub run`` on that cache into
``<output>/<study key>/`` (the CLI, in process: the run's logic is never copied here) -> cache
removed -> each series' SEG and SR stored into the source study, confirmed by a query, written
in the ledger. A study that fails is one line in the log and the next study goes on; the ledger
lets a later run finish it: a study whose outputs exist is pushed again without re-scoring, and
an object the PACS confirmed is never sent again.

The study key is a short hash of the StudyInstanceUID (:func:`~.base.short_id`): it names the
study's output folder and its log lines, so logs carry no patient data.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..chain import ChainError, one_line
from ..dicom.scan import SelectionRules
from .base import Pacs, StudyQuery, short_id
from .config import PacsSettings
from .errors import PacsAuthError, PacsError, PacsRejected, PacsUnavailable
from .ledger import TERMINAL, Ledger
from .selection import choose

log = logging.getLogger("cac_mhub.pacs")

KINDS = ("seg", "sr")
"""The outputs pushed back, by their name in a report's ``outputs``."""


@dataclass
class Outcome:
    """What happened to one study (for the summary line, the exit code and the benchmark)."""

    key: str
    state: str
    """done, nothing, ignored (terminal) / scored (push pending) / failed / skipped (seen before)."""
    error: str = ""
    pushed: int = 0
    series: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    unavailable: bool = False
    """The failure was the PACS being unreachable (not the study's fault)."""


@dataclass
class PushItem:
    series_uid: str
    kind: str
    path: Path
    study_uid: str
    sop_uid: str
    object_series_uid: str


def score_with_cli(input_dir: Path, output_dir: Path, run_args: Sequence[str]) -> int:
    """``cac-mhub run`` on a folder, in process: the exit code (0 completed, 2 config, 3 failed, 4
    completed but some series failed because the process working on them died)."""
    from .. import cli

    return cli.main(["run", "--input", str(input_dir), "--output", str(output_dir), "--quiet", *run_args])


class RoundTrip:
    """Pull, score and push studies of one PACS endpoint into one output folder."""

    def __init__(self, pacs: Pacs, settings: PacsSettings, output: Path, rules: SelectionRules,
                 run_args: Sequence[str] = (), cache_dir: Path | None = None, push: bool = True,
                 scorer: Callable[[Path, Path, Sequence[str]], int] | None = None,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self.pacs, self.settings, self.output, self.rules = pacs, settings, Path(output), rules
        self.run_args = list(run_args)
        self.cache_dir = cache_dir
        self.push_enabled = push and settings.push.enabled
        self.scorer, self.sleep = scorer, sleep
        self.ledger = Ledger(self.output, f"{pacs.name}:{pacs.where}")

    # -- one study ---------------------------------------------------------------------------

    def process(self, study_uid: str) -> Outcome:
        """Bring one study as far as it can go; never raises for a PACS problem except refused credentials."""
        key = short_id(study_uid)
        row = self.ledger.study(study_uid)
        if row is not None and row["state"] in TERMINAL:
            return Outcome(key, "skipped")
        outcome = Outcome(key, "failed")
        try:
            if row is not None and row["state"] == "scored" and any((self.output / key).glob("*/report.json")):
                log.info("study %s: scored by an earlier run, pushing what is left", key)
            else:
                if not self._pull_and_score(study_uid, outcome):
                    return outcome
            if self.push_enabled:
                start = time.perf_counter()
                outcome.pushed = self.push_study(study_uid, self.output / key)
                outcome.timings["push"] = time.perf_counter() - start
                self.ledger.set_study(study_uid, key, "done")
                outcome.state = "done"
            else:
                outcome.state = "scored"
        except PacsAuthError:
            raise
        except PacsError as error:
            outcome.error, outcome.unavailable = str(error), isinstance(error, PacsUnavailable)
            state = "scored" if (self.ledger.study(study_uid) or {}).get("state") == "scored" else "failed"
            self.ledger.set_study(study_uid, key, state, str(error), attempt=not outcome.unavailable)
            outcome.state = state if state == "failed" else "push-failed"
            log.error("study %s: %s", key, error)
        return outcome

    def _pull_and_score(self, study_uid: str, outcome: Outcome) -> bool:
        key = outcome.key
        start = time.perf_counter()
        listed = self.pacs.find_series(study_uid, self.settings.modality)
        for series in listed:
            series.headers = self.pacs.series_headers(series)
        chosen, reasons = choose(listed, self.rules)
        if reasons:
            counts = Counter(reasons.values())
            log.info("study %s: %d series not retrieved: %s", key, len(reasons),
                     "; ".join(f"{n} x {why}" for why, n in counts.most_common()))
        if not chosen:
            log.info("study %s: no %s series qualifies for scoring (%d listed)", key, self.settings.modality, len(listed))
            self.ledger.set_study(study_uid, key, "nothing")
            outcome.state = "nothing"
            return False
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        cache = Path(tempfile.mkdtemp(prefix="cac-mhub-pacs-", dir=self.cache_dir))
        try:
            files = 0
            for index, series in enumerate(chosen):
                files += self.pacs.retrieve_series(series, cache / f"series{index:03d}")
            outcome.timings["pull"] = time.perf_counter() - start
            log.info("study %s: %d of %d series retrieved (%d files, %.1f s)", key, len(chosen), len(listed),
                     files, outcome.timings["pull"])
            start = time.perf_counter()
            code = (self.scorer or score_with_cli)(cache, self.output / key, self.run_args)
            outcome.timings["score"] = time.perf_counter() - start
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if code == 2:
            raise ChainError(f"scoring could not start (exit 2); see {self.output / key / 'cac-mhub.log'}")
        if code == 4:  # the run completed; the series a dying worker held are failed rows, the rest is pushed
            log.warning("study %s: some series failed because the process working on them died; see %s/cohort.csv",
                        key, key)
        elif code != 0:
            outcome.error = f"scoring did not complete (exit {code}); see {key}/cac-mhub.log"
            self.ledger.set_study(study_uid, key, "failed", outcome.error, attempt=True)
            log.error("study %s: %s", key, outcome.error)
            return False
        statuses = Counter(_report(p).get("status", "?") for p in (self.output / key).glob("*/report.json"))
        outcome.series = sum(statuses.values())
        log.info("study %s: scored in %.1f s (%s)", key, outcome.timings["score"],
                 ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
        self.ledger.set_study(study_uid, key, "scored")
        return True

    # -- push --------------------------------------------------------------------------------

    def push_study(self, study_uid: str, folder: Path) -> int:
        """Store the SEG and SR of every series under ``folder`` not stored before; the count sent."""
        items = pending_items(folder, self.ledger, study_uid)
        if not items:
            return 0
        self._store_with_retries(study_uid, items)
        return len(items)

    def _store_with_retries(self, study_uid: str, items: list[PushItem]) -> None:
        retries, backoff = self.settings.push.retries, self.settings.push.backoff_s
        for attempt in range(retries + 1):
            try:
                self.pacs.store([i.path for i in items], study_uid)
                if self.settings.push.confirm:
                    held = self.pacs.stored(study_uid, [(i.object_series_uid, i.sop_uid) for i in items])
                    missing = [i for i in items if i.sop_uid not in held]
                    if missing:
                        raise PacsRejected(f"{len(missing)} pushed object(s) not found in the study afterwards "
                                           f"at {self.pacs.where}")
                for item in items:
                    self.ledger.record_push(item.series_uid, item.kind, study_uid, item.sop_uid)
                log.info("study %s: stored %s", short_id(study_uid),
                         ", ".join(sorted(Counter(i.kind.upper() for i in items).elements())))
                return
            except PacsAuthError:
                raise
            except PacsError as error:
                if not error.retriable or attempt == retries:
                    raise
                wait = backoff * 2**attempt
                log.warning("study %s: push failed (%s); retry %d/%d in %.1f s", short_id(study_uid), error,
                            attempt + 1, retries, wait)
                self.sleep(wait)

    # -- many studies ------------------------------------------------------------------------

    def run(self, study_uids: Sequence[str], stop: threading.Event | None = None,
            stop_when_unavailable: bool = False) -> list[Outcome]:
        outcomes = []
        for uid in study_uids:
            if stop is not None and stop.is_set():
                break
            outcome = self.process(uid)
            outcomes.append(outcome)
            if outcome.unavailable and stop_when_unavailable:
                break
        if outcomes:
            self.overview()
        return outcomes

    def overview(self) -> None:
        """One cohort.csv and dashboard.html over every study scored into this output folder
        (each study has its own folder and state database); a failure only warns."""
        from ..cohort.files import rebuild

        try:
            rebuild(self.output)
        except Exception as error:  # noqa: BLE001 - the studies' own results stand
            log.warning("overview (cohort.csv, dashboard.html) not rebuilt: %s", one_line(error))


def pending_items(folder: Path, ledger: Ledger, study_uid: str | None = None) -> list[PushItem]:
    """The SEG/SR files of the series reports below ``folder`` that the ledger has not seen stored."""
    items = []
    reports = sorted(set(folder.glob("*/report.json")) | set(folder.glob("*/*/report.json")))
    for report_path in reports:
        if any(part.startswith(".") for part in report_path.relative_to(folder).parts):
            continue
        report = _report(report_path)
        series = report.get("series") or {}
        series_uid, source_study = series.get("series_uid"), series.get("study_uid")
        outputs = report.get("outputs") or {}
        if not series_uid or not source_study or (study_uid is not None and source_study != study_uid):
            continue
        for kind in KINDS:
            if not outputs.get(kind) or ledger.pushed(series_uid, kind):
                continue
            path = _output_path(report_path, outputs[kind])
            if path is None:
                continue
            sop_uid, object_series = _uids(path)
            items.append(PushItem(series_uid, kind, path, source_study, sop_uid, object_series))
    return items


def _output_path(report_path: Path, relative: str) -> Path | None:
    """A report's output path is relative to its run's output folder: the report's grandparent."""
    for base in (report_path.parent.parent, report_path.parent):
        candidate = base / relative
        if candidate.is_file():
            return candidate
    log.warning("%s: output %s not found; not pushed", report_path.parent.name, Path(relative).name)
    return None


def _uids(path: Path) -> tuple[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SeriesInstanceUID"])
    return str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)


def _report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- watch -------------------------------------------------------------------------------------


def window_query(base: StudyQuery, lookback_days: int, today: _dt.date | None = None) -> StudyQuery:
    """The query of one poll: the given date range, else the last ``lookback_days`` days."""
    if base.study_date or base.study_uids or base.accession_numbers:
        return base
    start = (today or _dt.date.today()) - _dt.timedelta(days=lookback_days)
    return StudyQuery(study_date=f"{start:%Y%m%d}-", patient_ids=base.patient_ids, modality=base.modality)


def watch(trip: RoundTrip, query: StudyQuery, stop: threading.Event, interval_s: float | None = None,
          max_polls: int | None = None, skip_existing: bool = False,
          on_poll: Callable[[int, list[Outcome]], None] | None = None) -> int:
    """Poll until ``stop`` is set (SIGTERM) or ``max_polls`` polls are done; the number of polls.

    Each poll lists the studies of the window, processes those the ledger has not finished (a
    study that failed for its own reasons ``max_attempts`` times is left alone) and records the
    poll. An unreachable PACS is one warning a poll and a growing wait (up to ``max_backoff_s``):
    a PACS restart is waited out. Refused credentials end the watch (they will not heal).
    """
    settings = trip.settings.watch
    interval = interval_s if interval_s is not None else settings.interval_s
    polls = failures = 0
    while not stop.is_set():
        wait = interval
        outcomes: list[Outcome] = []
        try:
            uids = trip.pacs.find_studies(window_query(query, settings.lookback_days))
            if skip_existing and trip.ledger.last_poll() is None:
                for uid in uids:
                    if trip.ledger.study(uid) is None:
                        trip.ledger.set_study(uid, short_id(uid), "ignored")
                log.info("watch: first poll, %d existing studies left alone (--skip-existing)", len(uids))
                uids = []
            todo = []
            for uid in uids:
                row = trip.ledger.study(uid)
                if row is None or (row["state"] not in TERMINAL and row["attempts"] < settings.max_attempts):
                    todo.append(uid)
            if todo:
                log.info("watch: %d new or unfinished studies", len(todo))
            outcomes = trip.run(todo, stop=stop, stop_when_unavailable=True)
            if any(o.unavailable for o in outcomes):
                raise PacsUnavailable("PACS went away during the poll")
            trip.ledger.record_poll()
            failures = 0
        except PacsAuthError:
            raise
        except PacsUnavailable as error:
            failures += 1
            wait = min(settings.max_backoff_s, interval * 2 ** min(failures, 16))
            log.warning("watch: %s; next poll in %.0f s", error, wait)
        except PacsError as error:
            log.error("watch: %s", error)
        polls += 1
        if on_poll is not None:
            on_poll(polls, outcomes)
        if max_polls is not None and polls >= max_polls:
            break
        stop.wait(wait)
    return polls
