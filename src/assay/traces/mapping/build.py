"""One mapped record to a unit: its events' messages, in order, become spans as in the chat-log readers.

An assistant message becomes an LLM span (its input: the messages since the previous assistant
turn); each of its tool calls, structured or found by ``actions``, a tool span whose result is the
next tool message (matched by ``tool_call_id`` when it has one, else the oldest call still waiting)
or the text after the match (``rest``); a call with result ``none`` (``FINISH(...)``) stays on the
assistant turn, without a tool span. A result that reads as an error, or that
``is_error`` marks, gives the tool span error status. Messages left after the last assistant turn
are the root span's output. Errors raised here are ``ValueError``s naming the mapping field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from assay.traces.genai_events import openai_tool_calls
from assay.traces.mapping.actions import Action, compile_actions, find_actions
from assay.traces.mapping.model import ROLE_NAMES, MessageRule, RoleFrom, TraceMapping
from assay.traces.mapping.paths import Path, parse_path
from assay.traces.model import Message, Role, Span, ToolCall, timestamp_ns
from assay.traces.timeline import looks_like_error

_MS = 1_000_000
_US = 1_000


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass
class _Draft:
    """One message of an event, before it becomes spans."""

    role: Role
    content: str | None
    name: str | None = None
    calls: list[Action] = field(default_factory=list)
    tool_call_id: str | None = None
    is_error: bool = False


class CompiledMapping:
    """A :class:`TraceMapping` with its paths parsed and patterns compiled (once per file, not per record)."""

    def __init__(self, mapping: TraceMapping) -> None:
        self.mapping = mapping
        m = mapping
        self.paths: dict[str, Path | None] = {
            name: parse_path(value) if value is not None else None
            for name, value in [("records", m.records), ("id", m.id), ("session", m.session), ("time", m.time),
                                ("environment", m.environment), ("release", m.release),
                                ("events", m.events), ("event_time", m.event_time),
                                ("event_duration", m.event_duration)]}
        self.attributes = {k: parse_path(v) for k, v in m.attributes.items()}
        self.actions = compile_actions(m.actions)

    def path(self, name: str) -> Path:
        found = self.paths[name]
        assert found is not None
        return found

    def get(self, name: str, data: Any) -> Any:
        """The first value of the mapping's path ``name`` in ``data``; None when not configured or missing."""
        found = self.paths.get(name)
        return None if found is None else found.first(data)


def _role(rule: MessageRule, event: Any, where: str) -> Role:
    if not isinstance(rule.role, RoleFrom):
        return rule.role
    value = parse_path(rule.role.path).first(event)
    if value is None:
        if rule.role.default is not None:
            return rule.role.default
        raise ValueError(f"{where}.role.path: {rule.role.path!r} is missing")
    key = str(value)
    role = rule.role.map.get(key) or ROLE_NAMES.get(key.lower()) or rule.role.default
    if role is None:
        raise ValueError(f"{where}.role: {key!r} is not a role; map it under {where}.role.map or give "
                         f"{where}.role.default")
    return role


def _get(path: str | None, data: Any) -> Any:
    return None if path is None else parse_path(path).first(data)


def _draft(rule: MessageRule, event: Any, where: str, compiled: CompiledMapping) -> _Draft | None:
    content = _text(_get(rule.content, event))
    action = _text(_get(rule.action, event))
    structured = openai_tool_calls(_get(rule.tool_calls, event)) if rule.tool_calls else ()
    if content is None and action is None and not structured:
        return None
    role = _role(rule, event, where)
    calls = [Action(c, "next") for c in structured]
    if role == "assistant" and compiled.actions:
        source = action if rule.action is not None else content
        found, left = find_actions(source or "", compiled.actions)
        calls += found
        if rule.action is None:
            content = left or None
        elif left:
            content = f"{content}\n{left}" if content else left
    elif action:
        content = f"{content}\n{action}" if content else action
    error = _get(rule.is_error, event)
    return _Draft(role, content, _text(_get(rule.name, event)), calls, _text(_get(rule.tool_call_id, event)),
                  error is True or str(error).lower() == "true")


@dataclass
class _Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    cost_usd: float | None = None

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None


def _usage(mapping: TraceMapping, event: Any) -> _Usage | None:
    rule = mapping.usage
    if rule is None:
        return None
    cost = _get(rule.cost, event)
    try:
        cost_usd = None if cost is None else float(cost)
    except (TypeError, ValueError):
        raise ValueError(f"usage.cost: {cost!r} is not a number") from None
    return _Usage(_int(_get(rule.input_tokens, event), "usage.input_tokens"),
                  _int(_get(rule.output_tokens, event), "usage.output_tokens"), _text(_get(rule.model, event)),
                  cost_usd)


