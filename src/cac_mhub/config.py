"""MHub-style YAML configuration: ``general`` / ``execute`` / ``modules``, validated before any work.

Sections that belong to a part above the chain (``pacs:``, PACS endpoints for ``cac-mhub pacs``)
are checked by that part: it registers a validator with :func:`register_section` (the command
line imports every command plug-in before it reads a config), so this loader never imports it.
Such a section does not change what a run computes, so it is not hashed.

Precedence (lowest first): a module's declared defaults, its ``modules:`` section, the options
written in its ``execute`` entry, then ``--set`` overrides from the command line. An ``execute``
entry is a module name or ``{module: Name, option: value, ...}``; a module may appear twice
(each entry gets its own options). Unknown modules, unknown options and values of the wrong
type are errors that name them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from .chain import ChainError, module_class
from .paths import config_dir

GENERAL_KEYS = {"name", "version", "description", "data_base_dir", "log_level"}
LOG_LEVELS = ("debug", "info", "warning", "error")
WORKFLOW_NAME = re.compile(r"[A-Za-z0-9_-]+")
"""A workflow is named, never a path: ``--workflow ../x`` must not reach outside config/."""

#: A config file is input too: bounded before it is parsed (the shipped ones are 1-3 KB).
MAX_CONFIG_BYTES = 64 * 1024
#: Deepest nesting of mappings/lists (the shipped configs nest 4 deep).
MAX_DEPTH = 32
#: Values after alias expansion (scalars and collections): an alias bomb (nested anchors, each
#: level repeating the one below) stops here instead of growing 8x a level.
MAX_NODES = 20_000
#: One ``--set`` value.
MAX_OVERRIDE_BYTES = 4096

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: The chain's own sections; any other must have a registered validator.
CHAIN_SECTIONS = ("general", "execute", "modules")
#: Section name -> validator (raw value -> checked value, or :class:`ChainError`), registered by
#: the parts above the chain that own the section.
SECTION_CHECKS: dict[str, Callable[[Any], Any]] = {}


def register_section(name: str, check: Callable[[Any], Any]) -> None:
    """Let ``name:`` appear in a config, validated by ``check`` after the chain's own sections."""
    if name in CHAIN_SECTIONS:
        raise ValueError(f"config section {name!r} belongs to the chain")
    SECTION_CHECKS[name] = check


class ConfigTooLarge(ValueError):
    """A YAML text beyond the bounds above."""


