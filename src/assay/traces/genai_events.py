"""Chat messages carried by OTel GenAI *events*: span events or log records.

Two generations of the OTel GenAI semantic conventions send content as events:

* up to v1.27, span events ``gen_ai.content.prompt`` (attribute ``gen_ai.prompt``: a JSON list of
  ``{role, content}``, or plain text) and ``gen_ai.content.completion`` (``gen_ai.completion``);
* v1.28 – v1.36, one event per message: ``gen_ai.system.message``, ``gen_ai.user.message``,
  ``gen_ai.assistant.message``, ``gen_ai.tool.message`` (input side) and ``gen_ai.choice``
  (output side), sent as log records (body: ``{content, tool_calls, id}``; ``gen_ai.choice``:
  ``{index, finish_reason, message}``) joined to their span by trace and span id, or as span
  events whose attributes hold the same fields.

With content capture off the events still arrive, without ``content``: the messages are kept
with ``content=None`` and the span is flagged ``content_not_captured`` by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from assay.traces.media import MediaPart, block_part, is_media_block
from assay.traces.model import Message, Role, SpanEvent, ToolCall, parse_arguments

_ROLE_EVENTS: dict[str, Role] = {
    "gen_ai.system.message": "system", "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool",
}
GENAI_EVENT_NAMES: frozenset[str] = frozenset(
    {*_ROLE_EVENTS, "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion"})


def event_name(event: SpanEvent) -> str:
    """The event's name: its own, else the ``event.name`` attribute (older log-record emitters)."""
    return event.name or str(event.attributes.get("event.name") or "")


def content_text(value: Any) -> str | None:
    """Text of a message ``content``: a string, a list of parts (``{type: text, text}``; media parts are
    left to :func:`content_media`), or JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [p if isinstance(p, str) else p.get("text") or p.get("content") for p in value
                 if isinstance(p, str) or (isinstance(p, dict) and not is_media_block(p))]
        strs = [t for t in texts if isinstance(t, str)]
        if strs:
            return "\n".join(strs)
        if any(is_media_block(p) for p in value):
            return None
    return json.dumps(value, ensure_ascii=False)


def content_media(value: Any) -> tuple[MediaPart, ...]:
    """The media parts of a message ``content`` list (:mod:`assay.traces.media`); () for anything else."""
    if not isinstance(value, list):
        return ()
    return tuple(part for p in value if is_media_block(p) and (part := block_part(p)) is not None)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def openai_tool_calls(calls: Any) -> tuple[ToolCall, ...]:
    """Tool calls in the OpenAI shape ``[{id, type, function: {name, arguments}}]`` (also flat
    ``{id, name, arguments}``)."""
    out: list[ToolCall] = []
    for c in _maybe_json(calls) or []:
        if not isinstance(c, dict):
            continue
        fn: dict[str, Any] = c["function"] if isinstance(c.get("function"), dict) else c
        parsed, raw, flag = parse_arguments(fn.get("arguments", fn.get("input")))
        out.append(ToolCall(id=None if c.get("id") is None else str(c["id"]), name=str(fn.get("name") or "unknown"),
                            arguments=parsed, arguments_raw=raw, arguments_flag=flag))
    return tuple(out)


def _message(role: Any, fields: dict[str, Any]) -> Message:
    role = role if role in ("system", "user", "assistant", "tool") else "user"
    tcid = fields.get("id") if role == "tool" else fields.get("tool_call_id")
    return Message(role=role, content=content_text(fields.get("content")), media=content_media(fields.get("content")),
                   tool_calls=openai_tool_calls(fields.get("tool_calls")),
                   tool_call_id=None if tcid is None else str(tcid),
                   name=None if fields.get("name") is None else str(fields["name"]))


def _legacy_messages(value: Any, default_role: Role) -> list[Message]:
    parsed = _maybe_json(value)
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        return [Message(role=default_role, content=content_text(parsed))] if parsed is not None else []
    return [_message(m.get("role", default_role), m) for m in parsed if isinstance(m, dict)]


def event_messages(events: Iterable[SpanEvent]) -> tuple[list[Message], list[Message]]:
    """Input and output messages carried by GenAI events, in event time order.

    Args:
        events: span events and joined log records of one span (any order; others ignored).

    Returns:
        ``(input messages, output messages)``; both empty when no GenAI event is present.
    """
    inputs: list[Message] = []
    outputs: list[Message] = []
    for ev in sorted(events, key=lambda e: e.time_ns):
        name = event_name(ev)
        fields = ev.body if isinstance(ev.body, dict) else dict(ev.attributes)
        if name in _ROLE_EVENTS:
            inputs.append(_message(fields.get("role") or _ROLE_EVENTS[name], fields))
        elif name == "gen_ai.choice":
            msg = _maybe_json(fields.get("message"))
            msg = msg if isinstance(msg, dict) else fields
            outputs.append(_message(msg.get("role") or "assistant", msg))
        elif name == "gen_ai.content.prompt":
            inputs.extend(_legacy_messages(ev.attributes.get("gen_ai.prompt"), "user"))
        elif name == "gen_ai.content.completion":
            outputs.extend(_legacy_messages(ev.attributes.get("gen_ai.completion"), "assistant"))
    return inputs, outputs
