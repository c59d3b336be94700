"""The packages' import graph: no circle, and data flows one way (search -> trainable; results read what trials
wrote), so nothing below ``search`` imports ``search`` or Ray Tune.

Read from the source with ``ast``, every import counted, those inside functions too: a lazy import is still
an edge, it only moves when the circle bites.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "trainable", "results")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports: a project module by its name, anything else by its dotted name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub``: the submodule when it is one, else a name of pkg itself.
            subs = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
            found.update(subs or {base})
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle among the project's modules, as the list of its modules, or None."""
    inside = {name: {m for m in targets if m in edges and m != name} for name, targets in edges.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(inside[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(inside):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checker_finds_a_circle() -> None:
    # The check itself can fail: a two-module circle, and one through three modules.
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert cycle({"a": {"b", "os"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"os"}}) is None


def test_no_import_circle_in_the_packages() -> None:
    edges = graph()
    assert "trainable.loop" in edges and "trainable.timebalance" in edges["trainable.loop"]  # the graph is real
    assert cycle(edges) is None


def test_nothing_below_search_imports_search_or_ray_tune() -> None:
    upward = {
        name: sorted(m for m in targets if m == "search" or m.startswith(("search.", "ray.tune")) or m == "ray.tune")
        for name, targets in graph().items()
        if not name.startswith("search")
    }
    assert {name: found for name, found in upward.items() if found} == {}
