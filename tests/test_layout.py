"""The house's boundaries, read from the source's imports (issue 13): the folders of harness/ are
the stages of the pipeline, and these rules keep them that way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "dashboards")


def source_files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = ["nirbench", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside a function (``from a import b`` counts
    as ``a`` and as ``a.b``, since b may be a submodule). Imports under ``if TYPE_CHECKING:`` are
    for annotations only and never run, so they do not count."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []  # ast.walk has not descended into it yet
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def importers_of(top: str) -> list[str]:
    return [
        module_name(p)
        for p in source_files(*PACKAGES)
        if any(m == top or m.startswith(top + ".") for m in imported_modules(p))
    ]


def test_mlflow_is_imported_only_in_tracking():
    offenders = [m for m in importers_of("mlflow") if not m.startswith("nirbench.harness.tracking")]
    assert offenders == [], f"mlflow imported outside harness/tracking/: {offenders}"
    assert "nirbench.harness.tracking.store" in importers_of(
        "mlflow"
    )  # the rule reads real imports


def test_optuna_is_imported_only_in_search():
    offenders = [m for m in importers_of("optuna") if not m.startswith("nirbench.harness.search")]
    assert offenders == [], f"optuna imported outside harness/search/: {offenders}"
    assert "nirbench.harness.search.study" in importers_of("optuna")


def test_methods_import_only_the_registry_from_harness():
    allowed = {
        "nirbench.harness",
        "nirbench.harness.registry",
        "nirbench.harness.registry.Registry",
    }
    for path in source_files("methods"):
        used = {
            m
            for m in imported_modules(path)
            if m == "nirbench.harness" or m.startswith("nirbench.harness.")
        }
        assert used <= allowed, f"{path.name} imports {sorted(used - allowed)} from harness"


def _method_and_regularizer_names() -> set[str]:
    from nirbench.methods import METHODS, REGULARIZERS

    return set(METHODS.names()) | set(REGULARIZERS.names())


def _branches_on_a_name(tree: ast.AST, names: set[str]) -> list[str]:
    """Comparisons (==, !=, in, match) against a registered method/regularizer name, or against
    an expression that reads ``...method.name`` / ``method_name``."""

    def reads_a_name(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(reads_a_name(e) for e in node.elts)
        if isinstance(node, ast.Attribute) and node.attr == "name":
            inner = node.value
            return isinstance(inner, ast.Attribute) and inner.attr in ("method", "regularizer")
        return isinstance(node, ast.Name) and node.id in ("method_name", "regularizer_name")

    found = []
    for node in ast.walk(tree):
        operands = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        is_none_check = any(isinstance(x, ast.Constant) and x.value is None for x in operands)
        if operands and not is_none_check and any(reads_a_name(x) for x in operands):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Match) and reads_a_name(node.subject):
            found.append(f"line {node.lineno}: match {ast.unparse(node.subject)}")
    return found


@pytest.mark.parametrize("module", ["engine", "objective", "runner", "models"])
def test_training_never_branches_on_a_method_name(module):
    path = ROOT / "harness" / "train" / f"{module}.py"
    found = _branches_on_a_name(ast.parse(path.read_text()), _method_and_regularizer_names())
    assert found == [], f"harness/train/{module}.py branches on a method name: {found}"


def test_the_branch_detector_detects_branches():
    names = {"proxy_anchor", "nir"}
    code = (
        "if cfg.method.name == 'x': pass\nif name in ('proxy_anchor', 'y'): pass\n"
        "if method_name != 'z': pass\nif cfg.train.epochs == 3: pass\n"
        "if regularizer_name is not None: pass\n"
    )
    assert len(_branches_on_a_name(ast.parse(code), names)) == 3


def test_no_import_cycles_between_harness_modules():
    """Imports inside functions count too: the old cli <-> grid_cli cycle was made of those."""
    modules = {module_name(p): p for p in source_files("harness")}
    graph = {
        m: {i for i in imported_modules(p) if i in modules and i != m} for m, p in modules.items()
    }
    # A package's __init__ may re-export its own modules; a cycle through it is not a design one.
    for m in graph:
        graph[m] = {
            i for i in graph[m] if not (modules[i].stem == "__init__" and m.startswith(i + "."))
        }
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_subcommand_has_its_own_module():
    from nirbench.harness.cli.main import SUBCOMMANDS

    for name in SUBCOMMANDS:
        assert (ROOT / "harness" / "cli" / f"{name}.py").is_file(), name
