"""Templates (seed 001, "Ingesting via templates"): declarative mappings from a raw
third-party JSON payload onto an org's metrics.

A template names, as JMESPath expressions, where the records are in the payload,
where each record's timestamp is (and in which format), and which expression
feeds which metric (by metric name). Each update is a new revision; revisions are
immutable catalog entities of their own (`template_revision`, id `tmpl_…@n`), so
the edge pins the revision a request is mapped with and a concurrent update
cannot change the mapping mid-flight.

Expressions are compiled once per revision (`compiled`), by the edge when the
template is written (a template that does not compile is refused) and by the
processors on first use; compiled revisions are cached by revision id, which
never names two different mappings.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from catalog.errors import Invalid, not_found
from catalog.ids import new_id
from catalog.models import TemplateIn
from catalog.store import Store, now_ms, ordered

REVISION_KIND = "template_revision"
TIMESTAMP_FORMATS = ("epochMillis", "epochSeconds", "iso8601")
COMPILED_CACHE_SIZE = 1024  # revisions kept compiled per process

# Bounds on each expression's shape, checked when it compiles (so a template that breaks them is
# refused when written): what one evaluation can cost grows with the number of nodes, with the
# width of a multi-select (each element evaluates the whole sub-expression again) and with nested
# projections (each multiplies by the size of the data it projects over). The processor's
# per-request CPU budget (processors.budget) bounds the rest.
MAX_NODES = 256
MAX_DEPTH = 32
MAX_MULTISELECT = 32
MAX_NESTED_PROJECTIONS = 4
_PROJECTIONS = {"projection", "value_projection", "filter_projection", "flatten"}


def revision_id(template_id: str, revision: int) -> str:
    """The catalog id of one revision: `tmpl_…@7` (what the edge pins in the envelope)."""
    return f"{template_id}@{revision}"


@dataclass(frozen=True)
class CompiledTemplate:
    """One revision's expressions, parsed: what the processors' mapper runs."""

    template_id: str
    revision: int
    records: ParsedResult
    timestamp: ParsedResult
    timestamp_format: str
    metrics: tuple[tuple[str, ParsedResult], ...]  # (metric name as the template spells it, expression)


class TemplateCompileError(ValueError):
    def __init__(self, field: str, expression: str, reason: str):
        super().__init__(f"{field}: expression {expression!r} does not compile: {reason}")
        self.field, self.expression, self.reason = field, expression, reason


def compile_expression(field: str, expression: str) -> ParsedResult:
    """One JMESPath expression, parsed and checked against the MAX_* bounds (TemplateCompileError
    names `field` otherwise); integrations compile their resource expression with it too."""
    try:
        parsed = jmespath.compile(expression)
    except JMESPathError as exc:
        reason = re.sub(r"\s+", " ", str(exc)).strip()
        raise TemplateCompileError(field, expression, reason) from None
    too_costly = _too_costly(parsed.parsed)
    if too_costly:
        raise TemplateCompileError(field, expression, too_costly)
    return parsed


def _too_costly(root: dict) -> str:
    """Why the expression's tree breaks a bound (MAX_*), or ''."""
    nodes = 0
    stack = [(root, 1, 0)]  # (node, depth, projections above and at it)
    while stack:
        node, depth, projections = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"it has more than {MAX_NODES} parts"
        if depth > MAX_DEPTH:
            return f"it nests deeper than {MAX_DEPTH} levels"
        kind = node.get("type")
        children = node.get("children") or []
        if kind in ("multi_select_list", "multi_select_dict") and len(children) > MAX_MULTISELECT:
            return f"a multi-select of {len(children)} elements; at most {MAX_MULTISELECT}"
        if kind in _PROJECTIONS:
            projections += 1
            if projections > MAX_NESTED_PROJECTIONS:
                return f"more than {MAX_NESTED_PROJECTIONS} nested projections"
        stack.extend((child, depth + 1, projections) for child in children if isinstance(child, dict))
    return ""


