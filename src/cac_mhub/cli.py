"""Command line: ``cac-mhub run`` (the main job), ``validate``, and plug-in subcommands.

Subcommands from other packages (``models``, ``phantom``) register themselves through a
``register(subparsers)`` function in the modules listed in :data:`PLUGINS`.

Exit codes of ``run``: 0 the run completed (single series may have failed: see the cohort
files), 2 a configuration or folder problem found before any work, 3 the run started but could
not finish (disk full, output not writable, internal error), 4 the run completed but the process
working on some series died (a worker killed by its memory limit, a segfault): those series are
``failed`` in the cohort files, 130 interrupted (Ctrl-C). Errors
are one line on stderr and in the log, never a traceback (that goes to the log at debug level).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .chain import ChainError, Context, Module, one_line, setup_modules
from .config import config_hash, load
from .output import PROBE_PREFIX, OutputBusy, OutputFolder
from .paths import default_input, default_output

if TYPE_CHECKING:  # the cohort engine (pydicom, sqlite) is imported by `run` only: --help stays quick
    from .cohort.engine import CohortOptions

log = logging.getLogger("cac_mhub")

PLUGINS = ("cac_mhub.segmentation.command", "cac_mhub.phantom.command", "cac_mhub.stats.command",
           "cac_mhub.stats.outcomes_command", "cac_mhub.report.command", "cac_mhub.pacs.command")
LOG_NAME = "cac-mhub.log"
EXIT_CONFIG, EXIT_RUN, EXIT_LOST, EXIT_INTERRUPTED = 2, 3, 4, 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cac-mhub", description="Coronary artery calcium scoring from chest CT (DICOM in, DICOM + reports out).")
    parser.add_argument("--version", action="version", version=f"cac-mhub {__version__}")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a workflow over a folder of DICOM files")
    _config_arguments(run)
    run.add_argument("--input", type=Path, default=None, help="input folder (default $CAC_MHUB_INPUT_DIR or /app/data/input_data)")
    run.add_argument("--output", type=Path, default=None, help="output folder (default $CAC_MHUB_OUTPUT_DIR or /app/data/output_data)")
    run.add_argument("--quiet", action="store_true", help="no progress bar, warnings and errors only on the console")
    cohort = run.add_argument_group("cohorts (README: Cohorts)")
    cohort.add_argument("--workers", type=_positive, default=None,
                        help="worker processes (a Dask LocalCluster when > 1; default $CAC_MHUB_WORKERS or one per "
                             "core as memory allows, 4 GiB each)")
    cohort.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on a Dask cluster, e.g. tcp://host:8786 (its workers must see the same folders)")
    cohort.add_argument("--shard", default=None, metavar="I/N",
                        help="only this share of the input (0 <= I < N; for array jobs, no Dask needed)")
    cohort.add_argument("--manifest", type=Path, default=None,
                        help="text or CSV file: one series folder per line (relative to --input, or absolute)")
    cohort.add_argument("--retry-failed", action="store_true", help="redo units that failed in an earlier run")
    cohort.add_argument("--resources", default="", metavar="NAME=N[,...]",
                        help="Dask resources each unit needs, e.g. GPU=1 (workers started with --resources GPU=1)")
    cohort.add_argument("--memory-per-worker", default="auto",
                        help="LocalCluster memory limit per worker, e.g. 6GiB (default: an equal share); when "
                             "given, units always run in worker processes (also with --workers 1), so that it holds")
    run.set_defaults(func=cmd_run)

    rebuild = sub.add_parser("cohort", help="rebuild the cohort files of an output folder from its state database(s)")
    rebuild.add_argument("output", type=Path, help="output folder of one or several (sharded) runs")
    rebuild.add_argument("--name", default="cohort", help="stem of the cohort files (default cohort)")
    rebuild.set_defaults(func=cmd_cohort)

    validate = sub.add_parser("validate", help="check a workflow/config without running it")
    _config_arguments(validate)
    validate.set_defaults(func=cmd_validate)

    modules = sub.add_parser("modules", help="list chain modules and their options (markdown)")
    modules.set_defaults(func=cmd_modules)

    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            if error.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="path of a YAML config")
    group.add_argument("--workflow", help="name of a workflow in config/ (default: default)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, e.g. modules.DicomImporter.min_slices=20 or general.log_level=debug (repeatable)",
    )


def prepare(args: argparse.Namespace, input_dir: Path | None = None,
            output_dir: Path | None = None) -> tuple[Context, list[Module]]:
    """Every check before work, one function for ``validate`` and ``run`` so that they agree:
    the config (sections, modules, option types and values), the chain, each module's setup
    (the model folder, say) and, given folders (``run``), the input and output folders."""
    config = load(args.config, args.workflow, args.overrides)
    if input_dir is not None and output_dir is not None:
        check_folders(input_dir, output_dir)
    ctx = Context(input_dir=input_dir or Path(), output_dir=output_dir or Path(), config=config,
                  config_hash=config_hash(config))
    return ctx, setup_modules(config["execute"], ctx)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        ctx, _ = prepare(args)
    except ChainError as error:
        print(f"cac-mhub: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    config = ctx.config
    names = " -> ".join(entry["module"] for entry in config["execute"])
    print(f"ok: {config['source']}: {names} (config hash {ctx.config_hash[:16]})")
    return 0


def options_reference() -> str:
    """Markdown reference of every registered module's options, generated from the code."""
    from .chain import REGISTRY, module_class

    lines = []
    for name in REGISTRY:
        try:
            cls = module_class(name)
        except ImportError:
            continue
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or name).strip().splitlines()[0]
        lines += [f"### {name}", "", doc, ""]
        if not cls.options:
            lines += ["(no options)", ""]
            continue
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for key, opt in cls.options.items():
            types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
            kind = "/".join("null" if t is type(None) else t.__name__ for t in types)
            doc = opt.doc + (f" ({', '.join(map(str, opt.choices))})" if opt.choices else "")
            lines.append(f"| `{key}` | {kind} | `{opt.default!r}` | {doc} |")
        lines.append("")
    return "\n".join(lines)


