"""ds01's packages form layers: no import loop between them, and none imports a layer above.

Every import in ``src/ds01`` counts, at module level or inside a function (a lazy import
is still a dependency; only its cost is deferred). A package is a top-level name under
``ds01``: ``ds01.core.allocation`` belongs to ``core``, ``ds01.errors`` is ``errors`` and
``ds01/__init__.py`` (the version) is ``ds01``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"
ROOT = SOURCE / "ds01"

#: Bottom to top. A package may import its own layer's packages and any layer below.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"ds01", "exitcodes", "errors", "paths", "files", "problem_log", "model"}),
    frozenset({"config"}),
    frozenset({"core"}),
    frozenset({"gpu", "runtime", "events", "host_setup"}),
    frozenset({"metrics"}),
    frozenset({"daemon"}),
    frozenset({"cli"}),
    # The dashboard takes its arguments and client from the CLI; the simulator its tables.
    frozenset({"tui", "sim"}),
    # The JupyterHub spawner is a client of ds01d like the CLI, through its client.
    frozenset({"jupyterhub"}),
)

Edge = tuple[str, str]


def _module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a source file, and whether it is a package's ``__init__``."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split("."))
    return (SOURCE / relative).with_suffix(".py").is_file() or (SOURCE / relative).is_dir()


def _imported(path: Path) -> Iterator[tuple[str, int]]:
    """Every ds01 module ``path`` imports (absolute or relative, at any depth), with its line."""
    module, is_package = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                # `from ds01.runtime import store` imports the module ds01.runtime.store.
                submodule = f"{target}.{alias.name}"
                yield (submodule if _is_module(submodule) else target), node.lineno


def _package(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_imports(root: Path = ROOT) -> dict[Edge, list[str]]:
    """(importing package, imported package) → where (``path:line``), ds01's own only."""
    edges: dict[Edge, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        source = _package(_module_name(path)[0])
        for target, line in _imported(path):
            if target != "ds01" and not target.startswith("ds01."):
                continue
            imported = _package(target)
            if imported != source:
                where = f"{path.relative_to(SOURCE)}:{line}"
                edges.setdefault((source, imported), []).append(where)
    return edges


def find_cycle(edges: dict[Edge, list[str]]) -> list[str] | None:
    """One cycle of the package graph (``[a, b, …, a]``), or ``None`` when it has none."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> list[str] | None:
        if package in path:
            return [*path[path.index(package) :], package]
        if package in done:
            return None
        for imported in sorted(graph.get(package, ())):
            cycle = visit(imported, [*path, package])
            if cycle:
                return cycle
        done.add(package)
        return None

    for package in sorted(graph):
        cycle = visit(package, [])
        if cycle:
            return cycle
    return None


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"package {package!r} is in no layer of LAYERS: add it there")


def upward_imports(edges: dict[Edge, list[str]]) -> list[str]:
    """``a -> b (where)`` for every import of a package in a layer above the importer's."""
    return [
        f"{source} -> {target} ({', '.join(sorted(set(where)))})"
        for (source, target), where in sorted(edges.items())
        if layer_of(target) > layer_of(source)
    ]


def test_no_import_cycle_between_packages() -> None:
    edges = package_imports()
    cycle = find_cycle(edges)
    if cycle:
        steps = [
            f"  {a} -> {b}: {', '.join(sorted(set(edges[(a, b)]))[:3])}"
            for a, b in itertools.pairwise(cycle)
        ]
        loop = " -> ".join(cycle)
        pytest.fail(f"import cycle between packages: {loop}\n" + "\n".join(steps))


def test_no_package_imports_a_layer_above_its_own() -> None:
    upward = upward_imports(package_imports())
    assert not upward, "imports of a layer above:\n" + "\n".join(upward)


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module_name(p)[0]) for p in ROOT.rglob("*.py")}
    for package in packages:
        layer_of(package)


def test_the_cli_never_imports_the_dashboard_or_the_daemon_at_start_up() -> None:
    """``ds01.cli`` imports no ``ds01.tui`` at all, and ``ds01.daemon`` only inside a function
    (the admin commands that check or restore files without ds01d)."""
    for path in (ROOT / "cli").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {
            node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
        }
        every = {target for target, _ in _imported(path)}
        assert not any(_package(t) == "tui" for t in every), path
        assert not any(m.startswith("ds01.daemon") for m in top_level), path


def test_the_check_finds_a_cycle_and_an_upward_import() -> None:
    """The checks themselves, on a made-up tree: core imports gpu, gpu imports core back."""
    edges: dict[Edge, list[str]] = {("core", "gpu"): ["x:1"], ("gpu", "core"): ["y:2"]}
    assert find_cycle(edges) == ["core", "gpu", "core"]
    assert upward_imports(edges) == ["core -> gpu (x:1)"]
    assert find_cycle({("cli", "core"): ["z:3"]}) is None
