"""``cac-mhub pacs pull|push|run|status`` and ``cac-mhub watch``: thin wrappers over :mod:`.roundtrip`.

Exit codes: 0 every study finished (or nothing to do); 2 a configuration problem, refused
credentials or a busy output folder, before any work; 3 the PACS could not be queried at all;
4 partial: some studies failed (one line each in the log), a re-run completes them; 130
interrupted. Errors are one line on stderr; secrets never reach the console or the log.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import logging.handlers
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..chain import ChainError
from ..paths import default_output
from .base import Pacs, StudyQuery, short_id
from .config import PacsSettings, settings
from .errors import PacsAuthError, PacsError
from .ledger import LEDGER_NAME, iter_rows
from .roundtrip import RoundTrip, pending_items, watch

log = logging.getLogger("cac_mhub.pacs")

LOG_NAME = "cac-mhub-pacs.log"
LOCK_NAME = ".cac-mhub-pacs.lock"
EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_PARTIAL, EXIT_INTERRUPTED = 2, 3, 4, 130
STOP = threading.Event()
"""Set by SIGTERM/SIGINT during ``watch``: the current study finishes, then the watch ends."""


def register(subparsers: Any) -> None:
    pacs = subparsers.add_parser("pacs", help="pull studies from a PACS, score them, push SEG + SR back (docs/pacs.md)")
    sub = pacs.add_subparsers(dest="pacs_command")
    run = sub.add_parser("run", help="pull -> score -> push the studies a query finds")
    _common(run)
    _filters(run)
    run.add_argument("--no-push", action="store_true", help="score only; push later with `pacs push`")
    run.set_defaults(func=cmd_run)
    pull = sub.add_parser("pull", help="retrieve the series that would be scored into --output (no scoring)")
    _common(pull)
    _filters(pull)
    pull.set_defaults(func=cmd_pull)
    push = sub.add_parser("push", help="push the SEG + SR of an output folder (a `run` or `pacs run` output) to their studies")
    _common(push)
    push.set_defaults(func=cmd_push)
    status = sub.add_parser("status", help="what the PACS ledger of an output folder says (no PACS contact)")
    status.add_argument("--output", type=Path, default=None, help="output folder (default $CAC_MHUB_OUTPUT_DIR)")
    status.set_defaults(func=cmd_status)
    pacs.set_defaults(func=lambda args: (pacs.print_help(), 2)[1])

    watch_parser = subparsers.add_parser("watch", help="poll a PACS for new studies; pull, score and push each once")
    _common(watch_parser)
    _filters(watch_parser)
    watch_parser.add_argument("--interval", type=float, default=None, help="seconds between polls (default pacs.watch.interval_s)")
    watch_parser.add_argument("--max-polls", type=int, default=None, help="stop after this many polls (default: until SIGTERM)")
    watch_parser.add_argument("--once", action="store_true", help="one poll, then exit (same as --max-polls 1)")
    watch_parser.add_argument("--skip-existing", action="store_true",
                              help="on the first poll, leave the studies already in the PACS alone")
    watch_parser.set_defaults(func=cmd_watch)


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="YAML config (workflow + pacs: section)")
    group.add_argument("--workflow", help="workflow in config/ (default: default)")
    parser.add_argument("--pacs-config", type=Path, default=None,
                        help="YAML file with a pacs: section (replaces the config's; keeps endpoints out of workflows)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. pacs.use=dimse or modules.DicomImporter.min_slices=20")
    parser.add_argument("--via", choices=("dicomweb", "dimse"), default=None, help="protocol (default pacs.use)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default $CAC_MHUB_OUTPUT_DIR)")
    parser.add_argument("--cache", type=Path, default=None, help="where retrieved series wait for scoring (default: system temp)")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only on the console")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study-date", default=None, metavar="RANGE", help="StudyDate or range: 20260101, 20260101-20260131, 20260101-")
    parser.add_argument("--accession", action="append", default=[], help="AccessionNumber (repeatable)")
    parser.add_argument("--patient-id", action="append", default=[], help="PatientID (repeatable; never logged)")
    parser.add_argument("--study-uid", action="append", default=[], help="StudyInstanceUID (repeatable)")
    parser.add_argument("--modality", default=None, help="modality in study (default pacs.modality, CT)")


# -- setup -------------------------------------------------------------------------------------


def load_config(args: argparse.Namespace) -> tuple[dict[str, Any], PacsSettings]:
    """The workflow config (validated as for ``run``) and the PACS settings."""
    from ..config import apply_overrides, load_yaml, resolve, workflow_path

    if args.config is not None:
        path = args.config
    else:
        path = workflow_path(args.workflow or "default")
    raw = load_yaml(path)
    if args.pacs_config is not None:
        extra = load_yaml(args.pacs_config)
        if "pacs" not in extra:
            raise ChainError(f"{args.pacs_config}: no pacs: section")
        raw["pacs"] = extra["pacs"]
    config = resolve(apply_overrides(raw, args.overrides))
    config["source"] = str(path)
    return config, settings(config.get("pacs"))


def run_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments that make ``cac-mhub run`` use the same workflow (PACS overrides left out)."""
    out = ["--config", str(args.config)] if args.config is not None else ["--workflow", args.workflow or "default"]
    for text in args.overrides:
        if not text.strip().startswith("pacs."):
            out += ["--set", text]
    return out