def cmd_modules(args: argparse.Namespace) -> int:
    print(options_reference())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cohort_options(args: argparse.Namespace) -> CohortOptions:
    """The cohort options of ``run``; ValueError with a one-line reason for bad ones."""
    from .cohort.catalog import parse_shard
    from .cohort.engine import CohortOptions, default_workers

    resources = {}
    for part in filter(None, (p.strip() for p in (args.resources or "").split(","))):
        name, _, amount = part.partition("=")
        try:
            resources[name.strip()] = float(amount)
        except ValueError:
            raise ValueError(f"--resources {part!r}: expected NAME=NUMBER, e.g. GPU=1") from None
    if args.manifest is not None and not args.manifest.is_file():
        raise ValueError(f"--manifest {args.manifest}: no such file")
    return CohortOptions(
        workers=args.workers or (1 if args.scheduler else default_workers()),
        scheduler=args.scheduler, shard=parse_shard(args.shard) if args.shard else None,
        manifest=args.manifest.resolve() if args.manifest else None, retry_failed=args.retry_failed,
        resources=resources, memory_per_worker=args.memory_per_worker)


def cmd_run(args: argparse.Namespace) -> int:
    input_dir = (args.input or default_input()).resolve()
    output_dir = (args.output or default_output()).resolve()
    try:
        options = cohort_options(args)
    except ValueError as error:
        print(f"cac-mhub: {error}", file=sys.stderr)
        return EXIT_CONFIG
    held = _SetupLog()  # the modules' setup (model, device) logs before the log file exists
    try:
        ctx, modules = prepare(args, input_dir, output_dir)
    except ChainError as error:
        held.hand_over(None)
        print(f"cac-mhub: {error}", file=sys.stderr)
        return EXIT_CONFIG
    folder = OutputFolder(output_dir, input_dir, shard=options.shard_tag)
    try:
        folder.open()
        handlers = setup_logging(output_dir, ctx.config["general"]["log_level"], args.quiet)
    except OutputBusy as error:
        held.hand_over(None)
        folder.close()
        print(f"cac-mhub: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as error:
        held.hand_over(None)
        folder.close()
        print(f"cac-mhub: output folder not usable: {output_dir} ({one_line(error)})", file=sys.stderr)
        return EXIT_CONFIG
    held.hand_over(handlers)
    ctx.run_id, ctx.output = folder.run_id, folder
    previous = _stop_on_sigterm()
    try:
        return _run(modules, ctx, options, progress=not args.quiet and sys.stderr.isatty())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for handler in handlers:
            logging.getLogger("cac_mhub").removeHandler(handler)
            handler.close()
        folder.close()


def _stop_on_sigterm() -> Any:
    """``docker stop`` / a batch system's SIGTERM stops the run like Ctrl-C: workers shut down,
    the cohort files say ``interrupted``, finished series stay recorded. Returns the old handler."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None  # someone else handles it (`cac-mhub watch` finishes its study first)
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (a test harness): leave signals alone
        return None


def _run(modules: list[Module], ctx: Context, options: CohortOptions, progress: bool) -> int:
    """The run itself, logging set up: every way it ends is one line in the log and an exit code."""
    start = time.perf_counter()
    log.info("cac-mhub %s, workflow %s (config hash %s), run %s",
             __version__, ctx.config["source"], ctx.config_hash[:16], ctx.run_id)
    if options.shard:
        log.info("shard %d of %d (units by id; the shards together are the whole input)", *options.shard)
    if ctx.output is not None and ctx.output.cleaned:
        log.info("removed %d temporary entries left by an interrupted run", ctx.output.cleaned)
    if _inside(ctx.output_dir, ctx.input_dir):
        log.warning("the output folder is inside the input folder; it is left out of the scan")
    from .cohort.engine import run_cohort

    try:
        outcome = run_cohort(modules, ctx, options, progress=progress)
    except ChainError as error:
        log.error("%s", error)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        log.error("run interrupted; finished series are recorded, the next run goes on from there")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - one line for the user, the traceback in the debug log
        log.error("run could not finish: %s", one_line(error))
        log.debug("traceback", exc_info=True)
        return EXIT_RUN
    counts = outcome.counts
    lost = outcome.tally.lost
    log.log(logging.WARNING if lost else logging.INFO, "done in %.1f s (%d series kept from earlier runs): %d series, "
            "%d failed%s", time.perf_counter() - start, outcome.kept_series, sum(counts.values()), counts.get("failed", 0),
            f"; {lost} unit(s) lost to a dying process (see cohort.csv; --retry-failed tries again)" if lost else "")
    return EXIT_LOST if lost else 0


def cmd_cohort(args: argparse.Namespace) -> int:
    """Rebuild cohort files and the dashboard from the state database(s) of an output folder:
    shards merged, and per-study outputs of ``cac-mhub pacs`` one level down."""
    from .cohort.files import rebuild
    from .cohort.state import STATE_NAME

    output = args.output.resolve()
    try:
        counts, used = rebuild(output, args.name)
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        print(f"cac-mhub: cohort files not rebuilt: {one_line(error)}", file=sys.stderr)
        return EXIT_RUN
    if not used:
        print(f"cac-mhub: no state database ({STATE_NAME}*.sqlite) in {output} or its folders", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.name}.csv / {args.name}.json / dashboard.html rebuilt from {len(used)} database(s): "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


class _SetupLog(logging.Handler):
    """Holds what the project logs before the run's log is set up (``prepare``: model loading,
    "no GPU found, running on CPU") and hands it to the run's handlers once they exist, so that
    those lines reach cac-mhub.log; when the run stops before that, warnings go to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger("cac_mhub")
        self.level_before = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def hand_over(self, handlers: list[logging.Handler] | None) -> None:
        self.logger.removeHandler(self)
        if handlers is None:
            self.logger.setLevel(self.level_before)
            for record in self.records:
                if record.levelno >= logging.WARNING:
                    print(f"{record.levelname} {record.getMessage()}", file=sys.stderr)
            return
        for record in self.records:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