def compile_revision(body: dict) -> CompiledTemplate:
    """Parse every expression of a revision body; TemplateCompileError names the first that fails."""
    return CompiledTemplate(
        body["id"], body["revision"],
        compile_expression("records", body["records"]),
        compile_expression("timestamp.path", body["timestamp"]["path"]),
        body["timestamp"]["format"],
        tuple((name, compile_expression(f"metrics.{name}", expression))
              for name, expression in body["metrics"].items()),
    )


_cache: OrderedDict[str, CompiledTemplate] = OrderedDict()
_cache_lock = Lock()


def compiled(body: dict) -> CompiledTemplate:
    """The revision `body`, compiled once per process (revisions never change, so the
    revision id is the whole cache key). Raises TemplateCompileError."""
    key = revision_id(body["id"], body["revision"])
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    found = compile_revision(body)
    with _cache_lock:
        _cache[key] = found
        while len(_cache) > COMPILED_CACHE_SIZE:
            _cache.popitem(last=False)
    return found


class Templates(Store):
    """Templates and their revisions. `template/{id}` holds the latest revision (with
    `revision`, its number); `template_revision/{id}@{n}` holds every revision, as written."""

    def _check(self, org_id: str, spec: TemplateIn) -> None:
        try:
            compile_revision({"id": "", "revision": 0, **spec.model_dump(mode="json")})
        except TemplateCompileError as exc:
            raise Invalid(str(exc), field=exc.field, code="INVALID_TEMPLATE", expression=exc.expression,
                          reason=exc.reason) from None
        for name, expression in spec.metrics.items():
            if self.view.metric_id_by_name(org_id, name) is None:
                raise Invalid(f"metrics.{name}: expression {expression!r} feeds metric "
                              f"{name!r}, which is not defined in this organization", field=f"metrics.{name}",
                              code="UNKNOWN_METRIC", expression=expression)

    def _write_revision(self, org_id: str, template_id: str, revision: int, spec: TemplateIn,
                        created_at: int) -> dict:
        now = now_ms()
        body = {"id": template_id, "revision": revision, **spec.model_dump(mode="json"),
                "createdAt": created_at, "updatedAt": now}
        # The revision first: the template never points at a revision no view has.
        self.writer.put(REVISION_KIND, revision_id(template_id, revision), org_id, body)
        return self.writer.put("template", template_id, org_id, body)

    def create_template(self, org_id: str, spec: TemplateIn) -> dict:
        self._check(org_id, spec)
        return self._write_revision(org_id, new_id("template"), 1, spec, now_ms())

    def update_template(self, org_id: str, template_id: str, spec: TemplateIn) -> dict:
        """A new revision becomes the template's current one; the old stay readable."""
        current = self.template(org_id, template_id)
        self._check(org_id, spec)
        return self._write_revision(org_id, template_id, current["revision"] + 1, spec, current["createdAt"])

    def delete_template(self, org_id: str, template_id: str) -> None:
        """Forget the template and its revisions (requests already accepted with it are
        answered 404 TEMPLATE_NOT_FOUND by the processor)."""
        current = self.template(org_id, template_id)
        for revision in range(1, current["revision"] + 1):
            key = revision_id(template_id, revision)
            if (body := self.view.get(REVISION_KIND, key, org_id)) is not None:
                self.writer.put(REVISION_KIND, key, org_id, {**body, "deleted": True})
        self.writer.put("template", template_id, org_id, {**current, "deleted": True, "deletedAt": now_ms()})

    def template(self, org_id: str, template_id: str) -> dict:
        return self._get("template", template_id, org_id)

    def template_revision(self, org_id: str, template_id: str, revision: int) -> dict:
        body = self.view.get(REVISION_KIND, revision_id(template_id, revision), org_id)
        if body is None:
            raise not_found("template revision", revision_id(template_id, revision))
        return body

    def templates(self, org_id: str) -> list[dict]:
        return ordered(self.view.list("template", org_id))
