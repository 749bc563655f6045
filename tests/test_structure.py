"""The package's shape: its import graph has no cycle and no import from a lower layer to a
higher one, no module is over 450 lines and no function body over 60 lines of code.

The imports are read with :mod:`ast`, not by importing: every ``import`` counts, including
those inside functions and under ``TYPE_CHECKING`` (a lazy import that would close a cycle
is a cycle all the same). Importing ``a.b.c`` runs ``a.b``'s ``__init__`` first, so an
import of a submodule counts as an import of the packages above it too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "avalanche_m2kd"

#: Every module of the package, by layer, lowest first. A module imports only from its
#: own layer or lower ones; a new module must be given a layer here.
LAYERS: tuple[tuple[str, ...], ...] = (
    # leaves: validation, maths, Avalanche internals, storage, data, files
    (
        "_avalanche",
        "_torch",
        "options",
        "losses",
        "pruning",
        "features",
        "rng",
        "stream",
        "batchnorm",
        "criterion",
        "metrics",
        "loggers",
        "training",
        "checkpoint_format",
        "checkpoint_files",
        "output_cache",
        "storage",
        "storage.base",
        "storage.nested",
        "storage.pruned",
        "storage.modes",
        "data",
        "data.tensors",
        "data.cifar",
        "data.digits",
        "data.fmnist",
    ),
    # teachers and what the plugins run
    ("frozen_teacher", "keep_search", "exemplars"),
    ("batched_teachers",),
    ("snapshots",),
    ("option_types",),
    # the plugins
    (
        "plugins",
        "plugins.teachers",
        "plugins._teachers",
        "plugins.class_masking",
        "plugins.nested_training",
        "plugins.snapshot_masking",
        "plugins.multi_model",
        "plugins.multi_level",
    ),
    ("strategy",),
    # checkpointing reads strategies and plugins
    ("plugin_state", "strategy_state"),
    ("checkpoint",),
    ("",),  # the package's __init__
)

MAX_MODULE_LINES = 450
MAX_FUNCTION_CODE_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ancestors(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["", "a", "a.b"]``: the packages whose ``__init__`` runs first."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts))]


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules ``path`` imports (names relative to the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for full in names:
            if full != "avalanche_m2kd" and not full.startswith("avalanche_m2kd."):
                continue
            name = full.removeprefix("avalanche_m2kd").removeprefix(".")
            if name in known:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs (with the packages above each import),
    leaving out a module's own packages (they are already being imported)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = set(_ancestors(name))
        edges: set[str] = set()
        for dep in _imports(path, known):
            edges |= {dep, *_ancestors(dep)}
        graph[name] = {d for d in edges if d != name and d not in own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes (first repeated last), or ``None``.

    Example:
        >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
        ['a', 'b', 'c', 'a']
        >>> find_cycle({"a": {"b"}, "b": set()}) is None
        True
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_a_self_closing_chain() -> None:
    assert find_cycle({"x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) is None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(c or "avalanche_m2kd" for c in cycle)


def test_every_module_has_a_layer() -> None:
    layered = [name for layer in LAYERS for name in layer]
    assert len(layered) == len(set(layered)), "a module is listed in two layers"
    missing = sorted(set(_modules()) - set(layered))
    stale = sorted(set(layered) - set(_modules()))
    assert not missing, f"modules with no layer in tests/test_structure.py LAYERS: {missing}"
    assert not stale, f"LAYERS names modules that no longer exist: {stale}"


def test_no_import_reaches_up_a_layer() -> None:
    layer_of = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = [
        f"{name or 'avalanche_m2kd'} (layer {layer_of[name]}) imports {dep} (layer {layer_of[dep]})"
        for name, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if layer_of[dep] > layer_of[name]
    ]
    assert not upward, "\n".join(upward)


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from avalanche_m2kd.strategy import M2KDStrategy\n"
        "def f():\n    import avalanche_m2kd.plugins.teachers\n"
        "from avalanche_m2kd.storage import base\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"strategy", "plugins.teachers", "storage", "storage.base"}
    assert _imports(path, known) == known


def _code_lines(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code in ``node``'s body: no docstring, blank or comment-only line."""
    body = node.body
    first = body[0]
    doc: set[int] = set()
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        doc = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
        if len(body) == 1:
            return 0
        first = body[1]
    end = node.end_lineno or node.lineno
    return sum(
        1
        for i in range(first.lineno, end + 1)
        if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


@pytest.mark.parametrize("name", sorted(_modules()), ids=lambda n: n or "__init__")
def test_module_and_function_sizes(name: str) -> None:
    path = _modules()[name]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, (
        f"{path.name} has {len(lines)} lines (at most {MAX_MODULE_LINES}): split it by concern"
    )
    long = [
        f"{node.name} (line {node.lineno}): {n} lines of code"
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (n := _code_lines(lines, node)) > MAX_FUNCTION_CODE_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_CODE_LINES} lines of code in {path}: {long}"
