"""The cohort engine: the catalog streams units, workers run the chain, the client records.

The client process (``cac-mhub run``) owns the output folder's lock and the state database.
The catalog walks the input in a background thread while units are worked on; a unit already
done with the same input, config and models is skipped. Units go to the chain in this process
(one worker), to a Dask LocalCluster (``--workers N``), or to a running Dask scheduler
(``--scheduler tcp://host:8786``), at most a few per worker ahead of the results, so memory
stays bounded however large the cohort. Workers move their series' outputs into the output
folder themselves; only the client writes the database and the cohort files.
"""

from __future__ import annotations

import json
import logging
import os
from itertools import chain, islice
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..chain import Context, Module, RunError, models_hash, one_line
from ..io import atomic_write_text, json_default
from .catalog import CatalogStats, Unit, in_shard, iter_units, manifest_units, whole_input_unit
from .files import reports, write_cohort_files
from .state import StateDB, now, state_file
from .worker import Job, UnitResult, lost_unit, process_unit

log = logging.getLogger("cac_mhub")

#: Below this many units of work a run stays in this process: starting workers costs more.
MIN_UNITS_FOR_WORKERS = 4
#: Cohort files are rewritten at most this often while a run goes (and always at its end).
COHORT_EVERY_S = 30.0
#: Environment of LocalCluster workers: one BLAS/OpenMP thread each (the workers are the
#: parallelism), but without Dask's MALLOC_TRIM_THRESHOLD_: setting it switches off glibc's
#: adaptive mmap threshold, and every large array then costs fresh pages (HeartLocator and the
#: model ran 30 % slower per series in a worker; bench_cohort.py).
WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
#: Memory a worker is given by default (the default model's peak is about 2 GiB; docs/cohorts.md).
WORKER_MEMORY_GIB = 4.0
#: Workers a unit may kill before it is recorded as failed (the engine's own LocalCluster; Dask
#: reschedules a unit whose worker died, and a series that needs more memory than a worker has
#: kills every worker it is given).
ALLOWED_WORKER_DEATHS = 3
#: Runs in a row that died (killed, out of memory, a segfault) while this process worked on the
#: same unit, before that unit is recorded as failed instead of being tried again.
MAX_PROCESS_DEATHS = 2


@dataclass
class CohortOptions:
    workers: int = 1
    scheduler: str | None = None
    shard: tuple[int, int] | None = None
    manifest: Path | None = None
    retry_failed: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    memory_per_worker: str = "auto"

    @property
    def shard_tag(self) -> str:
        return f"shard-{self.shard[0]}-of-{self.shard[1]}" if self.shard else ""


@dataclass
class Tally:
    """Counts for the progress line and the closing log line."""

    units: int = 0
    kept: int = 0
    series: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    lost: int = 0
    """Units whose process died (worker killed by memory, a segfault, ...): their series failed."""

    def add(self, result: UnitResult) -> None:
        self.units += 1
        self.series += len(result.series)
        self.failed += sum(s.status == "failed" for s in result.series) + (not result.series and result.status == "failed")
        self.skipped += sum(s.status == "skipped" for s in result.series)
        self.lost += result.lost

    def rate(self) -> float:
        """Series per hour of this run's own work."""
        elapsed = time.monotonic() - self.started
        return self.series / elapsed * 3600 if elapsed > 0 else 0.0


