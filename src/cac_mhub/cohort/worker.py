"""One unit of work (one study) through the per-series chain, in any process.

:func:`process_unit` is what a Dask worker (or the client itself, with one worker) runs. It
builds the chain once per process and configuration (the model is loaded once per worker),
runs it on the unit's files, moves each series' outputs into place as the chain does, and
returns everything the client records: per-series rows and reports, ignored files, and the
log lines (a worker's log goes back to the client's log file, in order).
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chain import Context, Instance, Module, RunError, one_line, run_chain, setup_modules
from ..output import OutputFolder
from .catalog import Unit, unit_paths
from .state import SeriesRecord

log = logging.getLogger("cac_mhub")

_CHAINS: dict[str, list[Module]] = {}


@dataclass(frozen=True)
class Job:
    """What every unit of one run shares (small and picklable: sent with every task)."""

    config: dict[str, Any]
    config_hash: str
    input_dir: str
    output_dir: str
    run_id: str
    shard: str = ""
    log_level: str = "info"


@dataclass
class UnitResult:
    unit: Unit
    status: str
    """done, or failed (the unit itself, or any of its series)."""
    reason: str = ""
    series: list[SeriesRecord] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    log: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""
    peak_rss_mb: float = 0.0
    lost: bool = False
    """True when the process working on the unit died: the client made this record."""


class _Capture(logging.Handler):
    """Holds a worker's log lines for the client's log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - a log line must never cost a unit
            pass


def chain_for(job: Job) -> list[Module]:
    """The set-up chain of ``job``'s configuration in this process (built on first use)."""
    modules = _CHAINS.get(job.config_hash)
    if modules is None:
        ctx = Context(Path(job.input_dir), Path(job.output_dir), job.config, job.config_hash)
        modules = setup_modules(job.config["execute"], ctx)
        _CHAINS.clear()
        _CHAINS[job.config_hash] = modules
    return modules


def process_unit(unit: Unit, job: Job, modules: list[Module] | None = None, capture: bool = True) -> UnitResult:
    """Run the chain over ``unit``; every series ends up recorded, whatever failed.

    :class:`RunError` (disk full, output not writable) goes to the caller: the run must stop.
    ``capture``: hold this process's log lines for the client (a Dask worker); False when the
    client runs the unit itself and logs directly.
    """
    start = time.perf_counter()
    handler = _Capture() if capture else None
    logger = logging.getLogger("cac_mhub")
    if handler is not None:
        logger.addHandler(handler)
        logger.setLevel(getattr(logging, job.log_level.upper(), logging.INFO))
    try:
        if unit.problem:
            log.error("%s: %s", unit.label, unit.problem)
            return UnitResult(unit, "failed", unit.problem)
        if modules is None:
            setup_lines = len(handler.lines) if handler is not None else 0
            modules = chain_for(job)
            if handler is not None:  # a worker's set-up: its warnings only (the client logged the rest)
                handler.lines[setup_lines:] = [(lv, m) for lv, m in handler.lines[setup_lines:] if lv >= logging.WARNING]
        result = _run(unit, job, modules)
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001 - a unit that cannot run is one failed record
        log.error("%s failed: %s", unit.label, one_line(error))
        log.debug("traceback", exc_info=True)
        result = UnitResult(unit, "failed", one_line(error))
    finally:
        if handler is not None:
            logger.removeHandler(handler)
    result.seconds = time.perf_counter() - start
    result.worker = f"{os.uname().nodename}:{os.getpid()}"
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if handler is not None:
        result.log = handler.lines
    return result


