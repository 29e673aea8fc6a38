"""The import graph of the nirbench package follows the data (issue 24): no module imports itself
back through others (no cycle), and no stage imports a later one (no back-edge).

The graph is built statically: every .py file under harness/, methods/ and dashboards/ is parsed
(ast) and every ``import nirbench.x`` / ``from nirbench.x import y`` / relative import is an edge,
wherever it sits: at the top, inside a function (a deferred import still ties the two modules
together), under ``if TYPE_CHECKING`` (a type named is a module known). ``from pkg import name``
is an edge to the module ``pkg.name`` when that is a module, else to ``pkg``. Importing
``a.b.c`` also runs ``a/b/__init__.py``; that implicit edge is left out, as import linters do:
a package's __init__ re-exporting its modules is not a dependency of those modules on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "harness": "nirbench.harness",
    "methods": "nirbench.methods",
    "dashboards": "nirbench.dashboards",
}

# The stages, in the order the data flows: a module may import its own stage and the stages
# before it, never one after it (a back-edge). A module's stage is the first entry whose prefix
# it starts with (longest prefixes listed first where they overlap).
#   config      what a run is: the frozen config, the registry type, the epoch budgets
#   data        datasets, samplers, caches
#   train       what is trained: models, methods (methods/ sits with train), the objective
#   evaluation  embeddings -> numbers
#   tracking    MLflow and run locks
#   run         one run end to end: the engine fits and evaluates, the runner locks, resumes,
#               checkpoints and records; it drives the three stages before it, so it comes after
#               them although its files live in train/
#   grid        many runs (grid/) and the search (search/): grid/search
#   results     MLflow -> tables, statistics, plots
#   report      the HTML report and the dashboards' launchers (dashboards/)
#   commands    `nirbench ...` (cli/), `nirbench bench ...` (bench/) and the doctor: they may
#               import any stage, and no stage imports them
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (a prefix ending in "_" names a family of modules: config_schema.py, config_identity.py)
    (
        "config",
        (
            "nirbench.harness.config",
            "nirbench.harness.config_",
            "nirbench.harness.registry",
            "nirbench.harness.budgets",
        ),
    ),
    ("data", ("nirbench.harness.data",)),
    ("train", ("nirbench.methods", "nirbench.harness.train")),
    ("evaluation", ("nirbench.harness.evaluation",)),
    ("tracking", ("nirbench.harness.tracking",)),
    (
        "run",
        (
            "nirbench.harness.train.engine",
            "nirbench.harness.train.runner",
            "nirbench.harness.train.numerics",
        ),
    ),
    ("grid", ("nirbench.harness.grid", "nirbench.harness.search")),
    ("results", ("nirbench.harness.results",)),
    ("report", ("nirbench.dashboards",)),
    ("commands", ("nirbench.harness.cli", "nirbench.harness.bench", "nirbench.harness.doctor")),
)
STAGE_ORDER = [name for name, _ in STAGES]
# Package __init__ files that only name their package: the stage of what they hold.
PACKAGE_STAGES = {"nirbench.harness": "config"}

# Back-edges that are known and owned by another change (stage pairs, importer -> imported),
# each with who removes it. Keep this empty once they are gone: the test then guards them.
KNOWN_BACK_EDGES: dict[tuple[str, str], str] = {
    # harness/config.py validates method and regularizer names (and the pretraining recipe)
    # against the registries in methods/ and train/pretrain.py when a config is built; the
    # pydantic schema rewrite of config.py (issue 24, item 3) removes this edge.
    ("config", "train"): "config.py -> methods/, train/pretrain.py (the config schema rewrite)",
    # harness/config.py looks datasets up in the data registry (their recall_at and version) when
    # a config is built; part of the same rewrite of config.py.
    ("config", "data"): "config.py -> harness/data (the config schema rewrite)",
}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package __init__)."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join([package, *parts])] = (path, is_package)
    return modules


def _resolve(name: str, modules: dict) -> str | None:
    """The module ``name`` is, or the nearest package above it that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import of it}."""
    graph: dict[str, dict[str, int]] = {}
    for module, (path, is_package) in modules.items():
        package = module if is_package else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from ..pkg import y
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                    for a in node.names
                ]
            for target in targets:
                if not target.startswith("nirbench."):
                    continue
                found = _resolve(target, modules)
                if found is not None and found != module:
                    edges.setdefault(found, node.lineno)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, colours)."""
    colour: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if colour.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in colour:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if start not in colour:
            found = visit(start)
            if found:
                return found
    return None


