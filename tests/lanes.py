"""The two test lanes, derived from what each test runs rather than declared by hand.

A test is `e2e` when it needs a service: its fixtures include one that starts the broker,
the schema registry, ClickHouse or the whole stack, or the code it runs (its body, its
fixtures, and the helpers and classes of tests/ they call, followed to the end) starts one
itself. Every other test is `unit`: no broker, no registry, no chDB, so `pytest -m unit`
answers in seconds. A test may still say `@pytest.mark.e2e` where this reading cannot see
the service (a command line built at run time); `tests/test_lanes.py` runs the unit lane and
names any test in it that started a JVM or opened chDB.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import re
import types

# Session fixtures that start a service (tests/conftest.py, tests/registry_fixture.py).
SERVICE_FIXTURES = frozenset({"kafka_bootstrap", "clickhouse_url", "schema_registry", "stack"})

# Names whose call starts a service: the stack, a warehouse engine (chDB or a server client).
SERVICE_CALLS = frozenset({
    "Stack", "stack_with_battery", "kafka_bootstrap_for_tests", "clickhouse_url_for_tests",
    "ChdbWarehouse", "ServerWarehouse", "open_warehouse", "get_client",
})

# ... or in a script a test hands to another Python (`python -c "...ChdbWarehouse(..."`).
_CALL_IN_SCRIPT = re.compile(r"\b(%s)\(" % "|".join(sorted(SERVICE_CALLS)))

# The local JVMs are built without starting (their shape is tested alone); `start` or a
# `with` block runs them.
JVM_CLASSES = frozenset({"LocalKafka", "LocalKafkaCluster", "LocalRegistry"})
_WITH = frozenset({"BEFORE_WITH", "BEFORE_ASYNC_WITH", "LOAD_SPECIAL"})

# `sluice` commands that run services, as a test spawns them (`python -m sluice.cli up`).
SERVICE_COMMANDS = frozenset({"up", "kafka", "registry", "edge", "processor", "sink"})


def lane(item) -> tuple[str, str]:
    """('e2e', why) or ('unit', ''), for a collected pytest item."""
    if item.get_closest_marker("e2e"):
        return "e2e", "marked"
    fixtures = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if fixtures:
        return "e2e", f"fixture {sorted(fixtures)[0]}"
    roots = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info else ()):
        roots.extend(definition.func for definition in definitions)
    seen: set[int] = set()
    for root in roots:
        why = _starts_service(root, seen)
        if why:
            return "e2e", why
    return "unit", ""


def _starts_service(obj, seen: set[int]) -> str:
    """What in `obj` (a function or class of tests/, followed through its helpers) starts a
    service, or ''."""
    if obj is None or id(obj) in seen:
        return ""
    seen.add(id(obj))
    if inspect.isclass(obj):
        for member in vars(obj).values():
            why = _starts_service(getattr(member, "__func__", member), seen)
            if why:
                return why
        return ""
    code = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    if code is None:
        return ""
    namespace = getattr(inspect.unwrap(obj), "__globals__", {})
    for each in _code_objects(code):
        names, strings = set(each.co_names), {c for c in each.co_consts if isinstance(c, str)}
        instructions = list(dis.get_instructions(each))
        if names & SERVICE_CALLS:
            return f"calls {sorted(names & SERVICE_CALLS)[0]}"
        if any(_CALL_IN_SCRIPT.search(text) for text in strings):
            return f"runs a script calling {_CALL_IN_SCRIPT.search(' '.join(strings))[1]}"
        if names & JVM_CLASSES and ("start" in names or any(i.opname in _WITH for i in instructions)):
            return f"starts {sorted(names & JVM_CLASSES)[0]}"
        if "sluice.cli" in strings and strings & SERVICE_COMMANDS:
            return f"runs sluice {sorted(strings & SERVICE_COMMANDS)[0]}"
        for helper in _helpers(instructions, namespace):
            why = _starts_service(helper, seen)
            if why:
                return why
    return ""


def _helpers(instructions: list[dis.Instruction], namespace: dict):
    """The functions and classes of tests/ that this code names: globals, and names it
    imports inside a function (`from tests.test_sluice_up import Up`)."""
    module = ""
    for instruction in instructions:
        if instruction.opname == "IMPORT_NAME":
            module = instruction.argval
        elif instruction.opname == "IMPORT_FROM" and module.startswith("tests."):
            helper = getattr(importlib.import_module(module), instruction.argval, None)
            if _is_ours(helper):
                yield helper
        elif instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and _is_ours(namespace.get(instruction.argval)):
            yield namespace[instruction.argval]


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _is_ours(obj) -> bool:
    """A function or class of the test suite (production code is not followed: what it starts
    is named in SERVICE_CALLS and JVM_CLASSES)."""
    module = getattr(obj, "__module__", "") or ""
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and (module == "tests" or module.startswith("tests."))
