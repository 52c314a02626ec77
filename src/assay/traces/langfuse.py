"""Reader for Langfuse trace exports: ``{"trace": {...}, "observations": [...]}``.

Each observation (SPAN, GENERATION, TOOL, AGENT, CHAIN, ...) becomes a :class:`Span`. Its
``metadata`` (a JSON string or an object) keeps the original OpenTelemetry attributes, mapped as
in :mod:`assay.traces.otlp.mapping`; Langfuse's own ``input`` / ``output`` fields, in whatever shape
the framework logged them, are normalized by :func:`assay.traces.chat_formats.chat_messages` and
win over the attributes (they are what Langfuse shows). Times follow
:func:`assay.traces.model.timestamp_ns` (no offset → UTC). Usage and cost details that are absent or
empty stay None (Langfuse's ``inputUsage: 0`` and ``totalCost: 0`` defaults are not counts). Trace
scores are kept on the unit as ``attributes["langfuse_scores"]``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from assay.traces.chat_formats import chat_messages
from assay.traces.environment import record_environment
from assay.traces.model import Message, Span, SpanKind, ToolCall, Unit, parse_arguments, timestamp_ns
from assay.traces.otlp.mapping import attributes_to_span, group_units
from assay.traces.shapes import describe_error

_TYPE_KIND: dict[str, SpanKind] = {"GENERATION": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain",
                                   "RETRIEVER": "retrieval", "EMBEDDING": "embedding"}
_HEX = {16: re.compile(r"^[0-9a-f]{16}$"), 32: re.compile(r"^[0-9a-f]{32}$")}


def looks_like_langfuse(data: object) -> bool:
    """True for a Langfuse export (an object with ``trace`` and a list of ``observations``)."""
    return isinstance(data, dict) and isinstance(data.get("trace"), dict) and isinstance(data.get("observations"), list)


def _hex_id(value: Any, width: int) -> str:
    """A Langfuse id as OTel hex: kept when it already is, else the first ``width`` hex of its SHA-256."""
    text = str(value or "").lower()
    return text if _HEX[width].match(text) else hashlib.sha256(text.encode()).hexdigest()[:width]


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _tokens(usage: Any) -> tuple[int | None, int | None]:
    usage = _maybe_json(usage)
    if not isinstance(usage, dict) or not usage:
        return None, None
    i, o = usage.get("input"), usage.get("output")
    return (int(i) if isinstance(i, int | float) else None, int(o) if isinstance(o, int | float) else None)


def _cost(details: Any) -> float | None:
    """``costDetails.total`` (else the sum of its parts) in USD; None when empty (Langfuse's ``totalCost: 0``
    default is not a cost)."""
    details = _maybe_json(details)
    if not isinstance(details, dict) or not details:
        return None
    total = details.get("total")
    if isinstance(total, int | float):
        return float(total)
    parts = [v for v in details.values() if isinstance(v, int | float)]
    return float(sum(parts)) if parts else None


def observation_span(obs: dict[str, Any], trace: dict[str, Any]) -> Span:
    """One Langfuse observation as a :class:`Span`.

    Raises:
        KeyError, ValueError (incl. pydantic.ValidationError): no id, unreadable times.
    """
    meta = _maybe_json(obs.get("metadata"))
    attrs = dict(_maybe_json(meta.get("attributes")) or {}) if isinstance(meta, dict) else {}
    start = timestamp_ns(obs["startTime"])
    end = timestamp_ns(obs["endTime"]) if obs.get("endTime") else start
    parent = obs.get("parentObservationId")
    error = obs.get("level") == "ERROR"
    base = attributes_to_span(
        attrs, trace_id=_hex_id(obs.get("traceId") or trace.get("id"), 32), span_id=_hex_id(obs["id"], 16),
        parent_span_id=_hex_id(parent, 16) if parent else None, name=str(obs.get("name") or obs.get("type") or "span"),
        start_ns=start, end_ns=end, status="error" if error else "unset",
        status_message=obs.get("statusMessage") if error else None)
    kind = _TYPE_KIND.get(str(obs.get("type")), base.kind)
    update: dict[str, Any] = {"kind": kind, "session_id": base.session_id or trace.get("sessionId")}
    raw_in, raw_out = _maybe_json(obs.get("input")), _maybe_json(obs.get("output"))
    if kind == "tool":
        parsed, raw, flag = parse_arguments(raw_in if isinstance(raw_in, dict | str) else json.dumps(raw_in))
        update["tool_call"] = base.tool_call or ToolCall(name=str(obs.get("name") or "tool"), arguments=parsed,
                                                         arguments_raw=raw, arguments_flag=flag)
        update["tool_result"] = base.tool_result or (None if raw_out is None else
                                                     raw_out if isinstance(raw_out, str) else json.dumps(raw_out))
    else:
        inputs: list[Message] = chat_messages(raw_in, "user")
        outputs: list[Message] = chat_messages(raw_out, "assistant")
        update["input_messages"] = tuple(inputs) or base.input_messages
        update["output_messages"] = tuple(outputs) or base.output_messages
        if update["input_messages"] or update["output_messages"]:
            update["flags"] = tuple(f for f in base.flags if f != "content_not_captured")
    in_tok, out_tok = _tokens(obs.get("usageDetails"))
    if in_tok is not None or out_tok is not None:
        update.update(input_tokens=in_tok, output_tokens=out_tok, usage_source="langfuse.usageDetails")
    update["cost_usd"] = _cost(obs.get("costDetails"))
    update["model"] = base.model or obs.get("model")
    return base.model_copy(update=update)


def read_export(data: dict[str, Any], source: str) -> Iterator[tuple[Unit | None, str | None]]:
    """Yield the export's unit(s) and one ``(None, reason)`` per observation that could not be read."""
    trace = data.get("trace") or {}
    spans: list[Span] = []
    for n, obs in enumerate(data.get("observations") or []):
        try:
            spans.append(observation_span(obs, trace))
        except Exception as exc:  # noqa: BLE001 - one bad observation must not cost the export
            oid = obs.get("id") if isinstance(obs, dict) else None
            yield None, f"observation #{n} ({oid!r}): {describe_error(exc)}"
    extra = {"langfuse_trace_id": trace.get("id"), "langfuse_trace_name": trace.get("name"),
             "user_id": trace.get("userId"), "langfuse_scores": _maybe_json(trace.get("scores")) or [],
             **record_environment(trace)}  # Langfuse traces carry environment and release
    for unit in group_units(spans, source):
        yield unit.model_copy(update={"attributes": {**unit.attributes, **extra}}), None
