"""Domain types of captured traces: Span, Trace, Session, Unit, Message, ToolCall, Step.

Shapes follow OpenTelemetry span semantics (ids as lowercase hex: trace id 32 chars,
span id 16 chars; times in ns since the Unix epoch, UTC) and the OTel GenAI message
model (role + text + tool calls).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from assay.traces.media import MediaPart, extract_media

Role = Literal["system", "user", "assistant", "tool"]
SpanKind = Literal["llm", "tool", "retrieval", "agent", "chain", "embedding", "other"]
SpanStatus = Literal["unset", "ok", "error"]
ArgumentsFlag = Literal["object", "json_string", "json_string_twice", "invalid_json", "empty"]
StepKind = Literal[
    "system", "user", "assistant", "tool_call", "tool_result", "retrieval", "state", "error", "input", "output"
]
"""``input`` / ``output``: what a span (chain, agent, retriever, guardrail, embedding, generic) received or
produced as ``input.value`` / ``output.value`` when it is no chat message, tool call or state."""
UnitKind = Literal["session", "trace"]
SpanFlag = Literal["lone_surrogate_replaced", "invalid_utf8_replaced", "content_not_captured", "orphan",
                   "clock_skew", "merged"]
"""Flags a span can carry: ``lone_surrogate_replaced`` (a string held a lone UTF-16 surrogate,
now U+FFFD), ``invalid_utf8_replaced`` (a protobuf string field held invalid UTF-8 bytes, each bad
sequence now U+FFFD), ``content_not_captured`` (an LLM span with no message content anywhere: the emitter
had content capture off), ``orphan`` and ``clock_skew`` (set by the store, :mod:`assay._store.spans`), ``merged``
(differing copies of the span arrived and were merged field by field, :mod:`assay.traces.merge`)."""
Outcome = Literal["pass", "fail", "unknown"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """One tool call requested by a model or executed by a tool span.

    ``arguments`` is the parsed JSON object (None when it could not be parsed);
    ``arguments_raw`` always keeps the text as received; ``arguments_flag`` says which
    case applied.
    """

    id: str | None = None
    name: str
    arguments: dict[str, Any] | None = None
    arguments_raw: str = ""
    arguments_flag: ArgumentsFlag = "empty"


def parse_arguments(value: object) -> tuple[dict[str, Any] | None, str, ArgumentsFlag]:
    """Parse tool-call arguments as they arrive on the wire.

    Args:
        value: a dict, a JSON string, a JSON string encoded twice, or anything else.

    Returns:
        ``(parsed object or None, raw text, flag)``. Never raises.
    """
    if value is None or value == "":
        return {}, "", "empty"
    if isinstance(value, dict):
        return dict(value), json.dumps(value, ensure_ascii=False), "object"
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        first = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return None, raw, "invalid_json"
    if isinstance(first, dict):
        return first, raw, "json_string"
    if isinstance(first, str):
        try:
            second = json.loads(first)
        except json.JSONDecodeError:
            return None, raw, "invalid_json"
        if isinstance(second, dict):
            return second, raw, "json_string_twice"
    return None, raw, "invalid_json"


class Message(_Frozen):
    """One chat message: role, text content, media, tool calls it requests, or the tool call it answers.

    Media never sits in ``content``: Langfuse media tokens and ``data:`` URLs found in the text are taken out
    into ``media`` (:func:`assay.traces.media.extract_media`) when the message is made.
    """

    role: Role
    content: str | None = None
    media: tuple[MediaPart, ...] = ()
    """Images, audio, video and files of the message, each with its reference (:mod:`assay.traces.media`)."""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    """Who spoke: a chat log's ``name`` (on any role), an OTel GenAI message's ``name``."""
    is_error: bool = False
    """A tool result the source marked as an error (Anthropic ``tool_result.is_error``)."""

    @model_validator(mode="before")
    @classmethod
    def _media_out_of_text(cls, data: Any) -> Any:
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, str):
            return data
        text, parts = extract_media(content)
        if not parts:
            return data
        return {**data, "content": text or None, "media": (*tuple(data.get("media") or ()), *parts)}


class SpanEvent(_Frozen):
    """A span event or an OTLP log record joined to its span by trace and span id.

    ``time_ns`` is ns since the Unix epoch (UTC); ``body`` is the log record body (None for
    span events); ``source`` says where it came from.
    """

    name: str
    time_ns: int = 0
    attributes: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    source: Literal["span_event", "log_record"] = "span_event"


class Span(_Frozen):
    """One step of a trace (OTel span semantics).

    Times are ns since the Unix epoch (UTC). ``synthetic_time`` is True when the source
    format carried no timestamps and assay numbered the steps in order instead.
    """

    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    parent_span_id: str | None = None
    name: str
    kind: SpanKind = "other"
    start_ns: int = 0
    end_ns: int = 0
    status: SpanStatus = "unset"
    status_message: str | None = None
    session_id: str | None = None
    input_messages: tuple[Message, ...] = ()
    output_messages: tuple[Message, ...] = ()
    tool_call: ToolCall | None = None
    tool_result: str | None = None
    input_value: str | None = None
    output_value: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    synthetic_time: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict)
    provider: str | None = None
    """``gen_ai.provider.name`` (older emitters: ``gen_ai.system``; OpenInference ``llm.provider``)."""
    usage_source: str | None = None
    """The attribute the token counts came from; None with None counts when usage is unknown."""
    cost_usd: float | None = None
    """What this span's model call cost in USD, as the source gave it (Langfuse ``costDetails``, a
    mapping's ``usage.cost``); None when the source gave none (see :mod:`assay.traces.usage`)."""
    events: tuple[SpanEvent, ...] = ()
    """Span events and joined log records, in time order (content may come only from these)."""
    flags: tuple[SpanFlag, ...] = ()
    """What was repaired or is missing (see :data:`SpanFlag`), sorted."""

    @property
    def duration_ns(self) -> int:
        """End minus start in ns (0 when unknown)."""
        return max(0, self.end_ns - self.start_ns)

    @model_serializer(mode="wrap")
    def _without_unknown_cost(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An unknown ``cost_usd`` is left out of dumps, so spans stored before the field existed keep
        their content hash."""
        data: dict[str, Any] = handler(self)
        if data.get("cost_usd", 0) is None:
            del data["cost_usd"]
        return data


class Trace(_Frozen):
    """The spans of one request or agent run, sorted by start time."""

    trace_id: str
    spans: tuple[Span, ...]


class Unit(_Frozen):
    """What is clustered, reviewed and scored: a session where sessions exist, else a trace.

    ``outcome`` is the ground-truth outcome the source recorded (tau-bench reward 1.0 →
    ``"pass"``, 0.0 → ``"fail"``), ``"unknown"`` when the source has none. ``reward`` keeps
    the raw value.
    """

    unit_id: str
    kind: UnitKind
    source: str
    spans: tuple[Span, ...]
    outcome: Outcome = "unknown"
    reward: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @property
    def trace_ids(self) -> list[str]:
        """Distinct trace ids of the unit, in first-seen order."""
        return list(dict.fromkeys(s.trace_id for s in self.spans))

    @property
    def has_error(self) -> bool:
        """True when any span has error status."""
        return any(s.status == "error" for s in self.spans)

    @property
    def content_missing_reason(self) -> str | None:
        """Why a judge should skip this unit, or None: its LLM spans carry no message content
        (the emitter had content capture off), so there is nothing to score."""
        llm = [s for s in self.spans if s.kind == "llm"]
        if llm and all("content_not_captured" in s.flags for s in llm) and not any(
                s.tool_call or s.input_value or s.output_value for s in self.spans):
            return (f"content not captured: {len(llm)} LLM span(s) without message content "
                    "(enable content capture in the instrumentation, e.g. "
                    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)")
        return None


class Session(_Frozen):
    """The traces of one conversation (``gen_ai.conversation.id`` / ``session.id``)."""

    session_id: str
    traces: tuple[Trace, ...]


class Step(_Frozen):
    """One entry of a unit's step timeline: what an expert (or a judge) reads.

    ``index`` is 1-based in time order; ``time_ns`` is the step's start (ns, UTC).
    """

    index: int
    kind: StepKind
    text: str = ""
    tool_name: str | None = None
    arguments: dict[str, Any] | None = None
    is_error: bool = False
    span_id: str | None = None
    time_ns: int = 0
    media: tuple[MediaPart, ...] = ()
    """The step's images, audio, video and files: shown as a placeholder with the reference (a thumbnail of
    inline images on the review page), as a ``[image: reference]`` marker in judge text; never inlined."""
    in_progress: bool = False
    """The step's span has not ended (no end time stored yet): its output or result may still come."""
    agent: str | None = None
    """Who the step belongs to, where the source names one: the speaker of a message (a chat log's ``name``),
    else the agent of its span (``gen_ai.agent.name`` / OpenInference ``agent.name`` on the span or an
    ancestor)."""
    error: str | None = None
    """Why the step's span failed (error status): its status message and exception type and message."""
    stacktrace: str | None = None
    """The failed span's stack trace (its ``exception`` event's), shown folded; never sent to a judge."""
    span_name: str | None = None
    """The span's name, for ``input`` / ``output`` steps (which span received or produced the text)."""
    mime_type: str | None = None
    """``input.mime_type`` / ``output.mime_type`` of an ``input`` / ``output`` step: ``application/json`` is
    shown as JSON, ``text/plain`` as text (None: JSON when the text parses as an object or array)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> tuple[str, bool]:
    """Replace lone UTF-16 surrogates (text cut inside an emoji) by U+FFFD.

    Valid astral characters (emoji, ZWJ sequences) are single code points in a Python ``str``
    and pass unchanged; only unpaired surrogates, which cannot be encoded as UTF-8, are replaced.

    Returns:
        ``(text, changed)``.
    """
    if not _SURROGATE.search(value):
        return value, False
    return _SURROGATE.sub("\ufffd", value), True


def clean_value(value: Any) -> tuple[Any, bool]:
    """:func:`clean_text` applied to every string inside lists and dicts (keys too)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        pairs = [clean_value(v) for v in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            k2, c1 = clean_value(k)
            v2, c2 = clean_value(v)
            out[k2] = v2
            changed = changed or c1 or c2
        return out, changed
    return value, False


def timestamp_ns(value: Any) -> int:
    """Convert a timestamp from a file format to ns since the Unix epoch, UTC.

    The one rule, everywhere in assay: an ISO 8601 string with an offset (``Z``, ``+02:00``) is
    converted to UTC; **an ISO string without an offset is taken as UTC** (never local time).
    Numbers are read by magnitude: ns (≥1e17), µs (≥1e14), ms (≥1e11), else seconds. So the same
    instant given with different offsets yields the same ns.

    Raises:
        ValueError: not a timestamp.
    """
    from datetime import UTC, datetime
    from decimal import Decimal

    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        v = float(value)
        scale = 1 if v >= 1e17 else 1_000 if v >= 1e14 else 1_000_000 if v >= 1e11 else 1_000_000_000
        return int(value) * scale if isinstance(value, int) else int(Decimal(repr(v)) * scale)
    text = str(value).strip()
    if text.isdigit():
        return timestamp_ns(int(text))
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
