"""Command line: ``cac-mhub run`` (the main job), ``validate``, and plug-in subcommands.

Subcommands from other packages (``models``, ``phantom``) register themselves through a
``register(subparsers)`` function in the modules listed in :data:`PLUGINS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

from . import __version__
from .chain import ChainError, Context, build_modules, run_chain
from .config import config_hash, load
from .paths import default_input, default_output

log = logging.getLogger("cac_mhub")

PLUGINS = ("cac_mhub.segmentation.command", "cac_mhub.phantom.command")
LOG_NAME = "cac-mhub.log"


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
    run.set_defaults(func=cmd_run)

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


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, args.workflow, args.overrides)
        build_modules(config["execute"])
    except ChainError as error:
        print(f"cac-mhub: config error: {error}", file=sys.stderr)
        return 2
    names = " -> ".join(entry["module"] for entry in config["execute"])
    print(f"ok: {config['source']}: {names} (config hash {config_hash(config)[:16]})")
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


def cmd_run(args: argparse.Namespace) -> int:
    input_dir = (args.input or default_input()).resolve()
    output_dir = (args.output or default_output()).resolve()
    try:
        config = load(args.config, args.workflow, args.overrides)
        modules = build_modules(config["execute"])
        check_folders(input_dir, output_dir)
    except ChainError as error:
        print(f"cac-mhub: {error}", file=sys.stderr)
        return 2
    handlers = setup_logging(output_dir, config["general"]["log_level"], args.quiet)
    try:
        start = time.perf_counter()
        ctx = Context(input_dir=input_dir, output_dir=output_dir, config=config, config_hash=config_hash(config))
        log.info("cac-mhub %s, workflow %s (config hash %s)", __version__, config["source"], ctx.config_hash[:16])
        if _inside(output_dir, input_dir):
            log.warning("the output folder is inside the input folder; it is left out of the scan")
        progress = not args.quiet and sys.stderr.isatty()
        try:
            instances = run_chain(modules, ctx, progress=progress)
        except ChainError as error:
            log.error("%s", error)
            return 2
        failed = sum(i.status == "failed" for i in instances)
        log.info("done in %.1f s: %d series, %d failed", time.perf_counter() - start, len(instances), failed)
        return 0
    finally:
        for handler in handlers:
            logging.getLogger("cac_mhub").removeHandler(handler)
            handler.close()


class _ConsoleHandler(logging.StreamHandler):
    """Writes through tqdm so that log lines and the progress bar do not overwrite each other."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Fail early, in one line, on folders the run cannot use."""
    if not input_dir.is_dir():
        raise ChainError(f"input folder not found: {input_dir}")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ChainError(f"output folder not writable: {output_dir} ({error.strerror or error})") from None
    if output_dir == input_dir:
        raise ChainError("output folder must not be the input folder")


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
    logfile = logging.FileHandler(output_dir / LOG_NAME, mode="w", encoding="utf-8")
    logfile.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in (console, logfile):
        logger.addHandler(handler)
    # pydicom complains about every non-conforming value it reads (e.g. a hash in a UI field);
    # that is input quality, not the user's business: keep it out of the console, in the debug log.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")
    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.propagate = False
    pydicom_log.handlers = [logfile] if level == "debug" else [logging.NullHandler()]
    return [console, logfile]


if __name__ == "__main__":
    sys.exit(main())
