"""The packages' module-level imports form no cycle (no function-level import dodges one)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gessl", "theory", "experiments", "paper_figures")


def _module_imports() -> dict[str, set[str]]:
    """Each module's imports of this project's modules, at module level (also inside a
    module-level ``if``/``try``/``with``), resolved to the modules that exist."""
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            deps: set[str] = set()
            for node in ast.parse(path.read_text()).body:
                nested = isinstance(node, (ast.If, ast.Try, ast.With))
                for sub in ast.walk(node) if nested else [node]:
                    if isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                        deps.add(sub.module)
                    elif isinstance(sub, ast.Import):
                        deps.update(a.name for a in sub.names)
            found[name] = deps

    def resolve(dep: str) -> str:
        while dep and dep not in found:
            dep = dep.rpartition(".")[0]
        return dep

    return {
        m: {r for d in deps if (r := resolve(d)) and r != m and not m.startswith(r + ".")}
        for m, deps in found.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan 1972)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_level_import_cycle():
    graph = _module_imports()
    assert "experiments.tracking" in graph and "paper_figures.records" in graph
    # the records: one module the CLI, the database store and the figures read
    assert "paper_figures.records" in graph["experiments.records_db"]
    assert "paper_figures.records" in graph["experiments.runs"]
    assert "experiments.runs" not in graph["experiments.records_db"]
    assert "experiments.tracking" not in graph["experiments.pipeline"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