def _run(unit: Unit, job: Job, modules: list[Module]) -> UnitResult:
    root, output_dir = Path(job.input_dir), Path(job.output_dir)
    folder = OutputFolder(output_dir, root, job.run_id, job.shard).unit(unit.id)
    folder.prepare()
    ctx = Context(input_dir=root, output_dir=output_dir, config=job.config, config_hash=job.config_hash,
                  run_id=job.run_id, output=folder, unit_files=unit_paths(unit, root), cohort_files=False,
                  taken_uids=frozenset(unit.taken))
    try:
        instances = run_chain(modules, ctx)
    finally:
        folder.close()
    series = [record_of(instance, ctx) for instance in instances]
    failed = [s for s in series if s.status == "failed"]
    reason = f"{len(failed)} series failed" if failed else ""
    return UnitResult(unit, "failed" if failed else "done", reason, series,
                      ignored=list(ctx.shared.get("ignored_files", [])))


def lost_unit(unit: Unit, job: Job, modules: list[Module], reason: str) -> UnitResult:
    """The record of a unit whose process died (a Dask worker killed by its memory limit, a
    segfault, a kill): made in the client from the headers alone. Every series gets its row and
    report as the chain would give them: skipped with the selection's reason, or ``failed`` with
    ``reason``; nothing is decoded, so this cannot die the same way."""
    def fail_the_selected(ctx: Context) -> list[Instance]:
        instances = modules[0].create_instances(ctx)
        for instance in instances:
            if instance.alive:
                instance.status, instance.reason = "failed", reason
                log.error("%s failed: %s", instance.key, reason)
        return instances

    start = time.perf_counter()
    try:
        proxy = copy.copy(modules[0])
        proxy.create_instances = fail_the_selected  # type: ignore[method-assign]
        result = _run(unit, job, [proxy, *[m for m in modules[1:] if m.always_run]])
        result.status, result.reason = "failed", reason
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001 - the unit's headers cannot even be read here
        log.debug("lost unit %s", unit.label, exc_info=True)
        result = UnitResult(unit, "failed", f"{reason}; its series could not be listed ({one_line(error)})")
    if not result.series:  # no series to hang the failure on: one row for the unit itself
        key = f"unit-{unit.id}"
        row = {"key": key, "status": "failed", "reason": result.reason, "run_id": job.run_id}
        report = {"run": {"id": job.run_id}, "config": {"hash": job.config_hash}, "status": "failed",
                  "reason": result.reason, "series": {}, "input_folders": list(unit.folders)[:20]}
        result.series = [SeriesRecord(key=key, status="failed", reason=result.reason,
                                      input_folder=unit.folders[0] if unit.folders else "", row=row, report=report)]
    result.seconds = time.perf_counter() - start
    return result


def final_status(instance: Instance) -> str:
    if instance.status == "ok":
        return "scored" if instance.scores is not None else "processed"
    return instance.status


def record_of(instance: Instance, ctx: Context) -> SeriesRecord:
    """What the state database keeps of a finished instance: its cohort row and report."""
    status = final_status(instance)
    series = instance.series
    report = instance.report.get("_final")
    row = instance.report.get("_row")
    if report is None:  # no ReportExporter in the chain, or it could not run
        report = {"run": {"id": ctx.run_id}, "config": {"hash": ctx.config_hash}, "status": status,
                  "reason": instance.reason or ("" if status != "failed" else "no report was made"),
                  "series": {} if series is None else {"series_uid": series.uid, "study_uid": series.study_uid},
                  "warnings": list(instance.warnings), "timings_s": dict(instance.timings)}
    if row is None:
        row = {"key": instance.key, "status": status, "reason": report["reason"], "run_id": ctx.run_id}
    if report.get("status") != status:  # moving the outputs into place failed after the report
        report = {**report, "status": status, "reason": instance.reason}
        row = {**row, "status": status, "reason": instance.reason}
    folder = ""
    if series is not None and series.files:
        folder = os.path.relpath(Path(series.files[0]).parent, ctx.input_dir)
    return SeriesRecord(
        key=instance.key, status=status, reason=report.get("reason", ""),
        study_uid="" if series is None else str(series.study_uid),
        series_uid="" if series is None else str(series.uid),
        input_folder=folder, outputs=dict(instance.outputs), row=row, report=report)
