"""The packages' import graph: no circle, and data flows one way (search -> trainable; results read what trials
wrote), so nothing below ``search`` imports ``search`` or Ray Tune.

Read from the source with ``ast``, every import counted, those inside functions too: a lazy import is still
an edge, it only moves when the circle bites. And the README's layout section names every module of the tree.
"""

from __future__ import annotations

import ast
import re
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


def test_the_readme_layout_names_every_module_and_only_those() -> None:
    """Every module of the packages, bench script, document and test helper is in the README's layout section,
    and every file name the section gives exists: the map matches the tree."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("\n## Layout\n") :]
    layout = layout[: layout.index("\n## ", 1)]
    files = [p for package in PACKAGES for p in (ROOT / package).glob("*.py") if p.stem not in ("__init__", "__main__")]
    files += [*(ROOT / "bench").glob("*.py"), *(ROOT / "bench").glob("*.sh"), *(ROOT / "docs").glob("*.md")]
    files += [p for p in (ROOT / "tests").glob("*.py") if not p.name.startswith("test_")]
    assert sorted(p.name for p in files if p.name not in layout) == []
    folders = [p for p in (ROOT / "trainable").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert sorted(p.name for p in folders if f"{p.name}/" not in layout) == []
    named = set(re.findall(r"[\w/]+\.(?:py|sh|md|yaml)\b", layout))
    tops = (*PACKAGES, "spaces", "bench", "docs", "tests")
    tree = {str(p.relative_to(ROOT)) for top in tops for p in (ROOT / top).rglob("*")} | {"cluster.yaml", "README.md"}
    names = {p.rsplit("/", 1)[-1] for p in tree}
    assert sorted(n for n in named if n not in tree and n.rsplit("/", 1)[-1] not in names and "*" not in n) == []