class _ConsoleHandler(logging.StreamHandler):
    """Writes through tqdm so that log lines and the progress bar do not overwrite each other."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


class _LogFile(logging.FileHandler):
    """The log file; a line that cannot be written (disk full) is lost silently, never a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Fail early, in one line, on folders the run cannot use."""
    if not input_dir.is_dir():
        raise ChainError(f"input folder not found: {input_dir}")
    if output_dir == input_dir:
        raise ChainError("output folder must not be the input folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=PROBE_PREFIX):
            pass
    except OSError as error:
        raise ChainError(f"output folder not writable: {output_dir} ({error.strerror or error})") from None
    log_path = output_dir / LOG_NAME
    if log_path.exists() and not log_path.is_file():
        raise ChainError(f"output folder not usable: {log_path} is not a file")


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def setup_logging(output_dir: Path, level: str, quiet: bool) -> list[logging.Handler]:
    """Console at the configured level (warnings only with --quiet), full log file in the output."""
    logger = logging.getLogger("cac_mhub")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    console = _ConsoleHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else getattr(logging, level.upper()))
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logfile = _LogFile(output_dir / LOG_NAME, mode="w", encoding="utf-8")
    logfile.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in (console, logfile):
        logger.addHandler(handler)
    # pydicom complains about every non-conforming value it reads (e.g. a hash in a UI field);
    # that is input quality, not the user's business: keep it out of the console, in the debug log.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")
    # highdicom's warnings quote the value they dislike, e.g. the PatientName: never on the console
    warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom(\..*)?$")
    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.propagate = False
    pydicom_log.handlers = [logfile] if level == "debug" else [logging.NullHandler()]
    return [console, logfile]


if __name__ == "__main__":
    sys.exit(main())
