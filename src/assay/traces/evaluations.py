"""Evaluation results carried inside traces: verdicts another tool's judge already gave a unit.

Three conventions are read, as ingested (nothing here decides what a verdict means; ``external``
evaluators do, :mod:`assay.evaluators.carried`):

* **OTel GenAI** ``gen_ai.evaluation.result`` events (span events, or log records joined to their span;
  assay exports its own scores so, :mod:`assay.suite.score_export`): ``gen_ai.evaluation.name``,
  ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.score.label``, ``gen_ai.evaluation.explanation``,
  ``error.type`` when the evaluation failed; the judge model from ``assay.judge.model`` or
  ``gen_ai.response.model``/``gen_ai.request.model``, a version from ``assay.evaluator.version``.
* **OpenInference** annotations on spans (``spec/semantic_conventions.md``): ``annotations.N.annotation.*``,
  ``evaluations.N.evaluation.*`` and their ``trace.`` / ``session.`` scoped forms (``name``, ``label``,
  ``score``, ``explanation``, ``annotator_kind``, ``identifier``, ``metadata``), flattened or as a JSON list.
* **Langfuse** scores in an export (``trace.scores``, kept on the unit as ``attributes["langfuse_scores"]``):
  ``name``, ``value`` / ``stringValue`` by ``dataType``, ``comment``, ``source`` (``EVAL``: an LLM-as-a-judge,
  ``API``: code, ``ANNOTATION``: a person), ``timestamp``.

Each becomes a :class:`CarriedEvaluation` with ``annotator_kind`` (``LLM``, ``CODE``, ``HUMAN`` or None):
a person's annotation is a label, not a judge's verdict, and callers treat it so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from assay.traces.model import Span, Unit

EVALUATION_EVENT = "gen_ai.evaluation.result"
_OI_KEY = re.compile(r"^(?P<scope>trace\.|session\.)?(?P<list>annotations|evaluations)\.(?P<i>\d+)\."
                     r"(?:annotation|evaluation)\.(?P<field>\w+)$")
_LANGFUSE_KIND = {"EVAL": "LLM", "API": "CODE", "ANNOTATION": "HUMAN"}


class CarriedEvaluation(BaseModel):
    """One evaluation result found in a unit's traces, as the source gave it."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: JsonValue = None
    label: str | None = None
    explanation: str = ""
    model: str | None = None
    version: str | None = None
    time: str | None = None
    annotator_kind: str | None = None
    error: str | None = None
    origin: str
    where: str


def carried_evaluations(unit: Unit) -> list[CarriedEvaluation]:
    """Every evaluation result the unit carries (OTel events, OpenInference annotations, Langfuse scores),
    in span order; a trace- or session-scoped OpenInference result repeated on several spans counts once."""
    found: list[CarriedEvaluation] = []
    seen: set[tuple[Any, ...]] = set()
    for span in unit.spans:
        for ev in (*_events(span), *_openinference(span)):
            key = (ev.origin, ev.name, json.dumps(ev.value), ev.label, ev.explanation,
                   ev.where if ev.origin == "otel-event" else "")
            if key not in seen:
                seen.add(key)
                found.append(ev)
    found.extend(_langfuse(unit))
    return found


def evaluation_event(attrs: Mapping[str, Any], time_ns: int, where: str) -> CarriedEvaluation | None:
    """A ``gen_ai.evaluation.result`` event's attributes (and time, ns since the epoch; 0: unknown) as a
    result; None without ``gen_ai.evaluation.name``."""
    name = attrs.get("gen_ai.evaluation.name")
    if not name:
        return None
    model = attrs.get("assay.judge.model") or attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    label = attrs.get("gen_ai.evaluation.score.label")
    return CarriedEvaluation(name=str(name), value=_json(attrs.get("gen_ai.evaluation.score.value")),
                             label=None if label is None else str(label),
                             explanation=str(attrs.get("gen_ai.evaluation.explanation") or ""),
                             model=None if model is None else str(model),
                             version=_text(attrs.get("assay.evaluator.version")), time=_iso(time_ns),
                             error=_text(attrs.get("error.type")), origin="otel-event", where=where)


def _events(span: Span) -> Iterator[CarriedEvaluation]:
    for n, ev in enumerate(span.events):
        name = ev.name or str(ev.attributes.get("event.name") or "")
        if name != EVALUATION_EVENT:
            continue
        attrs = {**(ev.body if isinstance(ev.body, dict) else {}), **ev.attributes}
        found = evaluation_event(attrs, ev.time_ns, f"span {span.span_id} {ev.source} {n}")
        if found is not None:
            yield found


def _openinference(span: Span) -> Iterator[CarriedEvaluation]:
    groups: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, value in span.attributes.items():
        m = _OI_KEY.match(key)
        if m:
            groups.setdefault((m["scope"] or "", m["list"], int(m["i"])), {})[m["field"]] = value
    for key in ("annotations", "evaluations", "trace.annotations", "trace.evaluations", "session.annotations",
                "session.evaluations"):
        listed = _maybe_json(span.attributes.get(key))
        for i, item in enumerate(listed if isinstance(listed, list) else []):
            if isinstance(item, dict):
                groups.setdefault((key, "list", i), {}).update(
                    {k.rsplit(".", 1)[-1]: v for k, v in item.items()})
    for (scope, kind, i), fields in sorted(groups.items()):
        if fields.get("name"):
            yield _oi_result(fields, f"span {span.span_id} {scope}{kind}.{i}")


def _oi_result(fields: Mapping[str, Any], where: str) -> CarriedEvaluation:
    meta = _maybe_json(fields.get("metadata"))
    meta = meta if isinstance(meta, dict) else {}
    model = meta.get("model") or meta.get("judge_model")
    return CarriedEvaluation(name=str(fields["name"]), value=_json(fields.get("score")),
                             label=_text(fields.get("label")), explanation=str(fields.get("explanation") or ""),
                             model=_text(model), version=_text(fields.get("identifier") or meta.get("evaluator")),
                             annotator_kind=_text(fields.get("annotator_kind")), origin="openinference",
                             where=where)


def _langfuse(unit: Unit) -> Iterator[CarriedEvaluation]:
    scores = _maybe_json(unit.attributes.get("langfuse_scores"))
    for n, sc in enumerate(scores if isinstance(scores, list) else []):
        if not isinstance(sc, dict) or not sc.get("name"):
            continue
        categorical = sc.get("dataType") == "CATEGORICAL"
        yield CarriedEvaluation(name=str(sc["name"]), value=None if categorical else _json(sc.get("value")),
                                label=_text(sc.get("stringValue")) if categorical else None,
                                explanation=str(sc.get("comment") or ""), version=_text(sc.get("configId")),
                                time=_text(sc.get("timestamp")),
                                annotator_kind=_LANGFUSE_KIND.get(str(sc.get("source") or "")),
                                origin="langfuse", where=f"langfuse score {sc.get('id') or n}")


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _json(value: Any) -> JsonValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.loads(json.dumps(value, default=str))


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _iso(time_ns: int) -> str | None:
    if not time_ns:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")
