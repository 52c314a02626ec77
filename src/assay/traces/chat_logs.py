"""Readers for chat logs as JSONL: one conversation per line.

* ``openai-chat``: ``{"messages": [...], "id"?, "created_at"?}`` with OpenAI chat-completions
  messages (``tool_calls`` with *string* arguments, ``role: tool`` results with ``tool_call_id``);
  a ``response``/``choices`` of a chat completion, when present, is appended as the last turn.
* ``anthropic-messages``: ``{"system": ..., "messages": [...]}`` with content blocks
  (``text``, ``tool_use {id, name, input}``, ``tool_result {tool_use_id, content, is_error}``).

Each conversation becomes one unit (one trace), one span per turn, never merged: an LLM span per
assistant turn, a tool span per tool call with its result (``is_error`` → error status), and a span per
other turn (system, user, a tool result no call asked for) holding that message. A message's ``name``
(the speaker of a group chat, on any role) is kept on the message and on its spans as
``gen_ai.agent.name``, so each step records who spoke. A logged ``usage`` (OpenAI ``prompt_tokens`` /
``completion_tokens``, Anthropic ``input_tokens`` / ``output_tokens``; top level or under ``response``)
and ``model`` go on the span of the last assistant turn, the response they describe. Ids: the line's ``id`` /
``conversation_id`` / ``session_id`` when given, else a hash of the line. Time: ``created_at`` /
``timestamp`` / ``created`` by :func:`assay.traces.model.timestamp_ns` (no offset → UTC); without
one, spans are numbered 1 ms apart and marked ``synthetic_time``. Optional per record: ``outcome``
(``pass`` / ``fail``, a boolean or a reward 1 / 0) and ``feedback`` (the user's thumbs or score, with a
comment: :mod:`assay.traces.record_fields`); an unreadable one rejects the record with the reason. Also
``environment`` (or ``env``) and ``release``, at the top or under ``metadata``: where the conversation ran
(:mod:`assay.traces.environment`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, Literal

from assay.traces.chat_formats import CHAT_ROLES, chat_messages
from assay.traces.environment import record_environment
from assay.traces.model import Message, Span, Unit, timestamp_ns
from assay.traces.record_fields import record_feedback_attributes, record_outcome
from assay.traces.shapes import describe_error
from assay.traces.timeline import looks_like_error

ChatFormat = Literal["openai-chat", "anthropic-messages"]
_MS = 1_000_000
_ANTHROPIC_BLOCKS = {"tool_use", "tool_result", "thinking", "image"}


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def detect_chat_format(record: object) -> ChatFormat | None:
    """``anthropic-messages`` (top-level ``system`` or Anthropic content blocks), ``openai-chat``
    (a ``messages`` list), or None."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return None
    if "system" in record:
        return "anthropic-messages"
    for m in record["messages"]:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in _ANTHROPIC_BLOCKS
                                             for b in content):
            return "anthropic-messages"
    return "openai-chat"


def _record_messages(record: dict[str, Any], fmt: ChatFormat) -> list[Message]:
    msgs = chat_messages(record.get("system"), "system") if fmt == "anthropic-messages" else []
    msgs += chat_messages(record["messages"], "user")
    response = record.get("response") or {}
    choices = record.get("choices") or (response.get("choices") if isinstance(response, dict) else None) or []
    for choice in choices[:1]:
        msgs += chat_messages(choice.get("message"), "assistant")
    return msgs


def check_messages(messages: list[Any]) -> None:
    """Check a record's ``messages`` before reading them: at least one, each an object with a chat role (or a
    typed item without one, e.g. a Responses ``function_call``) and text, parts or null as content.

    Raises:
        ValueError: the first problem, with the message's index: ``messages[0].role: expected a chat role
            (system, user, assistant, tool ...), got 42``.
    """
    if not messages:
        raise ValueError("'messages' is empty: a conversation needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}]: expected a message object, got {m!r}"[:300])
        role = m.get("role")
        if role is None and not isinstance(m.get("type"), str):
            raise ValueError(f"messages[{i}]: no 'role'")
        if role is not None and (not isinstance(role, str) or role.lower() not in CHAT_ROLES):
            raise ValueError(f"messages[{i}].role: expected a chat role (system, user, assistant, tool ...), "
                             f"got {role!r}"[:300])
        if not isinstance(m.get("content"), str | list | dict | None):
            raise ValueError(f"messages[{i}].content: expected text, a list of parts or null, got {m['content']!r}"
                             [:300])


