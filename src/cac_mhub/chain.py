"""The chain: modules with declared, typed options; one instance per series; errors isolated.

A module is a small class. It declares its options (name -> :class:`Option`) and implements
``run(instance, ctx)``. A *source* module (``source = True``, e.g. DicomImporter) instead
implements ``create_instances(ctx)`` and runs once. A module may implement ``finish(instances,
ctx)`` for work over the whole cohort (ReportExporter writes the cohort files there).

Instances go through the per-instance modules one at a time (series-major), so at most one
decoded volume is in memory. A module raising :class:`SkipInstance` marks the instance skipped,
any other exception marks it failed; either way the reason is logged in one line, the remaining
per-instance modules (except those with ``always_run = True``, such as the report) are
skipped for it, and the chain goes on with the next instance. Only faults that stop any
further output (a full disk, a read-only file system) end the run: :class:`RunError`.

With ``ctx.output`` set (``cac-mhub run``), modules write a series' files into a private work
folder that is moved into place as a whole when the series is finished (:mod:`cac_mhub.output`).

Options called ``name`` or ``*_name`` name an output file in the output or series folder:
their values must be plain file names (checked with the config, before any work).
"""

from __future__ import annotations

import errno
import importlib
import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable

from .output import OutputFolder
from .types import Labels, Series, Volume

log = logging.getLogger("cac_mhub")

#: Module name -> "python.module:ClassName". Imported lazily so that validating a config
#: never imports torch.
REGISTRY: dict[str, str] = {
    "DicomImporter": "cac_mhub.modules.dicom_importer:DicomImporter",
    "NiftiConverter": "cac_mhub.modules.nifti_converter:NiftiConverter",
    "HeartLocator": "cac_mhub.modules.heart_locator:HeartLocator",
    "ReportExporter": "cac_mhub.modules.report_exporter:ReportExporter",
    "AgatstonCalculator": "cac_mhub.modules.agatston_calculator:AgatstonCalculator",
    "DsegConverter": "cac_mhub.modules.dseg_converter:DsegConverter",
    "SrExporter": "cac_mhub.modules.sr_exporter:SrExporter",
    "NnunetCacRunner": "cac_mhub.modules.nnunet_cac_runner:NnunetCacRunner",
    "CalciumDetector": "cac_mhub.modules.calcium_detector:CalciumDetector",
    "SegmentationImporter": "cac_mhub.modules.segmentation_importer:SegmentationImporter",
    "DeepCac2Runner": "cac_mhub.modules.deepcac2_runner:DeepCac2Runner",
    "DeepCacReportExporter": "cac_mhub.modules.deepcac_report:DeepCacReportExporter",
    "NonCoronaryCalcium": "cac_mhub.modules.noncoronary_calcium:NonCoronaryCalcium",
    "CacPercentile": "cac_mhub.modules.cac_percentile:CacPercentile",
}


class ChainError(Exception):
    """A configuration or setup problem found before any work starts."""


class SkipInstance(Exception):
    """Raised by a module when a series is not usable; the message is the one-line reason."""


class RunError(Exception):
    """The run cannot go on: nothing more can be written (disk full, read-only file system)."""


#: OSError numbers that stop the run instead of failing one series: no later series could do better.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def fatal(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FATAL_ERRNOS


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for logs, reports and the console."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


_FILE_NAME_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_file_name(label: str, value: str) -> None:
    """A plain file name inside the output or series folder: no separators, not hidden, not empty."""
    if not value or value.startswith(".") or "/" in value or "\\" in value or _CONTROL.search(value) \
            or len(value) > _FILE_NAME_MAX:
        raise ChainError(f"{label}: {value!r} must be a plain file name (no '/', '\\' or control characters, "
                         f"not empty, not starting with '.', at most {_FILE_NAME_MAX} characters)")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@dataclass(frozen=True)