def connect(pacs_settings: PacsSettings, via: str | None) -> Pacs:
    name = pacs_settings.endpoint_name(via)
    if name == "dicomweb":
        from .dicomweb import DicomWebPacs

        assert pacs_settings.dicomweb is not None
        return DicomWebPacs(pacs_settings.dicomweb)
    from .dimse import DimsePacs

    assert pacs_settings.dimse is not None
    return DimsePacs(pacs_settings.dimse)


def query_of(args: argparse.Namespace, pacs_settings: PacsSettings) -> StudyQuery:
    return StudyQuery(study_date=args.study_date, accession_numbers=tuple(args.accession),
                      patient_ids=tuple(args.patient_id), study_uids=tuple(args.study_uid),
                      modality=args.modality or pacs_settings.modality)


@contextmanager
def session(args: argparse.Namespace, level: str) -> Iterator[Path]:
    """The output folder, locked for this command, with the PACS log set up; all undone after."""
    output = (args.output or default_output()).resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
        lock = os.open(output / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as error:
        raise ChainError(f"output folder not usable: {output} ({error.strerror or error})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise ChainError(f"another cac-mhub pacs/watch command uses {output}") from None
    handlers = setup_logging(output, level, args.quiet)
    try:
        yield output
    except (PacsError, ChainError) as error:
        log.error("%s", error, extra={"console": False})  # the console gets it once, from _guarded
        raise
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        os.close(lock)


def setup_logging(output: Path, level: str, quiet: bool) -> list[logging.Handler]:
    """Console + ``cac-mhub-pacs.log`` (rotated: a watch runs for weeks). The libraries' own
    loggers stay silent: their messages quote URLs with query strings and datasets."""
    log.setLevel(logging.DEBUG)
    log.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else getattr(logging, level.upper()))
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console.addFilter(lambda record: getattr(record, "console", True))
    logfile = logging.handlers.RotatingFileHandler(output / LOG_NAME, maxBytes=10_000_000, backupCount=5,
                                                   encoding="utf-8")
    logfile.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in (console, logfile):
        log.addHandler(handler)
    for name in ("pynetdicom", "dicomweb_client", "urllib3", "requests"):
        library = logging.getLogger(name)
        library.propagate = False
        library.handlers = [logging.NullHandler()]
    return [console, logfile]


def _guarded(fn: Any) -> Any:
    """One line on stderr and an exit code for every way a command can fail before or during work."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ChainError as error:
            print(f"cac-mhub: {error}", file=sys.stderr)
            return EXIT_CONFIG
        except PacsAuthError as error:
            print(f"cac-mhub: {error}", file=sys.stderr)
            return EXIT_CONFIG
        except PacsError as error:
            print(f"cac-mhub: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except KeyboardInterrupt:
            print("cac-mhub: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper


def _trip(args: argparse.Namespace, output: Path, config: dict[str, Any], pacs_settings: PacsSettings,
          push: bool = True) -> RoundTrip:
    from .selection import rules_from_config

    rules = rules_from_config(config)
    pacs = connect(pacs_settings, args.via)
    log.info("PACS %s via %s; output %s", pacs.where, pacs.name, output, extra={"console": False})
    return RoundTrip(pacs, pacs_settings, output, rules, run_arguments(args), cache_dir=args.cache, push=push)


def _summary(outcomes: list[Any], trip: RoundTrip) -> int:
    states: dict[str, int] = {}
    for outcome in outcomes:
        states[outcome.state] = states.get(outcome.state, 0) + 1
    failed = sum(v for k, v in states.items() if k in ("failed", "push-failed"))
    text = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no studies"
    pushed = sum(o.pushed for o in outcomes)
    log.info("%d studies: %s; %d object(s) pushed; ledger %s", len(outcomes), text, pushed, trip.ledger.path.name)
    if failed:
        log.error("%d study(ies) not finished; run the same command again to complete them", failed)
        return EXIT_PARTIAL
    return 0


# -- commands ----------------------------------------------------------------------------------


@_guarded
def cmd_run(args: argparse.Namespace) -> int:
    config, pacs_settings = load_config(args)
    with session(args, config["general"]["log_level"]) as output:
        trip = _trip(args, output, config, pacs_settings, push=not args.no_push)
        try:
            uids = trip.pacs.find_studies(query_of(args, pacs_settings))
            log.info("%d studies match the query", len(uids))
            outcomes = trip.run(uids)
        finally:
            trip.pacs.close()
        return _summary(outcomes, trip)


@_guarded
def cmd_pull(args: argparse.Namespace) -> int:
    from .selection import choose, rules_from_config

    config, pacs_settings = load_config(args)
    with session(args, config["general"]["log_level"]) as output:
        pacs = connect(pacs_settings, args.via)
        rules = rules_from_config(config)
        failed = 0
        try:
            uids = pacs.find_studies(query_of(args, pacs_settings))
            log.info("%d studies match the query", len(uids))
            for uid in uids:
                key = short_id(uid)
                try:
                    listed = pacs.find_series(uid, pacs_settings.modality)
                    for series in listed:
                        series.headers = pacs.series_headers(series)
                    chosen, _ = choose(listed, rules)
                    for series in chosen:
                        count = pacs.retrieve_series(series, output / key / short_id(series.uid))
                        log.info("study %s: series %s retrieved (%d files)", key, short_id(series.uid), count)
                    if not chosen:
                        log.info("study %s: no series qualifies", key)
                except PacsAuthError:
                    raise
                except PacsError as error:
                    failed += 1
                    log.error("study %s: %s", key, error)
        finally:
            pacs.close()
        return EXIT_PARTIAL if failed else 0


@_guarded
def cmd_push(args: argparse.Namespace) -> int:
    config, pacs_settings = load_config(args)
    with session(args, config["general"]["log_level"]) as output:
        trip = _trip(args, output, config, pacs_settings)
        failed = pushed = 0
        try:
            items = pending_items(output, trip.ledger)
            for study_uid in dict.fromkeys(i.study_uid for i in items):
                try:
                    pushed += trip.push_study(study_uid, output)
                    row = trip.ledger.study(study_uid)
                    if row is not None and row["state"] == "scored":
                        trip.ledger.set_study(study_uid, row["key"], "done")
                except PacsAuthError:
                    raise
                except PacsError as error:
                    failed += 1
                    log.error("study %s: %s", short_id(study_uid), error)
        finally:
            trip.pacs.close()
        log.info("%d object(s) pushed, %d study(ies) failed", pushed, failed)
        return EXIT_PARTIAL if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    output = (args.output or default_output()).resolve()
    path = output / LEDGER_NAME
    if not path.is_file():
        print(f"cac-mhub: no PACS ledger in {output}", file=sys.stderr)
        return EXIT_CONFIG
    for endpoint, key, state, attempts, error, updated in iter_rows(path):
        print(f"{updated}  {key}  {state:<8} attempts {attempts}  {endpoint}  {error}".rstrip())
    return 0


@_guarded
def cmd_watch(args: argparse.Namespace) -> int:
    config, pacs_settings = load_config(args)
    max_polls = 1 if args.once else args.max_polls
    STOP.clear()
    previous = _install_signals()
    try:
        with session(args, config["general"]["log_level"]) as output:
            trip = _trip(args, output, config, pacs_settings)
            log.info("watch: polling every %.0f s (stop with SIGTERM)",
                     args.interval if args.interval is not None else pacs_settings.watch.interval_s)
            try:
                polls = watch(trip, query_of(args, pacs_settings), STOP, args.interval, max_polls, args.skip_existing)
            finally:
                trip.pacs.close()
            log.info("watch: stopped after %d poll(s); ledger: %s", polls,
                     ", ".join(f"{n} {s}" for s, n in sorted(trip.ledger.counts().items())) or "empty")
    finally:
        _restore_signals(previous)
    return 0


def _install_signals() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda *_: STOP.set())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)