def _speaker(msg: Message) -> dict[str, Any]:
    """The span attributes naming who spoke (``gen_ai.agent.name``), when the log names one."""
    return {"gen_ai.agent.name": msg.name} if msg.name else {}


def conversation_unit(record: dict[str, Any], fmt: ChatFormat, line_key: str, source: str) -> Unit:
    """One JSONL record as a unit.

    Raises:
        KeyError, TypeError, ValueError: no ``messages`` list, or an unreadable timestamp.
    """
    if not isinstance(record.get("messages"), list):
        raise ValueError("record has no 'messages' list")
    check_messages(record["messages"])
    conv = record.get("id") or record.get("conversation_id") or record.get("session_id")
    unit_id = f"{fmt}/{conv}" if conv else f"{fmt}/{_hex(line_key, 16)}"
    stamp = next((record[k] for k in ("created_at", "timestamp", "created") if record.get(k) is not None), None)
    base = timestamp_ns(stamp) if stamp is not None else 0
    trace_id, root_id = _hex(unit_id, 32), _hex(unit_id + "#root", 16)
    messages = _record_messages(record, fmt)
    results: dict[str | None, tuple[int, Message | None]] = {
        m.tool_call_id: (i, m) for i, m in enumerate(messages) if m.role == "tool" and m.tool_call_id}
    called = {c.id for m in messages if m.role == "assistant" for c in m.tool_calls}
    spans: list[Span] = []
    common: dict[str, Any] = {"trace_id": trace_id, "parent_span_id": root_id, "synthetic_time": stamp is None}
    for i, msg in enumerate(messages):
        t = base + (i + 1) * _MS
        if msg.role == "tool" and msg.tool_call_id in called:
            continue  # the result of a call: on its tool span
        if msg.role != "assistant":
            spans.append(Span(span_id=_hex(f"{unit_id}#{i}", 16), name=msg.name or msg.role,
                              kind="agent" if msg.name else "other", start_ns=t - _MS // 2, end_ns=t,
                              output_messages=(msg,), attributes=_speaker(msg), **common))
            continue
        spans.append(Span(span_id=_hex(f"{unit_id}#{i}", 16), name="chat", kind="llm", start_ns=t - _MS // 2,
                          end_ns=t, output_messages=(msg,), attributes=_speaker(msg), **common))
        for k, call in enumerate(msg.tool_calls):
            j, result = results.get(call.id, (i, None))
            failed = result is not None and (result.is_error or looks_like_error(result.content))
            spans.append(Span(span_id=_hex(f"{unit_id}#{i}#{k}", 16), name=f"execute_tool {call.name}", kind="tool",
                              start_ns=t + 1, end_ns=base + (j + 1) * _MS, tool_call=call,
                              tool_result=result.content if result else None, status="error" if failed else "ok",
                              status_message=(result.content or "")[:200] if failed and result else None,
                              attributes=_speaker(msg), **common))
    root = Span(trace_id=trace_id, span_id=root_id, name="conversation", kind="agent", start_ns=base,
                end_ns=base + (len(messages) + 1) * _MS, synthetic_time=stamp is None)
    raw_meta = record.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    outcome, reward = record_outcome(record.get("outcome"))
    return Unit(unit_id=unit_id, kind="trace", source=source, spans=(root, *spans), outcome=outcome, reward=reward,
                attributes={"format": fmt, **({"metadata": meta} if meta else {}), **_item_keys(record, meta),
                            **record_feedback_attributes(record.get("feedback")), **record_environment(record)})


ITEM_KEYS = ("dataset_item_id", "item_id", "task_id")
"""Record fields (top level, else ``metadata``) copied to the unit's attributes: the gate pairs a candidate
unit with the baseline unit of the same dataset item by them (``--pair-by item``)."""