def stage_of(module: str) -> str:
    if module in PACKAGE_STAGES:
        return PACKAGE_STAGES[module]
    best = None
    for name, prefixes in STAGES:
        for prefix in prefixes:
            matches = (
                module.startswith(prefix)
                if prefix.endswith("_")
                else module == prefix or module.startswith(prefix + ".")
            )
            if matches and (best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
    if best is None:
        raise AssertionError(
            f"{module} is in no stage of STAGES; add its folder to the stage its data belongs to"
        )
    return best[0]


def back_edges(graph: dict[str, dict[str, int]], modules: dict) -> list[tuple[str, str, str]]:
    """(stage pair, importer:line, imported) for every import of a later stage."""
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            a, b = stage_of(module), stage_of(target)
            if STAGE_ORDER.index(b) > STAGE_ORDER.index(a):
                found.append(
                    (f"{a} -> {b}", f"{modules[module][0].relative_to(ROOT)}:{line}", target)
                )
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, tuple[Path, bool]]:
    return module_files()


@pytest.fixture(scope="module")
def graph(modules) -> dict[str, dict[str, int]]:
    return import_graph(modules)


def test_the_graph_sees_the_package(modules, graph):
    """Guards the builder itself: it must find the modules and the edges everyone knows of."""
    assert len(modules) > 100
    assert "nirbench.harness.config" in graph["nirbench.harness.train.engine"]
    assert "nirbench.methods.base" in graph["nirbench.methods.nir"]
    # a function-level import: the slurm CLI defers its executor import into cmd_grid_slurm
    assert "nirbench.harness.grid.executors.slurm" in graph["nirbench.harness.cli.slurm"]
    # from pkg import module -> an edge to the module, not the package
    assert "nirbench.harness.grid.executors.job" in graph["nirbench.harness.grid.executors"]


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_stage_imports_a_later_stage(graph, modules):
    found = back_edges(graph, modules)
    unexpected = [e for e in found if tuple(e[0].split(" -> ")) not in KNOWN_BACK_EDGES]
    assert not unexpected, (
        "imports of a later stage (the graph must follow "
        + " -> ".join(STAGE_ORDER)
        + "):\n"
        + "\n".join(f"  {pair}: {where} imports {target}" for pair, where, target in unexpected)
    )


def test_known_back_edges_still_exist(graph, modules):
    """An exception whose edge is gone must leave KNOWN_BACK_EDGES, so that it is guarded."""
    present = {tuple(e[0].split(" -> ")) for e in back_edges(graph, modules)}
    stale = [
        f"{a} -> {b} ({why})" for (a, b), why in KNOWN_BACK_EDGES.items() if (a, b) not in present
    ]
    assert not stale, "no longer back-edges, remove them from KNOWN_BACK_EDGES: " + "; ".join(stale)


def test_every_module_has_a_stage(modules):
    for module in modules:
        stage_of(module)


def test_the_checks_catch_a_cycle_and_a_back_edge():
    """The detectors against a hand-made graph: a 3-cycle is found and printed in order; an
    edge from tracking to results is a back-edge, the reverse is not."""
    cyclic = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycle(cyclic) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None
    fake = {
        "nirbench.harness.tracking.store": (ROOT / "harness/tracking/store.py", False),
        "nirbench.harness.results.arms": (ROOT / "harness/results/arms.py", False),
    }
    forward = {"nirbench.harness.results.arms": {"nirbench.harness.tracking.store": 3}}
    backward = {"nirbench.harness.tracking.store": {"nirbench.harness.results.arms": 7}}
    assert back_edges(forward, fake) == []
    assert back_edges(backward, fake) == [
        ("tracking -> results", "harness/tracking/store.py:7", "nirbench.harness.results.arms")
    ]
