"""Reader for OTLP JSON trace files (``resourceSpans`` → ``scopeSpans`` → ``spans``).

Maps OTel GenAI semantic-convention attributes (``gen_ai.input.messages``,
``gen_ai.output.messages``, ``gen_ai.system_instructions``, ``gen_ai.tool.*``,
``gen_ai.conversation.id``) and OpenInference attributes (``openinference.span.kind``,
``llm.input_messages.N.message.*``, ``input.value``/``output.value``, ``session.id``)
onto one :class:`~assay.traces.model.Span`.

Specs: OTLP/JSON encoding (opentelemetry-proto, ids hex-encoded), OTel GenAI semantic
conventions v1.37, OpenInference semantic conventions.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from assay.traces.model import Message, Span, SpanKind, ToolCall, Unit, parse_arguments

_OI_KIND: dict[str, SpanKind] = {
    "LLM": "llm", "TOOL": "tool", "RETRIEVER": "retrieval", "AGENT": "agent", "CHAIN": "chain",
    "EMBEDDING": "embedding", "RERANKER": "retrieval", "GUARDRAIL": "chain", "EVALUATOR": "chain",
}
_GENAI_OP_KIND: dict[str, SpanKind] = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "execute_tool": "tool",
    "invoke_agent": "agent", "create_agent": "agent", "embeddings": "embedding",
}


def any_value(v: dict[str, Any]) -> Any:
    """Decode an OTLP JSON ``AnyValue`` into a Python value."""
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value", {})) for kv in v["kvlistValue"].get("values", [])}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Decode an OTLP JSON attribute list into a flat dict."""
    return {kv["key"]: any_value(kv.get("value") or {}) for kv in kvs or []}


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _call(id_: Any, name: Any, args: Any) -> ToolCall:
    parsed, raw, flag = parse_arguments(args)
    return ToolCall(id=_text(id_), name=str(name or "unknown"), arguments=parsed, arguments_raw=raw,
                    arguments_flag=flag)


def genai_messages(value: Any) -> list[Message]:
    """Parse ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (parts-based schema)."""
    out: list[Message] = []
    for m in _json(value) or []:
        if not isinstance(m, dict):
            continue
        role = m.get("role", "user")
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in m.get("parts") or []:
            ptype = part.get("type")
            if ptype == "text" or ptype == "reasoning":
                texts.append(str(part.get("content", "")))
            elif ptype == "tool_call":
                calls.append(_call(part.get("id"), part.get("name"), part.get("arguments")))
            elif ptype == "tool_call_response":
                out.append(Message(role="tool", content=_text(part.get("response")),
                                   tool_call_id=_text(part.get("id"))))
        if role == "tool" and not texts and not calls:
            continue
        role = role if role in ("system", "user", "assistant", "tool") else "user"
        out.append(Message(role=role, content="\n".join(texts) if texts else None, tool_calls=tuple(calls)))
    return out


def _system_instructions(value: Any) -> list[Message]:
    parts = _json(value)
    if isinstance(parts, list):
        text = "\n".join(str(p.get("content", "")) for p in parts if isinstance(p, dict))
    else:
        text = str(parts)
    return [Message(role="system", content=text)] if text else []


_OI_MSG = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_OI_CALL = re.compile(r"^tool_calls\.(\d+)\.tool_call\.(.+)$")
_OI_CONTENT = re.compile(r"^contents\.(\d+)\.message_content\.text$")


def _oi_content(fields: dict[str, Any]) -> str | None:
    if fields.get("content") is not None:
        return _text(fields["content"])
    parts = sorted((int(m.group(1)), str(v)) for k, v in fields.items() if (m := _OI_CONTENT.match(k)))
    return "\n".join(p for _, p in parts) if parts else None


def openinference_messages(attrs: dict[str, Any]) -> tuple[list[Message], list[Message]]:
    """Parse OpenInference flattened ``llm.{input,output}_messages.N.message.*`` attributes."""
    raw: dict[str, dict[int, dict[str, Any]]] = {"input": defaultdict(dict), "output": defaultdict(dict)}
    for key, value in attrs.items():
        m = _OI_MSG.match(key)
        if m:
            raw[m.group(1)][int(m.group(2))][m.group(3)] = value
    sides: list[list[Message]] = []
    for side in ("input", "output"):
        msgs: list[Message] = []
        for _, fields in sorted(raw[side].items()):
            calls: dict[int, dict[str, Any]] = defaultdict(dict)
            for k, v in fields.items():
                cm = _OI_CALL.match(k)
                if cm:
                    calls[int(cm.group(1))][cm.group(2)] = v
            role = str(fields.get("role", "user"))
            msgs.append(Message(
                role=role if role in ("system", "user", "assistant", "tool") else "user",
                content=_oi_content(fields),
                tool_call_id=_text(fields.get("tool_call_id")),
                name=_text(fields.get("name")),
                tool_calls=tuple(_call(c.get("id"), c.get("function.name"), c.get("function.arguments"))
                                 for _, c in sorted(calls.items())),
            ))
        sides.append(msgs)
    return sides[0], sides[1]