class Option:
    """A typed module option. ``type`` is checked on the value after YAML parsing."""

    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None

    def check(self, module: str, name: str, value: Any) -> Any:
        expected = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in expected and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if value is None and type(None) in expected:
            ok = True
        if not ok:
            names = "/".join(t.__name__ for t in expected)
            raise ChainError(f"{module}.{name}: expected {names}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ChainError(f"{module}.{name}: {value!r} is not one of {list(self.choices)}")
        if not _finite(value):
            raise ChainError(f"{module}.{name}: {value!r} is not a finite number")
        if (name == "name" or name.endswith("_name")) and isinstance(value, str):
            check_file_name(f"{module}.{name}", value)
        return value


@dataclass
class Instance:
    """One series travelling through the chain, and everything the modules learnt about it."""

    key: str
    """Folder name under the output directory (a sanitised SeriesInstanceUID)."""
    series: Series | None = None
    volume: Volume | None = None
    labels: Labels | None = None
    anatomy: Any = None
    """Heart region and the masks around it (:class:`cac_mhub.anatomy.Anatomy`), when located."""
    heart_mask: Any = None
    """A heart model's own mask on the CT grid (bool), as the model drew it (HeartLocator with a model)."""
    scores: Any = None
    """Result of the scoring module (an object with ``to_dict()``)."""
    status: str = "ok"
    """ok (still going / finished), skipped, failed."""
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """Output kind -> path relative to the output directory."""
    report: dict[str, Any] = field(default_factory=dict)
    """Extra report fields contributed by modules (geometry, acquisition, model, ...)."""

    @property
    def alive(self) -> bool:
        return self.status == "ok"

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s: %s", self.key, message)

    def release_arrays(self) -> None:
        """Drop the big arrays once the instance is done, keeping its report data."""
        self.volume = None
        self.labels = None
        self.anatomy = None
        self.heart_mask = None
        # a selected CT's headers are no longer needed; unselected series (an input SEG, say)
        # stay whole in ctx.shared["catalog"] for the instances that come after them
        if self.series is not None and self.series.selected:
            self.series.headers = self.series.headers[:1]


@dataclass
class Context:
    """What every module can see: paths, the validated config, data shared across instances."""

    input_dir: Path
    output_dir: Path
    config: dict[str, Any]
    config_hash: str = ""
    shared: dict[str, Any] = field(default_factory=dict)
    """Cross-instance data, e.g. ``shared['catalog']``: every series the importer found."""
    run_id: str = ""
    """Identifies this run in the cohort files and every report, so that mixed runs show."""
    output: OutputFolder | None = None
    """Owner of ``output_dir`` (series built aside and swapped in); None: written in place."""
    unit_files: list[Path] | None = None
    """The files of this unit of work (one study, from the cohort engine); None: every file
    below ``input_dir``."""
    cohort_files: bool = True
    """False when the cohort engine writes the cohort files from its state database."""
    taken_uids: frozenset[str] = frozenset()
    """SeriesInstanceUIDs that an earlier unit of the input holds for another patient or study
    (from the cohort engine's catalog): this unit's series of those UIDs get their own folder."""


class Module:
    """Base class of chain modules. Subclasses set ``options`` and implement ``run``."""

    options: ClassVar[dict[str, Option]] = {}
    source: ClassVar[bool] = False
    always_run: ClassVar[bool] = False
    whole_input: ClassVar[bool] = False
    """True when the module matches series across the whole input (a SEG to its CT in any
    folder): the cohort engine then gives the chain the input as one unit, not study by study."""

    def __init__(self, **options: Any) -> None:
        self.opts: dict[str, Any] = options

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def settings(self) -> dict[str, Any]:
        """The options with every default filled in: a validated config carries them all, a
        module built directly (tests, benchmarks) may carry only some."""
        return {**{key: option.default for key, option in self.options.items()}, **self.opts}

    def setup(self, ctx: Context) -> None:
        """Called once before any instance; raise :class:`ChainError` for bad setup."""

    def identity(self) -> Any:
        """What decides this module's results besides its options (model weights' sha256),
        after setup: a changed model makes the cohort engine redo the series it scored."""
        return None

    def create_instances(self, ctx: Context) -> list[Instance]:
        raise NotImplementedError

    def begin(self, instances: list[Instance], ctx: Context) -> None:
        """Called before the input is scanned (no instances yet) and again once the instances
        are known, before the first one runs: mark shared outputs as "in progress"."""

    def run(self, instance: Instance, ctx: Context) -> None:
        raise NotImplementedError

    def finish(self, instances: list[Instance], ctx: Context) -> None:
        """Called once after all instances."""


def require_volume(instance: Instance, task: str) -> Volume:
    """The instance's CT volume, or :class:`SkipInstance` saying why ``task`` cannot be done."""
    volume = instance.volume
    if volume is None:
        raise SkipInstance(f"no CT volume to {task} (NiftiConverter must run first)")
    if min(volume.hu.shape) < 2:
        raise SkipInstance(f"volume too small to {task}: shape {tuple(volume.hu.shape)}")
    return volume


def module_class(name: str) -> type[Module]:
    """Import and return the module class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ChainError(f"unknown module {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    path, _, cls = target.partition(":")
    return getattr(importlib.import_module(path), cls)


def build_modules(execute: list[dict[str, Any]]) -> list[Module]:
    """Instantiate the modules of a validated ``execute`` list (see :mod:`cac_mhub.config`)."""
    return [module_class(entry["module"])(**entry["options"]) for entry in execute]


def models_hash(modules: list[Module]) -> str:
    """sha256 over every module's :meth:`Module.identity` (set-up modules)."""
    import hashlib
    import json

    ident = [[m.name, m.identity()] for m in modules]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def check_chain(modules: list[Module]) -> None:
    if not modules or not modules[0].source:
        raise ChainError("the first module in execute must be a source (e.g. DicomImporter)")


def setup_modules(execute: list[dict[str, Any]], ctx: Context) -> list[Module]:
    """Build the modules and run every check that needs no input: ``validate`` and ``run`` share it."""
    modules = build_modules(execute)
    check_chain(modules)
    for module in modules:
        try:
            module.setup(ctx)
        except ChainError:
            raise
        except Exception as error:  # noqa: BLE001 - a broken setup is a one-line config error
            raise ChainError(f"{module.name}: {one_line(error)}") from None
    return modules


def _timed(instance: Instance, module: Module, fn: Any, *args: Any) -> None:
    start = time.perf_counter()
    try:
        fn(*args)
    except SkipInstance as why:
        instance.status, instance.reason = "skipped", f"{module.name}: {why}"
        log.warning("%s skipped: %s", instance.key, instance.reason)
    except Exception as error:  # noqa: BLE001 - isolate every failure to its instance
        if fatal(error):
            raise RunError(f"{instance.key}: {module.name}: {one_line(error)}") from error
        instance.status, instance.reason = "failed", f"{module.name}: {one_line(error)}"
        log.error("%s failed: %s", instance.key, instance.reason)
        log.debug("traceback", exc_info=True)
    finally:
        key = module.name
        while key in instance.timings:
            key += "+"
        instance.timings[key] = round(time.perf_counter() - start, 4)


def run_chain(modules: list[Module], ctx: Context, progress: bool = False) -> list[Instance]:
    """Run set-up modules (:func:`setup_modules`) over the input; return every instance.

    Each finished instance's outputs are moved into place (``ctx.output``). On
    :class:`RunError` the modules still ``finish`` (``ctx.shared["stopped"]`` says why), then the
    error goes on to the caller. Stale series and the cohort files are the cohort engine's
    (:mod:`cac_mhub.cohort.engine`): a chain works on one unit of the input at a time.
    """
    check_chain(modules)
    for module in modules:
        module.begin([], ctx)
    instances = modules[0].create_instances(ctx)
    for module in modules:
        module.begin(instances, ctx)
    per_instance = [m for m in modules[1:] if not m.source]
    work = ctx if ctx.output is None else replace(ctx, output_dir=ctx.output.staging)
    try:
        for instance in _progress(instances, progress):
            for module in per_instance:
                if instance.alive or module.always_run:
                    _timed(instance, module, module.run, instance, work)
            instance.release_arrays()
            if ctx.output is not None:
                _commit(instance, ctx.output)
    except RunError as error:
        ctx.shared["stopped"] = str(error)
        for module in modules:
            try:
                module.finish(instances, ctx)
            except Exception:  # noqa: BLE001 - best effort: the disk may well be full
                log.debug("finish after the run stopped", exc_info=True)
        raise
    for module in modules:
        module.finish(instances, ctx)
    return instances


def _commit(instance: Instance, output: OutputFolder) -> None:
    """Move the instance's outputs into place; failing that, the instance fails and says why."""
    try:
        output.commit(instance.key)
    except OSError as error:
        if fatal(error):
            raise RunError(f"{instance.key}: outputs not moved into place: {one_line(error)}") from error
        instance.status = "failed"
        instance.reason = f"outputs not moved into place ({one_line(error)}); the series folder is not this run's"
        log.error("%s failed: %s", instance.key, instance.reason)


def _progress(instances: list[Instance], enabled: bool) -> Iterable[Instance]:
    if not enabled:
        return instances
    from tqdm import tqdm

    return tqdm(instances, desc="series", unit="series")
