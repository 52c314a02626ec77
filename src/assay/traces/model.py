"""Domain types of captured traces: Span, Trace, Session, Unit, Message, ToolCall, Step.

Shapes follow OpenTelemetry span semantics (ids as lowercase hex: trace id 32 chars,
span id 16 chars; times in ns since the Unix epoch, UTC) and the OTel GenAI message
model (role + text + tool calls).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
SpanKind = Literal["llm", "tool", "retrieval", "agent", "chain", "embedding", "other"]
SpanStatus = Literal["unset", "ok", "error"]
ArgumentsFlag = Literal["object", "json_string", "json_string_twice", "invalid_json", "empty"]
StepKind = Literal[
    "system", "user", "assistant", "tool_call", "tool_result", "retrieval", "state", "error"
]
UnitKind = Literal["session", "trace"]
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
    """One chat message: role, text content, tool calls it requests, or the tool call it answers."""

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


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

    @property
    def duration_ns(self) -> int:
        """End minus start in ns (0 when unknown)."""
        return max(0, self.end_ns - self.start_ns)


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
