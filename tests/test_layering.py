"""The package's imports run one way: export/calibration -> runtime -> drivers -> common, no circles.

Read from the source with `ast`, so a deferred import inside a function counts as much as one at
the top of a module: either would break the robot image (runtime/ and drivers/ are shipped
without export/ and calibration/) or make import order matter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vla_runtime

ROOT = Path(vla_runtime.__file__).parent
# Which top-level folders each folder may import (besides itself). export and calibration sit side
# by side on the workstation: neither imports the other.
ALLOWED = {
    "common": set(),
    "drivers": {"common"},
    "runtime": {"drivers", "common"},
    "export": {"runtime", "drivers", "common"},
    "calibration": {"runtime", "drivers", "common"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "bench", "build") or len(rel.parts) == 1:
            continue
        parts = rel.with_suffix("").parts
        name = ".".join(("vla_runtime",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        mods[name] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        top = id(node) not in nested
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, top) for a in node.names if a.name.startswith("vla_runtime.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vla_runtime."):
            # `from pkg import submodule` depends on the submodule; `from mod import name` on mod.
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            found += [(m, node.lineno, top) for m in (subs or [node.module])]
    return found


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_seen():
    assert {_layer(m) for m in MODULES} == set(ALLOWED), "a new top-level folder needs a place in ALLOWED"
    assert "vla_runtime.runtime.conventions" in MODULES and len(MODULES) > 80


def test_imports_run_one_way():
    wrong = []
    for name, path in sorted(MODULES.items()):
        for target, line, _ in _imports(path):
            if _layer(target) != _layer(name) and _layer(target) not in ALLOWED[_layer(name)]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {
        name: {t for t, _, top in _imports(path) if t in MODULES and t != name and (top or not module_level_only)}
        for name, path in MODULES.items()
    }


def test_no_import_circles_at_module_level():
    assert _cycles(_graph(module_level_only=True)) == []


def test_no_import_circles_even_through_deferred_imports():
    assert _cycles(_graph(module_level_only=False)) == []


def test_the_checks_catch_a_circle_and_a_wrong_way_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("vla_runtime.calibration.pipeline") not in ALLOWED["export"]
    assert _layer("vla_runtime.runtime.policy") not in ALLOWED["drivers"]
