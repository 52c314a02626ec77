"""Reader for tau-bench trajectory files (sierra-research/tau-bench ``historical_trajectories``
and the AgentRx copies of tau retail runs).

One run = one unit (a single trace). Each assistant turn becomes an LLM span, each tool
call a tool span with its arguments parsed (they arrive as JSON strings) and its result.
The run's ``reward`` is kept as the unit's outcome (1.0 → pass, else fail).
tau-bench records no timestamps: spans are numbered in message order (1 ms per message)
and marked ``synthetic_time``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from assay.traces.model import Message, Span, ToolCall, Unit, parse_arguments
from assay.traces.shapes import ShapeError, describe_error, expect_list, expect_object, json_type
from assay.traces.timeline import looks_like_error

_MS = 1_000_000


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def detect_domain(run: dict[str, Any]) -> str:
    """Guess the tau-bench domain (``airline``/``retail``) from the system prompt."""
    traj = run.get("traj") or []
    head = str(traj[0].get("content") or "")[:200].lower() if traj else ""
    for domain in ("airline", "retail"):
        if domain in head:
            return domain
    return "unknown"


def _message(raw: Any, path: str = "traj[0]") -> Message:
    raw = expect_object(raw, path)
    calls = []
    for k, c in enumerate(expect_list(raw.get("tool_calls"), f"{path}.tool_calls")):
        c = expect_object(c, f"{path}.tool_calls[{k}]")
        fn = expect_object(c.get("function"), f"{path}.tool_calls[{k}].function")
        if "name" not in fn:
            raise ShapeError(f"{path}.tool_calls[{k}].function.name: missing")
        try:
            calls.append(ToolCall(id=c.get("id"), name=fn["name"],
                                  **dict(zip(("arguments", "arguments_raw", "arguments_flag"),
                                             parse_arguments(fn.get("arguments")), strict=True))))
        except ValidationError as exc:
            raise ShapeError(f"{path}.tool_calls[{k}]: {describe_error(exc)}") from None
    if "role" not in raw:
        raise ShapeError(f"{path}.role: missing")
    try:
        return Message(role=raw["role"], content=raw.get("content"), tool_calls=tuple(calls),
                       tool_call_id=raw.get("tool_call_id"), name=raw.get("name"))
    except ValidationError as exc:
        raise ShapeError(f"{path}: {describe_error(exc)}") from None


def _reward(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ShapeError(f"reward: expected a number or null, got {json_type(value)} {str(value)[:40]!r}")
    return float(value)


def run_to_unit(run: Any, source: str) -> Unit:
    """Convert one tau-bench run (a dict as in the JSON file) into a :class:`Unit`.

    Raises:
        KeyError, ValueError (incl. ShapeError, pydantic.ValidationError): when the run is not an object,
            lacks ``task_id``/``traj``, ``traj`` is not a list of message objects, or ``reward`` is not a number.
    """
    run = expect_object(run, "run")
    if "task_id" not in run:
        raise ShapeError("task_id: missing")
    traj_raw = expect_list(run.get("traj"), "traj", optional=False)
    reward = _reward(run.get("reward"))
    info = expect_object(run.get("info") or {}, "info")
    task = expect_object(info.get("task") or {}, "info.task")
    messages = [_message(m, f"traj[{i}]") for i, m in enumerate(traj_raw)]
    domain = detect_domain(run)
    unit_id = f"tau-{domain}/task-{run['task_id']}/trial-{run.get('trial', 0)}"
    trace_id = _hex(unit_id, 32)
    root_id = _hex(unit_id + "#root", 16)
    used: set[int] = set()

    def result_for(call_id: str | None, after: int) -> tuple[int, Message | None]:
        # tool_call ids can repeat within a run: take the first unused answer after the call
        for j in range(after + 1, len(messages)):
            if j not in used and messages[j].role == "tool" and messages[j].tool_call_id == call_id:
                used.add(j)
                return j, messages[j]
        return after, None

    spans: list[Span] = []
    pending: list[Message] = []
    for i, msg in enumerate(messages):
        if msg.role != "assistant":
            pending.append(msg)
            continue
        t = (i + 1) * _MS
        spans.append(Span(trace_id=trace_id, span_id=_hex(f"{unit_id}#{i}", 16), parent_span_id=root_id,
                          name="chat", kind="llm", start_ns=t - _MS // 2, end_ns=t,
                          input_messages=tuple(pending), output_messages=(msg,), synthetic_time=True,
                          session_id=None))
        pending = []
        for call in msg.tool_calls:
            j, result = result_for(call.id, i)
            content = result.content if result else None
            spans.append(Span(trace_id=trace_id, span_id=_hex(f"{unit_id}#{i}#{call.id}", 16),
                              parent_span_id=root_id, name=f"execute_tool {call.name}", kind="tool",
                              start_ns=t + 1, end_ns=(j + 1) * _MS, tool_call=call, tool_result=content,
                              status="error" if looks_like_error(content) else "ok",
                              status_message=(content or "")[:200] if looks_like_error(content) else None,
                              synthetic_time=True))
    end = (len(messages) + 1) * _MS
    root = Span(trace_id=trace_id, span_id=root_id, name="agent run", kind="agent", start_ns=0, end_ns=end,
                output_messages=tuple(m for m in pending if m.role != "tool"), synthetic_time=True,
                attributes={"tau.task_id": run["task_id"], "tau.trial": run.get("trial"),
                            "tau.domain": domain, "tau.source": info.get("source")})
    return Unit(unit_id=unit_id, kind="trace", source=source, spans=(root, *spans),
                outcome="unknown" if reward is None else ("pass" if reward >= 1.0 else "fail"),
                reward=reward,
                attributes={"domain": domain, "task_id": run["task_id"], "trial": run.get("trial"),
                            "instruction": task.get("instruction"), "ended_by": info.get("source")})


def looks_like_tau_bench(data: object) -> bool:
    """True when parsed JSON looks like a tau-bench trajectory list (or one run)."""
    first = data[0] if isinstance(data, list) and data else data
    return isinstance(first, dict) and "traj" in first and "task_id" in first


def read_runs(data: object, source: str) -> Iterator[tuple[Unit | None, str | None]]:
    """Yield ``(unit, None)`` per readable run and ``(None, reason)`` per rejected one."""
    runs = data if isinstance(data, list) else [data]
    for n, run in enumerate(runs):
        try:
            yield run_to_unit(run, source), None
        except Exception as exc:  # noqa: BLE001 - one bad run must not cost the file
            tid = run.get("task_id") if isinstance(run, dict) else None
            yield None, f"run #{n}" + (f" (task_id {tid!r})" if tid is not None else "") + f": {describe_error(exc)}"