def _item_keys(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ITEM_KEYS:
        value = record.get(key, meta.get(key))
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            out[key] = str(value)
    return out


def _record_usage(record: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
    """The ``usage`` of a logged response (OpenAI ``prompt_tokens`` / ``completion_tokens``, Anthropic
    ``input_tokens`` / ``output_tokens``), at the top or under ``response``, and the model."""
    response: dict[str, Any] = record["response"] if isinstance(record.get("response"), dict) else {}
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else response.get("usage")
    model = record.get("model") or response.get("model")
    if not isinstance(usage, dict):
        return None, None, None if model is None else str(model)

    def count(*keys: str) -> int | None:
        value = next((usage[k] for k in keys if isinstance(usage.get(k), int | float)), None)
        return None if value is None or isinstance(value, bool) else int(value)

    return count("prompt_tokens", "input_tokens"), count("completion_tokens", "output_tokens"), \
        None if model is None else str(model)


def with_usage(unit: Unit, record: dict[str, Any]) -> Unit:
    """The unit with the record's ``usage`` and model on its last LLM span (the logged response); unknown
    usage stays None."""
    i, o, model = _record_usage(record)
    llm = [n for n, s in enumerate(unit.spans) if s.kind == "llm"]
    if not llm or (i is None and o is None and model is None):
        return unit
    last = unit.spans[llm[-1]]
    update: dict[str, Any] = {"model": last.model or model}
    if i is not None or o is not None:
        update |= {"input_tokens": i, "output_tokens": o, "usage_source": "usage"}
    spans = list(unit.spans)
    spans[llm[-1]] = last.model_copy(update=update)
    return unit.model_copy(update={"spans": tuple(spans)})


def read_jsonl(text: str, fmt: ChatFormat | None, source: str) -> Iterator[tuple[Unit | None, str | None]]:
    """Yield a unit per JSONL line and ``(None, reason)`` per line that cannot be read.

    Args:
        text: the file content.
        fmt: force a format, or None to detect per line.
    """
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            used = fmt or detect_chat_format(record)
            if used is None:
                raise ValueError("not a chat-log record (expected an object with a 'messages' list)")
            yield with_usage(conversation_unit(record, used, f"{source}:{n}:{line}", source), record), None
        except Exception as exc:  # noqa: BLE001 - one bad line must not cost the file
            yield None, f"line {n}: {describe_error(exc)}"


_MESSAGE_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _is_message_list(data: list[Any]) -> bool:
    """A bare list of chat messages (one conversation without its ``{"messages": ...}`` wrapper)."""
    return bool(data) and all(isinstance(m, dict) and str(m.get("role", "")).lower() in _MESSAGE_ROLES for m in data)


def detect_chat_document(data: object) -> ChatFormat | None:
    """The chat format of a parsed JSON document: one conversation (``{messages}``), a list of objects of
    which at least one is a conversation (the others are rejected when read), or a bare list of messages
    (each ``{role, content}`` with a chat role); None when it is none of these."""
    if isinstance(data, dict):
        return detect_chat_format(data)
    if not isinstance(data, list) or not data:
        return None
    if _is_message_list(data):
        return detect_chat_format({"messages": data})
    found = {detect_chat_format(r) for r in data}
    if not all(isinstance(r, dict) for r in data) or found == {None}:
        return None
    return "anthropic-messages" if "anthropic-messages" in found else "openai-chat"


def read_document(data: object, fmt: ChatFormat | None, source: str) -> Iterator[tuple[Unit | None, str | None]]:
    """Yield a unit per conversation of a JSON document (see :func:`detect_chat_document`) and
    ``(None, "record N: reason")`` per list item that cannot be read.

    Args:
        fmt: force a format, or None to detect per conversation.

    Raises:
        ValueError: the document is neither a conversation nor a list of them.
    """
    if isinstance(data, list) and _is_message_list(data):
        data = {"messages": data}
    if isinstance(data, dict):
        used = fmt or detect_chat_format(data)
        if used is None:
            raise ValueError("not a chat log: expected an object with a 'messages' list, a list of such "
                             "objects, or a list of {role, content} messages")
        yield with_usage(conversation_unit(data, used, f"{source}:{json.dumps(data, sort_keys=True)}", source),
                         data), None
        return
    if not isinstance(data, list):
        raise ValueError("not a chat log: expected an object with a 'messages' list or a list of them")
    for n, record in enumerate(data):
        try:
            used = fmt or (detect_chat_format(record) if isinstance(record, dict) else None)
            if used is None or not isinstance(record, dict):
                raise ValueError("not a chat-log record (expected an object with a 'messages' list)")
            unit = conversation_unit(record, used, f"{source}:{n}:{json.dumps(record, sort_keys=True)}", source)
            yield with_usage(unit, record), None
        except Exception as exc:  # noqa: BLE001 - one bad record must not cost the file
            yield None, f"record {n}: {describe_error(exc)}"
