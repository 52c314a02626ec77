"""Structural keys and key texts of failed units.

A unit's *structural key* says where and how it failed, in fields a machine can group on:

- ``tool``: the tool whose call failed (error status, an error step, an error-looking
  result), else the last tool called before the end (None: no tool was called);
- ``error``: the error type, the error message normalized (ids, dates and numbers masked,
  first clause only; None: the unit ended without any error step);
- ``step``: the workflow step where it failed: the enclosing agent or chain span below the
  trace root (span name, when there is one) and the band of the failing step's 1-based
  index in the step timeline (``1-4``, ``5-8``, ``9-16``, ... doubling);
- ``retrieval``: ``miss`` when a retriever span returned no documents or only low scores,
  ``ok`` when retrievals returned something, ``none`` without retrievals;
- ``outcome``: the unit's recorded outcome (``fail``, or ``unknown`` with an error).

Example::

    tool=book_reservation | error=payment amount does not add up | step=9-16 | retrieval=none | outcome=fail

The unit's *key text* is what gets embedded and what c-TF-IDF labels are computed from:
the key in words, the failing step, the final assistant answer and the steps around the
failing step, bounded in length, system prompt excluded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from assay.traces.model import Span, Step, Unit
from assay.traces.timeline import render_timeline, step_timeline

KEY_TEXT_CHARS = 1500
"""Default bound of a key text, in characters (all-MiniLM-L6-v2 reads 256 word pieces)."""

LOW_RETRIEVAL_SCORE = 0.5
"""A retrieval whose documents all score below this (scores in 0..1) is a miss."""

RetrievalState = Literal["none", "ok", "miss"]
ErrorKind = Literal["exception", "tool_error", "no_error"]

_STEP_CHARS = 300
_CONTEXT_CHARS = 200
_ERROR_CHARS = 100
_FIELD_CHARS = 60

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?z?\b"), "<DATE>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<TIME>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<EMAIL>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<ID>"),
    (re.compile(r"#?\b(?=\w*\d)(?=\w*[a-z_])\w{3,}\b"), "<ID>"),
    (re.compile(r"#\d+\b"), "<ID>"),
    (re.compile(r"\b\d{6,}\b"), "<ID>"),
    (re.compile(r"[-+]?\b\d+(?:[.,]\d+)*\b"), "<NUM>"),
)
_PREFIX = re.compile(r"^\s*(?:error|exception|failed)\s*[:\-]\s*", re.IGNORECASE)
_CLAUSE = re.compile(r"[,;]\s|\.\s|\.$|\n")
_BRACKETS = re.compile(r"[{}\[\]()]")
_QUOTES = re.compile(r"['\"`]")
_TRACEBACK = "traceback (most recent call last)"
_DOCS = re.compile(r"^(?:retrieval|reranker\.output)\.documents\.(\d+)\.document\.(\w+)$")


class StructuralKey(BaseModel):
    """Where and how a unit failed (see module docstring for the fields)."""

    model_config = ConfigDict(frozen=True)

    tool: str | None
    error: str | None
    step: str | None = None
    retrieval: RetrievalState = "none"
    outcome: str = "fail"

    @property
    def text(self) -> str:
        """The key string stored and grouped on, e.g.
        ``tool=book_reservation | error=none | step=9-16 | retrieval=none | outcome=fail``."""
        return " | ".join(f"{name}={value or 'none'}" for name, value in self.parts().items())

    def parts(self) -> dict[str, str | None]:
        """The key as ``{field: value}`` in display order (None: absent)."""
        return {"tool": self.tool, "error": self.error, "step": self.step, "retrieval": self.retrieval,
                "outcome": self.outcome}

    @classmethod
    def from_text(cls, text: str) -> StructuralKey:
        """Parse :attr:`text` back (``none`` and unknown fields become None / defaults)."""
        raw = dict(part.split("=", 1) for part in text.split(" | ") if "=" in part)
        value = {k: (None if v == "none" else v) for k, v in raw.items()}
        retrieval = raw.get("retrieval", "none")
        return cls(tool=value.get("tool"), error=value.get("error"), step=value.get("step"),
                   retrieval=retrieval if retrieval in ("ok", "miss") else "none",
                   outcome=raw.get("outcome", "fail"))

    @property
    def words(self) -> str:
        """The failure as a phrase, e.g. ``book_reservation failed: payment amount does not add up``
        (tool and error, plus ``after a retrieval miss``; the step band is left out; a mixed
        field ``*`` of a signature's key reads ``various tools`` / ``various errors``)."""
        tool = "various tools" if self.tool == "*" else self.tool
        error = "various errors" if self.error == "*" else self.error
        if error and tool:
            phrase = f"{tool} failed: {error}"
        elif error:
            phrase = f"failed: {error}"
        elif tool:
            phrase = f"ended after {tool} without a tool error"
        else:
            phrase = "ended without calling a tool"
        return phrase + (" after a retrieval miss" if self.retrieval == "miss" else "")


def _error_message(text: str) -> str:
    """The message inside a JSON ``{"error": ...}``, or the exception line of a traceback (the
    first unindented line after the last ``Traceback (most recent call last):`` in the text)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("error"):
            return str(obj["error"])
    at = stripped.lower().rfind(_TRACEBACK)
    if at >= 0:
        after = [line for line in stripped[at:].splitlines()[1:] if line.strip() and not line[:1].isspace()]
        return after[0] if after else stripped
    return stripped


def normalize_error(text: str) -> str:
    """Normalize an error message so that runs failing the same way compare equal.

    Lower-cases, drops an ``Error:`` prefix, unwraps ``{"error": ...}`` and tracebacks (last
    line), and masks variable parts: dates ``<DATE>``, times ``<TIME>``, e-mails ``<EMAIL>``,
    identifiers with digits (``HAT030``, ``gift_card_8190333``, ``#W2378156``) and long
    digit runs ``<ID>``, other numbers ``<NUM>``.

    Example: ``"Error: flight HAT030 not available on date 2024-05-20"`` ->
    ``"flight <ID> not available on date <DATE>"``.
    """
    return " ".join(mask_variables(_PREFIX.sub("", _error_message(text))).split())


def mask_variables(text: str) -> str:
    """Lower-case ``text`` and mask its variable parts as :func:`normalize_error` does (dates,
    times, e-mails, identifiers with digits, long digit runs, other numbers), without
    unwrapping or cutting it: ``"Order #W2378156 cancelled on 2024-05-20"`` ->
    ``"order <ID> cancelled on <DATE>"``."""
    masked = text.lower()
    for pattern, mask in _MASKS:
        masked = pattern.sub(mask, masked)
    return masked


def error_type(text: str) -> str:
    """The first clause of the normalized message, brackets and quotes dropped (at most 100
    chars): the error's type.

    Examples: ``"Error: payment amount does not add up, total price is 375, but paid 299"``
    -> ``"payment amount does not add up"``; ``"openai.BadRequestError: Error code: 400 -
    {'error': {'inner_error': {'code': 'ResponsibleAIPolicyViolation', ..."`` ->
    ``"openai.badrequesterror: error code: <NUM> - error: inner_error: code: responsibleaipolicyviolation"``.
    """
    message = normalize_error(text)
    first = _CLAUSE.split(message, maxsplit=1)[0].strip() or message
    first = " ".join(_BRACKETS.sub(" ", _QUOTES.sub("", first)).split())
    return first[:_ERROR_CHARS].rstrip()


def failing_step(steps: list[Step]) -> Step | None:
    """The step where the unit failed: the last error step, else the last tool call, else
    the last assistant turn; None for an empty timeline."""
    tests = (lambda s: s.is_error, lambda s: s.kind == "tool_call", lambda s: s.kind == "assistant")
    return next((s for test in tests for s in reversed(steps) if test(s)), None)


def step_band(index: int) -> str:
    """The band of a 1-based step index: ``1-4``, ``5-8``, ``9-16``, ``17-32``, ... (doubling)."""
    low, high = 1, 4
    while index > high:
        low, high = high + 1, high * 2
    return f"{low}-{high}"


def _documents(span: Span) -> list[dict[str, Any]] | None:
    """Retrieved documents of a span: OTel GenAI ``gen_ai.retrieval.documents`` or OpenInference
    ``retrieval.documents`` (a list, or its JSON text), or OpenInference flattened
    ``retrieval.documents.N.document.*``; None when none of them is recorded."""
    for name in ("gen_ai.retrieval.documents", "retrieval.documents"):
        listed = span.attributes.get(name)
        if isinstance(listed, str):
            try:
                listed = json.loads(listed)
            except json.JSONDecodeError:
                listed = None
        if isinstance(listed, list):
            return [d for d in listed if isinstance(d, dict)]
    flat: dict[int, dict[str, Any]] = {}
    for key, value in span.attributes.items():
        m = _DOCS.match(key)
        if m:
            flat.setdefault(int(m.group(1)), {})[f"document.{m.group(2)}"] = value
    return [flat[i] for i in sorted(flat)] if flat else None


def _score(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def retrieval_miss(span: Span, low_score: float = LOW_RETRIEVAL_SCORE) -> bool:
    """True when a retriever span found nothing: no documents, or every document has a score
    in 0..1 below ``low_score``. Without document attributes, an empty output is a miss."""
    docs = _documents(span)
    if docs is None:
        return not (span.output_value or "").strip().strip("[]{}").strip()
    if not docs:
        return True
    scores = [_score(d.get("document.score", d.get("score"))) for d in docs]
    known = [x for x in scores if x is not None]
    return len(known) == len(docs) and all(0.0 <= x < low_score for x in known)


def retrieval_state(spans: Iterable[Span]) -> RetrievalState:
    """``miss`` when any retriever span missed (:func:`retrieval_miss`), ``ok`` when there were
    retrievals and none missed, ``none`` without retriever spans."""
    states = [retrieval_miss(s) for s in spans if s.kind == "retrieval"]
    return "none" if not states else ("miss" if any(states) else "ok")


def _node(spans: Mapping[str, Span], span_id: str | None) -> str | None:
    """Name of the nearest agent or chain span enclosing (or being) ``span_id``, trace roots excluded."""
    seen: set[str] = set()
    while span_id and span_id in spans and span_id not in seen:
        seen.add(span_id)
        span = spans[span_id]
        if span.parent_span_id is None:
            return None
        if span.kind in ("agent", "chain"):
            return span.name[:_FIELD_CHARS]
        span_id = span.parent_span_id
    return None


def _error_text(step: Step, spans: Mapping[str, Span]) -> str:
    """An error step's message: its span's status message when set, else the step text."""
    span = spans.get(step.span_id or "")
    return (span.status_message if span is not None and span.status_message else None) or step.text


def error_kind(steps: list[Step]) -> ErrorKind:
    """How a timeline failed: ``exception`` (an error step that is not a tool result, or a
    traceback / exception text), ``tool_error`` (a tool result with an error), ``no_error``."""
    errors = [s for s in steps if s.is_error]
    if any(s.kind != "tool_result" or _TRACEBACK in s.text.lower() or "exception" in s.text[:200].lower()
           for s in errors):
        return "exception"
    return "tool_error" if errors else "no_error"


def unit_key(unit: Unit, steps: list[Step] | None = None) -> StructuralKey:
    """The structural key of a unit (see module docstring).

    Args:
        unit: the unit.
        steps: its step timeline when already built (:func:`~assay.traces.step_timeline`).
    """
    steps = step_timeline(unit) if steps is None else steps
    spans = {s.span_id: s for s in unit.spans}
    errors = [s for s in steps if s.is_error]
    fail = failing_step(steps)
    step = None
    if fail is not None:
        node = _node(spans, fail.span_id)
        step = f"{node}@{step_band(fail.index)}" if node else step_band(fail.index)
    if errors:
        tool, error = errors[-1].tool_name, error_type(_error_text(errors[-1], spans)) or "unknown"
    else:
        calls = [s for s in steps if s.kind == "tool_call"]
        tool, error = (calls[-1].tool_name if calls else None), None
    return StructuralKey(tool=tool[:_FIELD_CHARS] if tool else None, error=error, step=step,
                         retrieval=retrieval_state(unit.spans), outcome=unit.outcome)


def structural_key(unit: Unit) -> StructuralKey:
    """The structural key of a unit; ``structural_key(u).text`` is the stored string."""
    return unit_key(unit)


def _render(step: Step, limit: int = _STEP_CHARS) -> str:
    return render_timeline([step])[:limit]


def key_text(unit: Unit, max_chars: int = KEY_TEXT_CHARS) -> str:
    """The text embedded for a unit (at most ``max_chars`` characters).

    In order of importance, since the embedding model truncates at 256 word pieces: the
    structural key in words, the failing step, the final assistant answer, then the three
    steps before and two after the failing step. System prompts are left out; each step
    is cut at 300 characters.
    """
    steps = step_timeline(unit)
    return key_text_from_steps(steps, unit_key(unit, steps), max_chars)


def _window(steps: list[Step], fail: Step) -> tuple[list[Step], list[Step]]:
    """(the failing step with its tool result, the three steps before and two after them)."""
    start = steps.index(fail)
    end = start + 1
    if fail.kind == "tool_call" and end < len(steps) and steps[end].kind == "tool_result":
        end += 1
    return steps[start:end], steps[max(0, start - 3):start] + steps[end:end + 2]


def key_text_from_steps(steps: list[Step], key: StructuralKey, max_chars: int = KEY_TEXT_CHARS) -> str:
    """:func:`key_text` of a step timeline already built, with its key (:func:`unit_key`)."""
    steps = [s for s in steps if s.kind != "system"]
    parts = [key.words + "."]
    fail = failing_step(steps)
    core, around = _window(steps, fail) if fail is not None else ([], [])
    if core:
        parts.append("Failing step: " + "\n".join(_render(s) for s in core))
    answers = [s for s in steps if s.kind == "assistant" and s.text.strip() and s not in core]
    if answers:
        parts.append("Final answer: " + answers[-1].text[:_STEP_CHARS])
    if around:
        parts.append("Context:\n" + "\n".join(_render(s, _CONTEXT_CHARS) for s in around))
    return "\n".join(parts)[:max_chars]
