"""The packages depend on each other one way: no cycle between them, and the API never sees the platform.

Read from the source with `ast` (imports under `if TYPE_CHECKING:` excluded: they are for the type
checker, not dependencies at run time).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import conveyor

SOURCE = Path(conveyor.__file__).parent


def _package_of(module: str) -> str | None:
    """`conveyor.api.routes.jobs` → `api`; a top-level module (`conveyor.errors`) is its own package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "conveyor" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for statement in guard.body
        for node in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        own = _package_of("conveyor." + ".".join(path.relative_to(SOURCE).with_suffix("").parts))
        for imported in _imports(path):
            other = _package_of(imported)
            if own and other and other != own:
                graph[own].add(other)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph (as a path back to its start), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for following in sorted(graph.get(node, ())):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following] if following in path else [node, following]
            if following not in state and (found := visit(following, [*path, following])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_cycle_between_packages() -> None:
    assert _cycle(_package_graph()) is None


def test_the_api_never_imports_the_platform() -> None:
    offenders = sorted(
        str(path.relative_to(SOURCE))
        for path in (SOURCE / "api").rglob("*.py")
        if any(_package_of(imported) == "platform" for imported in _imports(path))
    )
    assert offenders == []


def test_the_control_plane_knows_neither_its_clients_nor_the_platform() -> None:
    assert _package_graph()["control"].isdisjoint({"api", "cli", "platform"})


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
