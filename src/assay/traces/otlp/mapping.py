"""OTLP data onto assay's types: span attributes and fields to a :class:`~assay.traces.model.Span`, log
records to a :class:`~assay.traces.model.SpanEvent`, spans to units.

Maps OTel GenAI semantic-convention attributes (``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, ``gen_ai.tool.*``, ``gen_ai.conversation.id``) and OpenInference
attributes (``openinference.span.kind``, ``llm.input_messages.N.message.*``, ``input.value`` /
``output.value``, ``session.id``) onto one span, whatever the wire encoding (JSON or protobuf) was.

Specs: OTel GenAI semantic conventions v1.37, OpenInference semantic conventions, OTLP logs data model.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from assay.traces.genai_events import event_messages
from assay.traces.media import MediaPart, block_part, is_media_block, url_part
from assay.traces.model import Message, Span, SpanEvent, SpanKind, ToolCall, Unit, clean_value, parse_arguments

_OI_KIND: dict[str, SpanKind] = {
    "LLM": "llm", "TOOL": "tool", "RETRIEVER": "retrieval", "AGENT": "agent", "CHAIN": "chain",
    "EMBEDDING": "embedding", "RERANKER": "retrieval", "GUARDRAIL": "chain", "EVALUATOR": "chain",
}
_GENAI_OP_KIND: dict[str, SpanKind] = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "execute_tool": "tool",
    "invoke_agent": "agent", "create_agent": "agent", "embeddings": "embedding", "retrieval": "retrieval",
}



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
        media: list[MediaPart] = []
        for part in m.get("parts") or []:
            ptype = part.get("type")
            if ptype == "text" or ptype == "reasoning":
                texts.append(str(part.get("content", "")))
            elif is_media_block(part) and (found := block_part(part)) is not None:
                media.append(found)
            elif ptype == "tool_call":
                calls.append(_call(part.get("id"), part.get("name"), part.get("arguments")))
            elif ptype == "tool_call_response":
                out.append(Message(role="tool", content=_text(part.get("response")),
                                   tool_call_id=_text(part.get("id"))))
        if role == "tool" and not texts and not calls and not media:
            continue
        role = role if role in ("system", "user", "assistant", "tool") else "user"
        out.append(Message(role=role, content="\n".join(texts) if texts else None, tool_calls=tuple(calls),
                           name=_text(m.get("name")), media=tuple(media)))
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
_OI_CONTENT = re.compile(r"^contents\.(\d+)\.message_content\.(.+)$")


def _oi_content(fields: dict[str, Any]) -> tuple[str | None, tuple[MediaPart, ...]]:
    """Text and media of an OpenInference message: ``message.content``, else its ``contents.M.message_content.*``
    (``text``, ``image.image.url``, ``audio.audio.url`` with ``audio.audio.mime_type``)."""
    contents: dict[int, dict[str, Any]] = defaultdict(dict)
    for k, v in fields.items():
        if m := _OI_CONTENT.match(k):
            contents[int(m.group(1))][m.group(2)] = v
    texts = [str(c["text"]) for _, c in sorted(contents.items()) if c.get("text") is not None]
    media: list[MediaPart] = []
    for _, c in sorted(contents.items()):
        if c.get("image.image.url"):
            media.append(url_part(str(c["image.image.url"]), hint="image"))
        elif c.get("audio.audio.url"):
            media.append(url_part(str(c["audio.audio.url"]), _text(c.get("audio.audio.mime_type")), "audio"))
    if fields.get("content") is not None:
        return _text(fields["content"]), tuple(media)
    return ("\n".join(texts) if texts else None), tuple(media)


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
            content, media = _oi_content(fields)
            msgs.append(Message(
                role=role if role in ("system", "user", "assistant", "tool") else "user",
                content=content, media=media,
                tool_call_id=_text(fields.get("tool_call_id")),
                name=_text(fields.get("name")),
                tool_calls=tuple(_call(c.get("id"), c.get("function.name"), c.get("function.arguments"))
                                 for _, c in sorted(calls.items())),
            ))
        sides.append(msgs)
    return sides[0], sides[1]


_OI_DOC = re.compile(r"^(?:retrieval|reranker\.output)\.documents\.(\d+)\.document\.(id|content|score)$")


def retrieval_documents_text(attrs: dict[str, Any]) -> str | None:
    """OpenInference ``retrieval.documents.N.document.{id,content,score}`` (and reranker output
    documents), else OTel GenAI ``gen_ai.retrieval.documents`` (a JSON list of ``{id, score, ...}``), as
    text, one document per block; None when there are none."""
    docs: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, value in attrs.items():
        m = _OI_DOC.match(key)
        if m:
            docs[int(m.group(1))][m.group(2)] = value
    if not docs:
        genai = _json(attrs.get("gen_ai.retrieval.documents"))
        docs = {n: d for n, d in enumerate(genai) if isinstance(d, dict)} if isinstance(genai, list) else {}
    blocks = [f"[{d.get('id', n)}]" + (f" (score {d['score']})" if "score" in d else "")
              + f" {d.get('content', d.get('text', ''))}" for n, d in sorted(docs.items())]
    return "\n".join(blocks) if blocks else None


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


_USAGE_KEYS: tuple[tuple[str, str], ...] = (
    ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
    ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
    ("llm.token_count.prompt", "llm.token_count.completion"),
)
_RENAMES: tuple[tuple[str, str], ...] = (
    ("gen_ai.system", "gen_ai.provider.name"),
    ("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
    ("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
)


def apply_renames(attrs: dict[str, Any]) -> dict[str, Any]:
    """Add the current OTel GenAI name of each renamed attribute (``gen_ai.system`` →
    ``gen_ai.provider.name``, ``gen_ai.usage.prompt_tokens``/``completion_tokens`` →
    ``input_tokens``/``output_tokens``); the old key is kept as received, a present new key wins."""
    out = dict(attrs)
    for old, new in _RENAMES:
        if old in attrs and new not in attrs:
            out[new] = attrs[old]
    return out


def _usage(attrs: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
    for in_key, out_key in _USAGE_KEYS:
        i, o = _int(attrs.get(in_key)), _int(attrs.get(out_key))
        if i is not None or o is not None:
            return i, o, in_key.rsplit(".", 1)[0]
    return None, None, None


def _has_content(*groups: Any) -> bool:
    return any(m.content or m.tool_calls or m.media for g in groups for m in g)


def attributes_to_span(attrs: dict[str, Any], events: Sequence[SpanEvent] = (), **ids: Any) -> Span:
    """Build a :class:`Span` from flat span attributes plus OTel fields (ids, name, times, status).

    Content comes from the v1.37+ attributes (``gen_ai.input.messages`` ...), else OpenInference
    flattened messages, else GenAI events (span events or joined log records, see
    :mod:`assay.traces.genai_events`). Lone UTF-16 surrogates in strings become U+FFFD
    (flag ``lone_surrogate_replaced``); an LLM span without any content is flagged
    ``content_not_captured``. Token counts stay None when unknown (``usage_source`` None).

    Args:
        attrs: decoded span attributes.
        events: span events and log records of this span.
        ids: ``trace_id``, ``span_id`` (lowercase hex), ``parent_span_id``, ``name``, ``start_ns``,
            ``end_ns`` (ns since the epoch, UTC), ``status``, ``status_message``, ``flags``.

    Raises:
        pydantic.ValidationError: bad ids or types.
        ValueError: an all-zero trace or span id (invalid per OTLP).
    """
    if set(str(ids.get("trace_id", ""))) == {"0"} or set(str(ids.get("span_id", ""))) == {"0"}:
        raise ValueError("trace id or span id is all zeros (invalid per OTLP)")
    attrs, dirty = clean_value(attrs)
    ids, dirty_ids = clean_value(ids)
    events = tuple(events)
    dirty_ev = False
    if events:
        cleaned, dirty_ev = clean_value([e.model_dump() for e in events])
        events = tuple(SpanEvent.model_validate(e) for e in cleaned)
    attrs = apply_renames(attrs)
    flags: set[str] = set(ids.pop("flags", ()) or ()) - {"content_not_captured"}
    if dirty or dirty_ids or dirty_ev:
        flags.add("lone_surrogate_replaced")
    name = str(ids.pop("name", "") or attrs.get("gen_ai.operation.name") or "span")
    kind = span_kind(attrs, name)
    inputs = _system_instructions(attrs["gen_ai.system_instructions"]) if "gen_ai.system_instructions" in attrs else []
    inputs += genai_messages(attrs.get("gen_ai.input.messages"))
    outputs = genai_messages(attrs.get("gen_ai.output.messages"))
    oi_in, oi_out = openinference_messages(attrs)
    ev_in, ev_out = event_messages(events)
    inputs, outputs = inputs or oi_in or ev_in, outputs or oi_out or ev_out
    tool_call = None
    tool_result = None
    if kind == "tool":
        tool_call = _call(attrs.get("gen_ai.tool.call.id") or attrs.get("tool_call.id"),
                          attrs.get("gen_ai.tool.name") or attrs.get("tool.name") or name.removeprefix("execute_tool "),
                          _first(attrs, "gen_ai.tool.call.arguments", "tool.parameters", "input.value", "input"))
        tool_result = _text(_first(attrs, "gen_ai.tool.call.result", "output.value", "output"))
    input_value, output_value = _text(attrs.get("input.value")), _text(attrs.get("output.value"))
    if kind == "retrieval":
        input_value = input_value or _text(attrs.get("gen_ai.retrieval.query.text"))
        output_value = output_value if output_value is not None else retrieval_documents_text(attrs)
    if kind == "llm" and not _has_content(inputs, outputs) and not (input_value or output_value):
        flags.add("content_not_captured")
    in_tok, out_tok, usage_source = _usage(attrs)
    return Span(
        name=name, kind=kind, input_messages=tuple(inputs), output_messages=tuple(outputs),
        tool_call=tool_call, tool_result=tool_result,
        session_id=_text(attrs.get("gen_ai.conversation.id") or attrs.get("session.id")),
        input_value=input_value, output_value=output_value,
        model=_text(attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
                    or attrs.get("llm.model_name")),
        provider=_text(attrs.get("gen_ai.provider.name") or attrs.get("llm.provider") or attrs.get("llm.system")),
        input_tokens=in_tok, output_tokens=out_tok, usage_source=usage_source,
        events=tuple(sorted(events, key=lambda e: e.time_ns)), flags=tuple(sorted(flags)),
        attributes=attrs, **ids,
    )


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
    return [Unit(unit_id=uid, kind=kinds[uid], source=source,
                 spans=tuple(sorted(ss, key=lambda s: s.start_ns)),
                 outcome="fail" if any(s.status == "error" for s in ss) else "unknown")
            for uid, ss in units.items()]


def with_events(span: Span, extra: Sequence[SpanEvent]) -> Span:
    """Rebuild ``span`` with more events (log records that arrived separately), deduplicated.

    Messages are recomputed from the span's attributes and all its events (so content sent only
    as log records fills the span, and ``content_not_captured`` clears once content arrives).
    """
    seen = {json.dumps(e.model_dump(mode="json"), sort_keys=True) for e in span.events}
    new = [e for e in extra if json.dumps(e.model_dump(mode="json"), sort_keys=True) not in seen]
    if not new:
        return span
    return attributes_to_span(
        span.attributes, (*span.events, *new), trace_id=span.trace_id, span_id=span.span_id,
        parent_span_id=span.parent_span_id, name=span.name, start_ns=span.start_ns, end_ns=span.end_ns,
        status=span.status, status_message=span.status_message, flags=span.flags)


LogItem = tuple[str, str, SpanEvent]
"""One OTLP log record joined to its span: ``(trace id, span id, event)``, ids lowercase hex or empty."""


def log_event(name: str, time_ns: int, attrs: dict[str, Any], body: Any) -> SpanEvent:
    """A log record as a span event (``source="log_record"``); its name falls back to the ``event.name``
    attribute. Lone surrogates in attributes and body become U+FFFD."""
    (attrs, body), _ = clean_value([attrs, body])
    return SpanEvent(name=name or str(attrs.get("event.name") or ""), time_ns=time_ns, attributes=attrs,
                     body=body, source="log_record")


def check_log_ids(trace_id: str, span_id: str) -> None:
    """A log record's ids: both empty, or a 16-byte trace id and an 8-byte span id (lowercase hex).

    Raises:
        ValueError: wrong lengths, or only one of the two given.
    """
    if (trace_id and len(trace_id) != 32) or (span_id and len(span_id) != 16):
        raise ValueError(f"trace_id must be 16 bytes and span_id 8 bytes (got {trace_id!r}, {span_id!r})")
    if bool(trace_id) != bool(span_id):
        raise ValueError("trace_id and span_id must be given together")