def check_yaml_bounds(text: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Raise :class:`ConfigTooLarge` when ``text`` nests deeper than ``max_depth`` or holds more
    than ``max_nodes`` values once every alias is expanded.

    Walks the parser's events (the parser keeps its own stack: no recursion, and it stops at the
    first excess), so neither the composer (recursive in C: deep nesting crashes it) nor anything
    that walks the loaded data (a deepcopy, the config hash) ever sees an unbounded document.
    """
    sizes: dict[str, int] = {}
    """Expanded size of each finished anchor."""
    open_: list[list[Any]] = []
    """Per open collection: [anchor, expanded size so far]."""
    total = 0

    def add(size: int) -> None:
        nonlocal total
        if open_:
            open_[-1][1] += size
        else:
            total += size
        if total + sum(item[1] for item in open_) > max_nodes:
            raise ConfigTooLarge(f"more than {max_nodes} values once its aliases are expanded")

    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_) >= max_depth:
                raise ConfigTooLarge(f"nested deeper than {max_depth} levels")
            open_.append([event.anchor, 1])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_.pop()
            if anchor is not None:
                sizes[anchor] = size
            add(size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                if any(item[0] == event.anchor for item in open_):
                    raise ConfigTooLarge(f"alias *{event.anchor} refers to a collection that holds it")
                continue  # an undefined alias: the loader says so
            add(sizes[event.anchor])


def parse_bounded(text: str) -> Any:
    """``yaml.safe_load`` of a text that passed :func:`check_yaml_bounds`."""
    check_yaml_bounds(text)
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def load_yaml(path: Path) -> dict[str, Any]:
    """A config file as a mapping; size, nesting and alias expansion bounded before it is used."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ChainError(f"config {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file")
        raw = parse_bounded(data.decode("utf-8"))
    except FileNotFoundError:
        raise ChainError(f"config file not found: {path}") from None
    except OSError as error:
        raise ChainError(f"config {path} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ChainError(f"config {path} is not a UTF-8 text file") from None
    except ConfigTooLarge as error:
        raise ChainError(f"config {path} is not accepted: {error}") from None
    except yaml.YAMLError as error:
        raise ChainError(f"config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ChainError(f"config {path} must be a mapping with general/execute/modules")
    return raw


def workflow_path(name: str) -> Path:
    """``config/<name>.yml`` of the installation (see :mod:`cac_mhub.paths`)."""
    if not WORKFLOW_NAME.fullmatch(name):
        raise ChainError(f"workflow {name!r} is not a name (letters, digits, _ and -); use --config for a file")
    path = config_dir() / f"{name}.yml"
    if not path.exists():
        known = sorted(p.stem for p in config_dir().glob("*.yml"))
        raise ChainError(f"unknown workflow {name!r}; known: {', '.join(known) or 'none'}")
    return path


def parse_override(text: str) -> tuple[list[str], Any]:
    """``modules.DicomImporter.min_slices=20`` -> (["modules", "DicomImporter", "min_slices"], 20)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ChainError(f"override {_shown(text)} must look like section.key=value")
    if len(text.encode("utf-8", "surrogateescape")) > MAX_OVERRIDE_BYTES:
        raise ChainError(f"override {_shown(text)} is longer than {MAX_OVERRIDE_BYTES} bytes")
    if key.count(".") >= MAX_DEPTH:
        raise ChainError(f"override {_shown(text)}: key nested deeper than {MAX_DEPTH} levels")
    try:
        parsed = parse_bounded(value) if value.strip() else ""
    except ConfigTooLarge as error:
        raise ChainError(f"override {_shown(text)}: value is not accepted: {error}") from None
    except yaml.YAMLError as error:
        raise ChainError(f"override {_shown(text)}: value is not valid YAML: {str(error).splitlines()[0]}") from None
    return key.strip().split("."), parsed


def _shown(text: str, limit: int = 80) -> str:
    """An override as errors show it: quoted, at most ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw config (YAML parses each value)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = raw
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                index = int(key) if key.isdigit() else -1
                if not 0 <= index < len(node):
                    raise ChainError(f"override {text!r}: no execute entry {key!r}")
                if isinstance(node[index], str):
                    node[index] = {"module": node[index]}
                node = node[index]
            elif isinstance(node, dict):
                if node.get(key) is None:
                    node[key] = [] if keys[i + 1].isdigit() else {}
                node = node[key]
            else:
                raise ChainError(f"override {text!r} does not address a mapping")
        if isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
            node[int(keys[-1])] = value  # execute.1=NiftiConverter replaces an entry
            continue
        if not isinstance(node, dict):
            raise ChainError(f"override {text!r} does not address a mapping")
        node[keys[-1]] = value
    return raw


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a raw config and return it with every module option filled in.

    The result has ``general`` (dict), ``execute`` (list of ``{"module", "options"}``) and
    ``modules`` (the raw per-module sections).
    """
    unknown = set(raw) - set(CHAIN_SECTIONS) - set(SECTION_CHECKS)
    if unknown:
        raise ChainError(f"unknown config section(s): {', '.join(sorted(map(str, unknown)))}")
    general = raw.get("general") or {}
    if not isinstance(general, dict):
        raise ChainError(f"general: must be a mapping (name, log_level, ...), got {type(general).__name__}")
    general = dict(general)
    bad = set(general) - GENERAL_KEYS
    if bad:
        raise ChainError(f"general: unknown key(s) {', '.join(sorted(map(str, bad)))}; "
                         f"known: {', '.join(sorted(GENERAL_KEYS))}")
    for key, value in general.items():
        if isinstance(value, (dict, list)):
            raise ChainError(f"general.{key}: expected text, got {type(value).__name__}")
    level = str(general.setdefault("log_level", "info")).lower()
    if level not in LOG_LEVELS:
        raise ChainError(f"general.log_level: {level!r} is not one of {list(LOG_LEVELS)}")
    general["log_level"] = level
    sections = raw.get("modules") or {}
    if not isinstance(sections, dict):
        raise ChainError("modules: must be a mapping of module name -> options")
    for name, section in sections.items():
        cls = module_class(name)  # raises for an unknown module
        _check_options(name, cls.options, section or {})
    execute = raw.get("execute")
    if not isinstance(execute, list) or not execute:
        raise ChainError("execute: must be a non-empty list of modules")
    resolved = []
    for entry in execute:
        if isinstance(entry, str):
            name, inline = entry, {}
        elif isinstance(entry, dict) and "module" in entry:
            inline = {k: v for k, v in entry.items() if k != "module"}
            name = entry["module"]
        else:
            raise ChainError(f"execute: entry {entry!r} must be a module name or {{module: Name, ...}}")
        cls = module_class(str(name))
        options = {key: opt.default for key, opt in cls.options.items()}
        options.update(sections.get(name) or {})
        options.update(inline)
        resolved.append({"module": name, "options": _check_options(name, cls.options, options)})
    result = {"general": general, "execute": resolved, "modules": sections}
    for name, check in SECTION_CHECKS.items():  # e.g. pacs: (docs/pacs.md); not part of the hash
        if raw.get(name) is not None:
            result[name] = check(raw[name])
    return result


def _check_options(module: str, declared: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise ChainError(f"{module}: options must be a mapping, got {type(given).__name__}")
    checked = {}
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ChainError(f"{module}: unknown option {key!r}; known: {known}")
        checked[key] = declared[key].check(module, key, copy.deepcopy(value))
    return checked


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved general + execute (canonical JSON): the same config, the same hash."""
    body = {"general": resolved["general"], "execute": resolved["execute"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def load(config: Path | None = None, workflow: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a config file or named workflow (default ``default``), apply overrides, validate."""
    if config is not None and workflow is not None:
        raise ChainError("give either --config or --workflow, not both")
    path = Path(config) if config is not None else workflow_path("default" if workflow is None else workflow)
    resolved = resolve(apply_overrides(load_yaml(path), overrides or []))
    resolved["source"] = str(path)
    return resolved