def span_kind(attrs: dict[str, Any], name: str) -> SpanKind:
    """Kind from ``openinference.span.kind``, else ``gen_ai.operation.name``, else the span name."""
    oi = attrs.get("openinference.span.kind")
    if isinstance(oi, str) and oi.upper() in _OI_KIND:
        return _OI_KIND[oi.upper()]
    op = attrs.get("gen_ai.operation.name") or name.split(" ")[0]
    return _GENAI_OP_KIND.get(str(op), "other")


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) is not None), None)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def attributes_to_span(attrs: dict[str, Any], **ids: Any) -> Span:
    """Build a :class:`Span` from flat span attributes plus OTel fields (ids, name, times, status).

    Raises:
        pydantic.ValidationError: bad ids or types.
    """
    name = str(ids.pop("name", "") or attrs.get("gen_ai.operation.name") or "span")
    kind = span_kind(attrs, name)
    inputs = _system_instructions(attrs["gen_ai.system_instructions"]) if "gen_ai.system_instructions" in attrs else []
    inputs += genai_messages(attrs.get("gen_ai.input.messages"))
    outputs = genai_messages(attrs.get("gen_ai.output.messages"))
    oi_in, oi_out = openinference_messages(attrs)
    inputs, outputs = inputs or oi_in, outputs or oi_out
    tool_call = None
    tool_result = None
    if kind == "tool":
        tool_call = _call(attrs.get("gen_ai.tool.call.id") or attrs.get("tool_call.id"),
                          attrs.get("gen_ai.tool.name") or attrs.get("tool.name") or name.removeprefix("execute_tool "),
                          _first(attrs, "gen_ai.tool.call.arguments", "tool.parameters", "input.value", "input"))
        tool_result = _text(_first(attrs, "gen_ai.tool.call.result", "output.value", "output"))
    return Span(
        name=name, kind=kind, input_messages=tuple(inputs), output_messages=tuple(outputs),
        tool_call=tool_call, tool_result=tool_result,
        session_id=_text(attrs.get("gen_ai.conversation.id") or attrs.get("session.id")),
        input_value=_text(attrs.get("input.value")), output_value=_text(attrs.get("output.value")),
        model=_text(attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
                    or attrs.get("llm.model_name")),
        input_tokens=_int(attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens",
                                                                            attrs.get("llm.token_count.prompt")))),
        output_tokens=_int(attrs.get("gen_ai.usage.output_tokens", attrs.get(
            "gen_ai.usage.completion_tokens", attrs.get("llm.token_count.completion")))),
        attributes=attrs, **ids,
    )


def _status(raw: dict[str, Any] | None) -> tuple[str, str | None]:
    code = (raw or {}).get("code", 0)
    status = {2: "error", "STATUS_CODE_ERROR": "error", 1: "ok", "STATUS_CODE_OK": "ok"}.get(code, "unset")
    return status, (raw or {}).get("message")


def otlp_span(raw: dict[str, Any], resource: dict[str, Any]) -> Span:
    """Convert one OTLP JSON span object into a :class:`Span`.

    Raises:
        KeyError, ValueError (incl. pydantic.ValidationError): missing or malformed fields.
    """
    attrs = attributes(raw.get("attributes"))
    status, message = _status(raw.get("status"))
    parent = (raw.get("parentSpanId") or "").lower() or None
    return attributes_to_span(
        attrs, trace_id=str(raw["traceId"]).lower(), span_id=str(raw["spanId"]).lower(),
        parent_span_id=parent, name=raw.get("name", ""), start_ns=int(raw.get("startTimeUnixNano", 0)),
        end_ns=int(raw.get("endTimeUnixNano", 0)), status=status, status_message=message,
    )


def looks_like_otlp(data: object) -> bool:
    """True when parsed JSON is an OTLP trace export."""
    return isinstance(data, dict) and "resourceSpans" in data


def read_spans(data: dict[str, Any]) -> Iterator[tuple[Span | None, str | None]]:
    """Yield ``(span, None)`` per valid span and ``(None, reason)`` per rejected span."""
    for rs in data.get("resourceSpans") or []:
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or []:
            for n, raw in enumerate(ss.get("spans") or []):
                try:
                    yield otlp_span(raw, resource), None
                except (KeyError, TypeError, ValueError) as exc:
                    sid = raw.get("spanId") if isinstance(raw, dict) else None
                    yield None, f"span #{n} ({sid!r}): {type(exc).__name__}: {str(exc).splitlines()[0]}"


def group_units(spans: list[Span], source: str) -> list[Unit]:
    """Group spans into units: by session id where any span of a trace has one, else by trace."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    units: dict[str, list[Span]] = defaultdict(list)
    kinds: dict[str, str] = {}
    for trace_id, trace_spans in by_trace.items():
        session = next((s.session_id for s in trace_spans if s.session_id), None)
        uid = f"session/{session}" if session else f"trace/{trace_id}"
        kinds[uid] = "session" if session else "trace"
        units[uid].extend(trace_spans)
    return [Unit(unit_id=uid, kind=kinds[uid], source=source,  # type: ignore[arg-type]
                 spans=tuple(sorted(ss, key=lambda s: s.start_ns)),
                 outcome="fail" if any(s.status == "error" for s in ss) else "unknown")
            for uid, ss in units.items()]
