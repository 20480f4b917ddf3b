"""The package's shape, read from its imports: no import loop, and no arrow from a lower layer up.

Every module under ``src/cac_mhub`` is parsed with ``ast`` (never imported): ``import x``,
``from x import y`` and relative imports, at module level or inside functions, are edges; imports
under ``if TYPE_CHECKING:`` are not (they never run). Plug-ins named by string (``cli.PLUGINS``,
the chain's module registry) are late binding by name, not imports, and are not edges.

A module belongs to the layer of the longest package prefix listed in :data:`LAYERS`; a module
may import its own layer and those below, except between packages kept :data:`APART`. CLI verbs
(``*/command.py``) sit with ``cli``: they are where packages meet. An upward import on purpose is
listed in :data:`EXCEPTIONS` with its reason. A new top-level file must be placed in a layer here
(the test says so); a new file inside a package takes the package's layer. docs/layout.md
describes the same layers for people.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "cac_mhub"

#: Lowest first. Each layer: (name, module or package prefixes).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the package itself (__version__), shared types, folders, atomic writes, table cells, cohort columns
    ("base", (ROOT, "cac_mhub.types", "cac_mhub.paths", "cac_mhub.io", "cac_mhub.formatting",
              "cac_mhub.cohort_schema")),
    # pure domain code over arrays, headers and tables; may use each other, never the chain
    ("domain", ("cac_mhub.dicom", "cac_mhub.scoring", "cac_mhub.anatomy", "cac_mhub.phantom", "cac_mhub.stats")),
    # segmentation backends, review pages and pictures, built on the domain
    ("backends", ("cac_mhub.segmentation", "cac_mhub.report", "cac_mhub.plots")),
    # the per-series chain: Module base and registry, config loader, output folder
    ("chain", ("cac_mhub.chain", "cac_mhub.config", "cac_mhub.output")),
    # one file per chain module: thin adapters
    ("modules", ("cac_mhub.modules",)),
    # above the chain: cohort engine, PACS round trip, training recipe
    ("above the chain", ("cac_mhub.cohort", "cac_mhub.pacs", "cac_mhub.training")),
    # the command line and its plug-in verbs (see :func:`is_command`)
    ("command line", ("cac_mhub.cli",)),
)

#: Imports that cross a layer upwards on purpose: (importer, imported) -> the reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("cac_mhub.pacs.roundtrip", "cac_mhub.cli"):
        "the round trip scores each study by running `cac-mhub run` in process (score_with_cli): same "
        "checks, exit codes and logs as the command, never a copy of its logic",
}

#: Packages that never import each other, whatever their layers allow: (importer, imported) -> why.
#: Commands (:func:`is_command`) are the place where they meet.
APART: dict[tuple[str, str], str] = {
    ("cac_mhub.report", "cac_mhub.stats"): "report draws the result dicts stats returns; shared cell "
                                           "formatting is in formatting.py, below both",
    ("cac_mhub.stats", "cac_mhub.report"): "the same, the other way",
    ("cac_mhub.cohort", "cac_mhub.modules"): "the engine above the chain runs modules by config and never "
                                             "reads their internals; the cohort columns are in cohort_schema.py",
}


def is_command(module: str) -> bool:
    """A CLI verb (``stats/command.py``, ``stats/outcomes_command.py``, ...): a plug-in of ``cli``
    that wires its package to others (``compare`` puts stats on report pages), so it sits with cli."""
    last = module.rsplit(".", 1)[-1]
    return last == "command" or last.endswith("_command")


# -- reading the imports ------------------------------------------------------------------------


def find_modules(src: Path, root: str = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every import statement that runs, with its line (``if TYPE_CHECKING:`` bodies skipped)."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        if _type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)


def import_graph(src: Path, root: str = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: first line}."""
    modules = find_modules(src, root)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, package) in modules.items():
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            if target in modules and target != name:
                edges.setdefault(target, line)

        for node in visitor.found:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
                continue
            if node.level:
                base = name.split(".") if package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == root or source.startswith(root + ".")):
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    add(f"{source}.{alias.name}", node.lineno)  # a submodule: `from . import scan`
                else:
                    add(source, node.lineno)  # a name from the module (or package __init__)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted name lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    group.append(item)
                    if item == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    """Index of the module's layer (the longest listed prefix wins; commands sit with cli)."""
    if is_command(module):
        return len(layers) - 1
    best: tuple[int, int] | None = None
    for position, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            exact_only = prefix == ROOT
            if module == prefix or (not exact_only and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), position)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, dict[str, int]],
                   layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for each import from a lower layer into a higher one."""
    out = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            low, high = layer_of(module, layers), layer_of(target, layers)
            if low is not None and high is not None and high > low:
                out.append((module, target, line))
    return out


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def crossings(graph: dict[str, dict[str, int]],
              apart: dict[tuple[str, str], str] = APART) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for each import between packages kept apart (commands excepted)."""
    return [(module, target, line) for module, edges in sorted(graph.items()) if not is_command(module)
            for target, line in sorted(edges.items())
            if any(_within(module, a) and _within(target, b) for a, b in apart)]