def default_workers() -> int:
    """Workers for this machine: ``$CAC_MHUB_WORKERS``, else one per core as memory allows."""
    if os.environ.get("CAC_MHUB_WORKERS"):
        return max(1, int(os.environ["CAC_MHUB_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = 8.0
    return max(1, min(cores, int(memory // WORKER_MEMORY_GIB), 16))


def catalog(ctx: Context, modules: list[Module], opts: CohortOptions, stats: CatalogStats) -> Iterator[Unit]:
    """The units of this run, in input order (only this shard's)."""
    if opts.manifest is not None:
        units: Iterable[Unit] = manifest_units(opts.manifest, ctx.input_dir, stats)
    elif any(m.whole_input for m in modules):
        stats.units = 1
        units = [whole_input_unit(ctx.input_dir, exclude=[ctx.output_dir])]
        stats.done = True
    else:
        units = iter_units(ctx.input_dir, exclude=[ctx.output_dir], stats=stats)
    return (u for u in units if in_shard(u, opts.shard))


def background(items: Iterator[Unit], size: int = 256) -> Iterator[Unit]:
    """Iterate ``items`` in a thread (the folder walk goes on while units are worked on)."""
    box: queue.Queue = queue.Queue(maxsize=size)
    end = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer
            failure.append(error)
        finally:
            while not stop.is_set():  # a consumer that stopped early takes nothing more
                try:
                    box.put(end, timeout=0.2)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=produce, name="cac-mhub-catalog", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is end:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()


class InProcess:
    """Units run one after another in this process, with the client's set-up chain.

    Each unit is marked in the state database before it starts and unmarked when its record is
    written: a unit that was in flight when this process died (out of memory, a segfault, a
    kill) twice in a row is recorded as failed by the next run instead of killing it again.
    """

    def __init__(self, modules: list[Module], job: Job, db: StateDB | None = None, retry: bool = False) -> None:
        self.modules, self.job, self.db, self.retry = modules, job, db, retry
        self.workers = 1
        self.current: Unit | None = None

    def results(self, units: Iterator[Unit]) -> Iterator[UnitResult]:
        for unit in units:
            deaths = self.db.deaths(unit) if self.db is not None and not self.retry else 0
            if deaths >= MAX_PROCESS_DEATHS:
                reason = (f"the process working on it died {deaths} times (out of memory, a crash such as a "
                          "segfault, or killed); not tried again (--retry-failed does)")
                log.error("%s failed: %s", unit.label, reason)
                result = lost_unit(unit, self.job, self.modules, reason)
                result.lost = True
                yield result
                continue
            if self.db is not None:
                self.db.start(unit)
            self.current = unit
            result = process_unit(unit, self.job, self.modules, capture=False)
            self.current = None
            yield result

    def close(self) -> None:
        if self.db is not None and self.current is not None:
            self.db.unstart(self.current)  # stopped on purpose (Ctrl-C, disk full): not a death


class OnDask:
    """Units as tasks on a Dask cluster (a LocalCluster of processes, or a scheduler's)."""

    def __init__(self, job: Job, opts: CohortOptions, modules: list[Module] | None = None) -> None:
        import dask
        from distributed import Client

        self.job, self.opts = job, opts
        self.modules = modules or []
        """The client's set-up chain: it records the series of a unit whose workers died."""
        self.cluster = None
        self.scratch = ""
        if opts.scheduler:
            self.client = Client(opts.scheduler, timeout=60)
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
            log.info("Dask scheduler %s: %d worker(s)", opts.scheduler, self.workers)
        else:
            self.scratch = tempfile.mkdtemp(prefix="cac-mhub-dask-")
            # one unit at a time on each worker: a unit queued behind one that kills its worker
            # would count that death as its own (Dask's default saturation sends two)
            with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON,
                                  "distributed.scheduler.allowed-failures": ALLOWED_WORKER_DEATHS - 1,
                                  "distributed.scheduler.worker-saturation": 1.0}):
                self.cluster = self._local(opts)
            self.client = Client(self.cluster)
            self.workers = opts.workers
            log.info("Dask LocalCluster: %d worker process(es), %s memory each", opts.workers,
                     opts.memory_per_worker if opts.memory_per_worker != "auto" else "an equal share of")

    def _local(self, opts: CohortOptions) -> Any:
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=opts.workers, threads_per_worker=1, processes=True, dashboard_address=None,
            memory_limit=_memory_limit(opts.memory_per_worker), resources=opts.resources or None,
            silence_logs=logging.CRITICAL, local_directory=self.scratch)

    def results(self, units: Iterator[Unit]) -> Iterator[UnitResult]:
        from distributed import as_completed

        flying: dict[str, Unit] = {}
        held: list[Unit] = []
        """Units that take in a unit still in flight: they start once it is done (one writer per folder)."""
        done = as_completed()
        source = iter(units)

        def startable(unit: Unit) -> bool:
            return not {u.id for u in flying.values()}.intersection(unit.supersedes)

        def submit() -> bool:
            unit = next((u for u in held if startable(u)), None)
            if unit is not None:
                held.remove(unit)
            while unit is None:
                unit = next(source, None)
                if unit is None:
                    return False
                if not startable(unit):
                    held.append(unit)
                    unit = None
            future = self.client.submit(process_unit, unit, self.job, key=f"unit-{unit.id}-{self.job.run_id}",
                                        pure=False, resources=self.opts.resources or None)
            flying[future.key] = unit
            done.add(future)
            return True

        while len(flying) < self.ahead() and submit():
            pass
        for future in done:
            unit = flying.pop(future.key)
            try:
                result = future.result()
            except RunError:
                raise
            except Exception as error:  # noqa: BLE001 - a worker that died (KilledWorker) fails its unit only
                reason = self.death_reason(error)
                log.error("%s failed: %s", unit.label, reason)
                result = lost_unit(unit, self.job, self.modules, reason)
                result.lost = True
            finally:
                future.release()
            yield result
            while len(flying) < self.ahead() and submit():
                pass

    def death_reason(self, error: Exception) -> str:
        """One line on why a unit's worker(s) died: the memory limit when Dask's nanny stopped the
        worker for it (its ``worker-restart-memory`` event), else a crash or a kill."""
        from distributed.scheduler import KilledWorker

        if not isinstance(error, KilledWorker):
            return f"worker lost while processing it ({one_line(error)})"[:300]
        last = getattr(error.last_worker, "address", None) or str(error.last_worker)
        deaths = error.allowed_failures + 1
        try:
            events = self.client.get_events("worker-restart-memory") or ()
        except Exception:  # noqa: BLE001 - the events only sharpen the reason
            events = ()
        by_memory = [e for _, e in events if isinstance(e, dict) and e.get("worker") == last]
        if by_memory:
            rss = max(float(e.get("rss", 0)) for e in by_memory) / 2**30
            limit = self.opts.memory_per_worker if self.opts.memory_per_worker not in ("", "auto") else "its share"
            return (f"out of memory: the worker processing it was stopped at {rss:.1f} GiB, near its memory "
                    f"limit ({limit}); {deaths} workers died on it (KilledWorker); give each worker more memory "
                    "(--memory-per-worker) or use fewer workers")
        return (f"worker process died {deaths} time(s) while processing it (KilledWorker: a crash such as a "
                "segfault, or killed from outside)")

    def ahead(self) -> int:
        """Units in flight: two per worker now connected (a batch system adds workers as its
        jobs start), at least four."""
        if self.cluster is None:
            self.workers = len(self.client.scheduler_info().get("workers", {})) or self.workers
        return max(4, 2 * self.workers)

    def close(self) -> None:
        try:
            self.client.close(timeout=30)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=30)
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)


def _memory_limit(text: str) -> Any:
    return "auto" if text in ("", "auto") else text


@dataclass
class CohortRun:
    """Outcome of :func:`run_cohort`."""

    state: str
    tally: Tally
    stopped: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    kept_series: int = 0
    """Series recorded by earlier runs and kept (their units were already done)."""


def run_cohort(modules: list[Module], ctx: Context, opts: CohortOptions, progress: bool = False) -> CohortRun:
    """Run ``modules`` over the input, unit by unit, recording each in the state database."""
    assert ctx.output is not None, "the engine needs an opened OutputFolder"
    db = StateDB(state_file(ctx.output_dir, opts.shard_tag))
    mhash = models_hash(modules)
    general = ctx.config.get("general", {})
    job = Job(config=ctx.config, config_hash=ctx.config_hash, input_dir=str(ctx.input_dir),
              output_dir=str(ctx.output_dir), run_id=ctx.run_id, shard=opts.shard_tag,
              log_level=str(general.get("log_level", "info")))
    db.begin_run(ctx.run_id, str(general.get("name", "")), ctx.config_hash, mhash, opts.shard_tag, opts.workers)
    cohort = CohortFiles(db, ctx, modules, opts)
    cohort.write("running")
    stats = CatalogStats()
    tally = Tally()
    seen: set[str] = set()

    ran: set[str] = set()

    def todo(units: Iterator[Unit]) -> Iterator[Unit]:
        for unit in units:
            seen.add(unit.id)
            if unit.id in stats.superseded:  # a later unit takes in its folders and does its work
                if not db.is_done(unit, ctx.config_hash, mhash, False, ctx.output_dir):
                    db.record(unit, "done", SUPERSEDED, [], [], ctx.config_hash, mhash, ctx.run_id)
                continue
            redo = bool(ran.intersection(unit.supersedes))  # a part of it was done again: so is the whole
            if not redo and db.is_done(unit, ctx.config_hash, mhash, opts.retry_failed, ctx.output_dir):
                tally.kept += 1
                continue
            ran.add(unit.id)
            yield unit

    pending = todo(background(catalog(ctx, modules, opts, stats)))
    limited = opts.memory_per_worker not in ("", "auto")  # only a worker process can be held to a limit
    use_dask = opts.scheduler is not None or opts.workers > 1 or limited
    if use_dask and opts.scheduler is None:
        enough = 1 if limited else MIN_UNITS_FOR_WORKERS
        head = list(islice(pending, enough))  # read ahead: is there enough work?
        pending = chain(head, pending)
        if len(head) < enough:
            use_dask = False
            log.info("%d unit(s) of work: running in this process, without starting workers", len(head))
    bar = Progress(progress, stats, tally)
    state, stopped = "complete", ""
    executor: Any = None
    try:
        executor = OnDask(job, opts, modules) if use_dask else InProcess(modules, job, db, opts.retry_failed)
        for result in executor.results(pending):
            for level, message in result.log:
                log.log(level, "%s", message)
            if result.unit.id in stats.superseded:  # a later unit has (or will have) the whole series
                log.info("%s: its series continue in a later folder; recorded with that unit", result.unit.label)
                result.series, result.status, result.reason, result.lost = [], "done", SUPERSEDED, False
            moved = db.record(result.unit, result.status, result.reason, result.series, result.ignored,
                              ctx.config_hash, mhash, ctx.run_id, result.seconds, result.worker, result.peak_rss_mb)
            for key in moved:
                if result.unit.supersedes:
                    log.info("%s: found again in %s, recorded as one series", key, result.unit.label)
                else:
                    log.warning("%s: the same series was found again in %s; its outputs are this unit's",
                                key, result.unit.label)
            note_shared_uids(db, result, ctx.output_dir)
            tally.add(result)
            bar.update()
            if cohort.due():
                cohort.write("running")
    except RunError as error:
        state, stopped = "aborted", str(error)
        raise
    except KeyboardInterrupt:
        state, stopped = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
        raise
    except BaseException as error:  # anything else stops the run too: nothing is removed
        state, stopped = "aborted", one_line(error)
        raise
    finally:
        bar.close()
        if executor is not None:
            try:
                executor.close()
            except Exception:  # noqa: BLE001 - the results are recorded; closing is best effort
                log.debug("closing the workers", exc_info=True)
        removed: list[str] = []
        if stats.done:
            db.replace_ignored(CATALOG, [(_relative(p, ctx.input_dir), why) for p, why in stats.problems])
        unreadable = any(why.startswith("unreadable folder") for _, why in stats.problems)
        if unreadable and state == "complete":
            log.warning("some folders could not be read: series of units not seen this time are kept")
        if state == "complete" and opts.shard is None and opts.manifest is None and not unreadable:
            forgotten = db.forget_units_except(seen | {CATALOG})
            removed = ctx.output.remove_stale(db.keys())
            if forgotten:
                log.info("forgot %d unit(s) no longer in the input", forgotten)
        cohort.write(state, stopped=stopped, removed=removed, catalog_stats=stats, tally=tally)
        db.end_run(ctx.run_id, state, stopped)
        counts = db.counts()
        kept_series = db.kept_series(ctx.run_id)
        db.close()
    if not counts and state == "complete":
        log.warning("no DICOM series found in the input folder")
    _log_ignored(stats, tally)
    extra = "".join(text for count, text in (
        (stats.mixed_folders, f", {stats.mixed_folders} mixed folder(s)"),
        (stats.split_series, f", {stats.split_series} series found again in far-apart folders (units merged)"),
        (stats.shared_uids, f", {stats.shared_uids} SeriesInstanceUID(s) shared by another patient or study"),
    ) if count)
    log.info("catalog: %d folder(s), %d file(s), %d header(s) read, %d unit(s)%s", stats.folders, stats.files,
             stats.headers_read, stats.units, extra)
    log.info("units: %d done now, %d already done before (kept), %d series this run (%.0f series/h)",
             tally.units, tally.kept, tally.series, tally.rate())
    return CohortRun(state, tally, stopped, counts, kept_series)


CATALOG = "catalog"
"""Owner of the ignored entries the catalog itself found (no unit holds them)."""
SHARED_UID = "this SeriesInstanceUID also names another series"
"""Start of the warning every series gets whose UID another series (patient, study, geometry) shares."""
SUPERSEDED = "its folders are part of a later unit (a series continues there)"
"""Reason recorded for a unit whose series a later unit records."""


def note_shared_uids(db: StateDB, result: UnitResult, output_dir: Path) -> None:
    """Series of ``result`` whose SeriesInstanceUID another recorded series shares (another
    patient, study or geometry, perhaps in another unit): each of them carries a warning that
    names the others, in its row, its report in the database and its report.json."""
    for uid in {s.series_uid for s in result.series if s.series_uid}:
        found = db.series_with_uid(uid)
        if len(found) < 2:
            continue
        for key in found:
            others = ", ".join(k for k in found if k != key)
            message = f"{SHARED_UID} ({len(found)} series in all): kept apart, the other(s) as {others}"
            if db.add_warning(key, message, unless=SHARED_UID):
                _add_warning_on_disk(output_dir, db.outputs(key).get("report"), message)


def _add_warning_on_disk(output_dir: Path, report: str | None, message: str) -> None:
    """Best effort: report.json is the worker's; the database (and so the cohort files) has it."""
    if not report:
        return
    path = Path(output_dir) / report
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if message not in data.get("warnings", []):
            data.setdefault("warnings", []).append(message)
            atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")
    except (OSError, ValueError):
        log.debug("warning not added to %s", path, exc_info=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _log_ignored(stats: CatalogStats, tally: Tally) -> None:
    """One line for what the walk could not read (the units log their own ignored files)."""
    if stats.problems:
        reasons: dict[str, int] = {}
        for _, why in stats.problems:
            reasons[why] = reasons.get(why, 0) + 1
        summary = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        log.warning("%d folder(s)/link(s) ignored: %s", len(stats.problems), summary)


class CohortFiles:
    """Cohort files of the run, from the database: at the start, every so often, at the end."""

    def __init__(self, db: StateDB, ctx: Context, modules: list[Module], opts: CohortOptions) -> None:
        self.db, self.ctx, self.opts = db, ctx, opts
        exporter = next((m for m in modules if m.name == "ReportExporter"), None)
        stem = exporter.settings["cohort_name"] if exporter is not None else None
        self.stem = f"{stem}.{opts.shard_tag}" if stem and opts.shard_tag else stem
        self.rebuilders = [m for m in modules if hasattr(m, "rebuild_cohort")]
        # dashboard.html at the end of a run (a shard's would show only its share: `cac-mhub cohort` merges)
        self.dashboard = exporter if exporter is not None and exporter.settings["dashboard"] and \
            not opts.shard_tag else None
        self.last = 0.0
        self.cost = 0.0
        """Seconds the last rewrite took: at 130,000 series cohort.json is large."""
        self.started = now()

    def due(self) -> bool:
        """Every 30 s, but never more than a tenth of the run's time spent on rewriting."""
        return time.monotonic() - self.last >= max(COHORT_EVERY_S, 10 * self.cost)

    def write(self, state: str, stopped: str = "", removed: list[str] | None = None,
              catalog_stats: CatalogStats | None = None, tally: Tally | None = None) -> None:
        start = time.monotonic()
        try:
            self._write(state, stopped, removed, catalog_stats, tally)
        finally:
            self.last = time.monotonic()
            self.cost = self.last - start

    def _write(self, state: str, stopped: str, removed: list[str] | None, catalog_stats: CatalogStats | None,
               tally: Tally | None) -> None:
        if self.stem is None:
            return
        run = {"id": self.ctx.run_id, "state": state, "started": self.started}
        if state != "running":
            run["finished"] = now()
        if stopped:
            run["stopped"] = stopped
        if self.opts.shard_tag:
            run["shard"] = self.opts.shard_tag
        extra: dict[str, Any] = {"removed_series": list(removed or [])}
        if catalog_stats is not None and tally is not None:
            extra["catalog"] = {"folders": catalog_stats.folders, "files": catalog_stats.files,
                                "headers_read": catalog_stats.headers_read, "units": catalog_stats.units,
                                "units_done_now": tally.units, "units_kept": tally.kept}
        config = {"name": self.ctx.config.get("general", {}).get("name", ""), "hash": self.ctx.config_hash}
        write_cohort_files([self.db], self.ctx.output_dir, self.stem, run, config, extra)
        for module in self.rebuilders:
            module.rebuild_cohort(reports([self.db]), self.ctx.output_dir)
        if self.dashboard is not None and state != "running":
            self.dashboard.write_dashboard(self.ctx)  # a failure only warns


class Progress:
    """series done / skipped / failed, series per hour, time left once the catalog is complete."""

    def __init__(self, enabled: bool, stats: CatalogStats, tally: Tally) -> None:
        self.stats, self.tally = stats, tally
        self.bar = None
        self.last_line = time.monotonic()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc="units", unit="unit", total=None)

    def update(self) -> None:
        t = self.tally
        text = (f"{t.series} series ({t.skipped} skipped, {t.failed} failed), {t.kept} units kept, "
                f"{t.rate():.0f} series/h")
        if self.bar is not None:
            if self.stats.done and self.bar.total is None:
                self.bar.total = max(self.stats.units - t.kept, t.units)
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last_line >= 60:
            self.last_line = time.monotonic()
            left = ""
            if self.stats.done and t.units:
                remaining = self.stats.units - t.kept - t.units
                per_unit = (time.monotonic() - t.started) / t.units
                left = f", about {remaining * per_unit / 60:.0f} min left ({remaining} units)"
            log.info("progress: %d units done, %s%s", t.units, text, left)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