class _Spans:
    """Spans of one record, built message by message."""

    def __init__(self, unit_id: str, trace_key: str) -> None:
        self.trace_id = _hex(trace_key, 32)
        self.root_id = _hex(trace_key + "#root", 16)
        self.key = trace_key
        self.spans: list[dict[str, Any]] = []
        self.pending: list[Message] = []
        self.waiting: list[dict[str, Any]] = []
        self.calls = 0

    def _span(self, **fields: Any) -> dict[str, Any]:
        span = {"trace_id": self.trace_id, "span_id": _hex(f"{self.key}#{len(self.spans)}", 16),
                "parent_span_id": self.root_id, **fields}
        self.spans.append(span)
        return span

    def add(self, d: _Draft, t: int, usage: _Usage | None) -> bool:
        """Add one message at time ``t`` (ns); True when it became an LLM span that took ``usage``."""
        if d.role == "tool":
            self._result(d, t)
            return False
        message = Message(role=d.role, content=d.content, name=d.name, tool_call_id=d.tool_call_id)
        if d.role != "assistant":
            self.pending.append(message)
            return False
        calls = [self._call_id(a.call) for a in d.calls]
        message = message.model_copy(update={"tool_calls": tuple(calls)})
        extra: dict[str, Any] = {}
        if usage is not None and usage.known:
            extra = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                     "usage_source": "mapping"}
        self._span(name="chat", kind="llm", start_ns=t - 1, end_ns=t, input_messages=tuple(self.pending),
                   output_messages=(message,), model=usage.model if usage else None,
                   cost_usd=usage.cost_usd if usage else None,
                   attributes={"gen_ai.agent.name": d.name} if d.name else {}, **extra)
        self.pending = []
        for k, (action, call) in enumerate(zip(d.calls, calls, strict=True)):
            if action.mode == "none":
                continue  # a call without a result (FINISH): kept on the assistant turn only
            span = self._span(name=f"execute_tool {call.name}", kind="tool", start_ns=t + 1 + k, end_ns=t + 2 + k,
                              tool_call=call, tool_result=action.result, status="ok")
            if action.mode == "rest":
                self._finish(span, action.result, False, t + 2 + k)
            elif action.mode == "next":
                self.waiting.append(span)
        return usage is not None

    def _call_id(self, call: ToolCall) -> ToolCall:
        self.calls += 1
        return call if call.id else call.model_copy(update={"id": f"call-{_hex(self.key, 8)}-{self.calls}"})

    def _result(self, d: _Draft, t: int) -> None:
        span = next((s for s in self.waiting if d.tool_call_id and s["tool_call"].id == d.tool_call_id), None)
        if span is None and self.waiting and not d.tool_call_id:
            span = self.waiting[0]
        if span is None:
            self.pending.append(Message(role="tool", content=d.content, name=d.name, tool_call_id=d.tool_call_id,
                                        is_error=d.is_error))
            return
        self.waiting.remove(span)
        self._finish(span, d.content, d.is_error, t)

    @staticmethod
    def _finish(span: dict[str, Any], result: str | None, is_error: bool, t: int) -> None:
        failed = is_error or looks_like_error(result)
        span.update(tool_result=result, end_ns=max(t, span["start_ns"]), status="error" if failed else "ok",
                    status_message=(result or "error")[:200] if failed else None)

    def finish(self, start: int, end: int, synthetic: bool) -> list[Span]:
        start = min([start, *(s["start_ns"] for s in self.spans)])
        end = max([end, *(s["end_ns"] for s in self.spans)])
        root = Span(trace_id=self.trace_id, span_id=self.root_id, name="run", kind="agent", start_ns=start,
                    end_ns=end, synthetic_time=synthetic, output_messages=tuple(self.pending))
        return [root, *(Span(synthetic_time=synthetic, **s) for s in self.spans)]


class _Clock:
    """Message times: the events' own times, else their durations back to back, else 1 ms apart."""

    def __init__(self, base: int | None, compiled: CompiledMapping) -> None:
        self.timed = base is not None
        self.cursor = base if base is not None else _MS
        self.start = self.cursor
        self.compiled = compiled

    def event_start(self, event: Any, where: str) -> int:
        value = self.compiled.get("event_time", event)
        if value is not None:
            self.cursor = _time(value, f"{where}: event_time")
            self.timed = True
        return self.cursor

    def event_end(self, event: Any, start: int, last: int, where: str) -> None:
        seconds = self.compiled.get("event_duration", event)
        step = _US if self.timed or seconds is not None else _MS
        self.cursor = last + step
        if seconds is not None:
            try:
                self.cursor = max(self.cursor, start + int(float(seconds) * 1e9))
            except (TypeError, ValueError):
                raise ValueError(f"{where}: event_duration: {seconds!r} is not a number of seconds") from None
            self.timed = True

    @property
    def step(self) -> int:
        return _US if self.timed or self.compiled.paths.get("event_duration") else _MS


def _time(value: Any, where: str) -> int:
    try:
        return timestamp_ns(value)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{where}: {value!r} is not a timestamp") from None


def record_spans(compiled: CompiledMapping, record: Any, unit_id: str, trace_key: str) -> list[Span]:
    """The spans of one record (one trace).

    Raises:
        ValueError: the record's events are missing, or a value is unreadable; the message names the
            event and the mapping field.
    """
    m = compiled.mapping
    events = compiled.path("events").values(record)
    if not events:
        raise ValueError(f"events: {m.events!r} found nothing in the record")
    stamp = compiled.get("time", record)
    clock = _Clock(_time(stamp, "time") if stamp is not None else None, compiled)
    spans = _Spans(unit_id, trace_key)
    for e, event in enumerate(events):
        where = f"event {e}"
        try:
            drafts = [d for i, rule in enumerate(m.messages)
                      if (d := _draft(rule, event, f"messages.{i}", compiled)) is not None]
            usage = _usage(m, event)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        start = clock.event_start(event, where)
        t = start
        for k, draft in enumerate(drafts):
            t = start + k * clock.step
            if spans.add(draft, t, usage):
                usage = None
        clock.event_end(event, start, t, where)
    return spans.finish(clock.start, clock.cursor, synthetic=not clock.timed)