# -- the package --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(SRC)


def test_the_graph_sees_every_kind_of_import(graph):
    assert len(graph) > 50
    assert "cac_mhub.chain" in graph["cac_mhub.cli"]  # from .chain import ...
    assert "cac_mhub.dicom.identity" in graph["cac_mhub.dicom.scan"]  # from . import identity
    assert "cac_mhub.cli" in graph["cac_mhub.pacs.roundtrip"]  # inside a function: from .. import cli
    assert "cac_mhub" in graph["cac_mhub.cohort.files"]  # from .. import __version__


def test_no_import_cycle(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import loops (move the shared names into a module both import):\n" + "\n".join(
        " <-> ".join(group) for group in cycles)


def test_every_module_has_a_layer(graph):
    missing = sorted(m for m in graph if layer_of(m) is None)
    assert not missing, f"place these in a layer of tests/test_layers.py LAYERS: {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one(graph):
    names = [name for name, _ in LAYERS]
    found = [(a, b, line) for a, b, line in upward_imports(graph) if (a, b) not in EXCEPTIONS]
    assert not found, "imports that reach up a layer:\n" + "\n".join(
        f"{a} ({names[layer_of(a)]}) line {line} -> {b} ({names[layer_of(b)]})" for a, b, line in found)


def test_packages_kept_apart_do_not_import_each_other(graph):
    found = crossings(graph)
    assert not found, "imports between packages kept apart (APART):\n" + "\n".join(
        f"{a} line {line} -> {b}" for a, b, line in found)


def test_every_exception_is_still_needed(graph):
    needed = {(a, b) for a, b, _ in upward_imports(graph)}
    stale = sorted(set(EXCEPTIONS) - needed)
    assert not stale, f"remove these from EXCEPTIONS, the import is gone or no longer reaches up: {stale}"


# -- the checker itself, on a package made here -------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_finds_a_loop_through_a_function_level_relative_import(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from .b import x\n",
        "low/b.py": "def x():\n    from . import a\n",
        "low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import y\n",
        "low/d.py": "from .c import z\n",
    })
    graph = import_graph(src)
    assert graph["cac_mhub.low.a"] == {"cac_mhub.low.b": 1}
    assert graph["cac_mhub.low.b"] == {"cac_mhub.low.a": 2}
    assert graph["cac_mhub.low.c"] == {}  # TYPE_CHECKING only
    assert find_cycles(graph) == [["cac_mhub.low.a", "cac_mhub.low.b"]]


def test_checker_finds_an_arrow_up_and_lets_a_command_wire_layers(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/pure.py": "import cac_mhub.high.page\n",
        "low/command.py": "from ..high import page\n",
        "high/__init__.py": "",
        "high/page.py": "from cac_mhub.low.pure import f\n",
        "cli.py": "",
    })
    layers = (("base", (ROOT,)), ("low", ("cac_mhub.low",)), ("high", ("cac_mhub.high",)),
              ("command line", ("cac_mhub.cli",)))
    graph = import_graph(src)
    assert upward_imports(graph, layers) == [("cac_mhub.low.pure", "cac_mhub.high.page", 1)]
    apart = {("cac_mhub.high", "cac_mhub.low"): "kept apart"}
    assert crossings(graph, apart) == [("cac_mhub.high.page", "cac_mhub.low.pure", 1)]
