"""The house rules, read from the source: imports only go down the floors and never run in a
circle, and no production module or function outgrows what a reader holds in mind.

Every import counts, at module level or inside a function: an import deferred into a
function still makes the two modules need each other; deferring it only moves the failure
from import time to the first call.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The floors, bottom up (DESIGN.md "Layout and layering"): a package imports only packages
# on floors below its own; the three stages, on one floor, never import each other.
FLOORS = (
    ("config", "bus", "schemas"),  # settings, the bus's plumbing, the topics' contracts
    ("catalog", "warehouse"),
    ("producers", "processors", "sinks", "integrations"),  # the stages: they talk only through topics
    ("sluice",),  # the CLI: imports everything, nothing imports it
)
PACKAGES = tuple(package for floor in FLOORS for package in floor)
# Beyond the floors: the processors hand frames to the sinks through a topic, never to ClickHouse.
FORBIDDEN = {("processors", "warehouse")}

# Cycles tolerated for now, each with the change that removes it; an entry whose cycle is gone
# fails below: delete it then. None is left.
KNOWN_CYCLES: tuple[set[str], ...] = ()

MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80
# Functions tolerated over the limit for now, each with the change that splits it; an entry that
# is short now fails below: delete it then. None is left.
OVERSIZE_ALLOWED: set[str] = set()


@cache
def modules() -> dict[str, Path]:
    """{dotted name: file} of every production module."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@cache
def imports() -> dict[str, dict[str, int]]:
    """{module: {module of ours it imports: line}}, module level and function level alike."""
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", set(modules()))
            for name, path in modules().items()}


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> dict[str, int]:
    """{module of `known` that `source` imports anywhere: line of the first import}."""
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        for target in _targets(node, module, is_package):
            while target and target not in known:  # `a.b.attribute` is module a.b
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.setdefault(target, node.lineno)
    return edges


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module.split(".")[: None if is_package else -1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, *([node.module] if node.module else [])])
    return [f"{source}.{alias.name}" for alias in node.names]  # a submodule, or else `source` itself


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(group)
    return found


def a_path_around(group: set[str], graph: dict[str, dict[str, int]]) -> str:
    """The shortest cycle through the first module of `group`, each step with its import's line."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while start not in came_from:  # breadth first, back to the start
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target in group and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    steps, node = [], start
    while True:
        steps.append(f"{node} (line {graph[came_from[node]][node]} of {came_from[node]})")
        node = came_from[node]
        if node == start:
            return " -> ".join([start, *reversed(steps)])


def test_the_cycle_finder_finds_a_cycle_and_names_its_path():
    graph = {"a": {"b": 3}, "b": {"c": 4}, "c": {"a": 5, "d": 6}, "d": {}}
    [group] = cycles(graph)
    assert group == {"a", "b", "c"}
    assert a_path_around(group, graph) == "a -> b (line 3 of a) -> c (line 4 of b) -> a (line 5 of c)"
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_imports_are_read_at_any_depth_and_relative_ones_from_their_package():
    known = {"pkg", "pkg.mod", "pkg.x", "pkg.sub", "pkg.sub.y", "other"}
    source = "import other\nfrom . import x\n\ndef later():\n    from pkg.sub.y import thing\n"
    assert imports_of(source, "pkg.mod", False, known) == {"other": 1, "pkg.x": 2, "pkg.sub.y": 5}
    assert imports_of("from .. import x, absent", "pkg.sub", True, known) == {"pkg.x": 1, "pkg": 1}
    assert imports_of("from .y import z", "pkg.sub", True, known) == {"pkg.sub.y": 1}


def test_no_import_cycle_among_the_production_modules():
    graph = imports()
    found = cycles(graph)
    new = [a_path_around(group, graph) for group in found if group not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(new)
    gone = [sorted(known) for known in KNOWN_CYCLES if known not in found]
    assert not gone, f"these known cycles are gone: delete them from KNOWN_CYCLES: {gone}"


def test_imports_only_go_down_the_floors():
    floor_of = {package: level for level, floor in enumerate(FLOORS) for package in floor}
    wrong = []
    for module, targets in imports().items():
        package = module.split(".")[0]
        for target, line in targets.items():
            other = target.split(".")[0]
            if other != package and (floor_of[other] >= floor_of[package] or (package, other) in FORBIDDEN):
                wrong.append(f"{modules()[module].relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports that do not go down the floors:\n" + "\n".join(wrong)


def test_no_module_over_400_lines_and_no_function_over_80():
    over, allowed_and_over = [], set()
    for path in modules().values():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            over.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines <= MAX_FUNCTION_LINES:
                    continue
                if f"{name}:{node.name}" in OVERSIZE_ALLOWED:
                    allowed_and_over.add(f"{name}:{node.name}")
                else:
                    over.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not over, "too long:\n" + "\n".join(over)
    split = OVERSIZE_ALLOWED - allowed_and_over
    assert not split, f"these are short now: delete them from OVERSIZE_ALLOWED: {sorted(split)}"
