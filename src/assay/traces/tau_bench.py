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

from assay.traces.model import Message, Span, ToolCall, Unit, parse_arguments
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


def _message(raw: dict[str, Any]) -> Message:
    calls = tuple(
        ToolCall(id=c.get("id"), name=c["function"]["name"],
                 **dict(zip(("arguments", "arguments_raw", "arguments_flag"),
                            parse_arguments(c["function"].get("arguments")), strict=True)))
        for c in raw.get("tool_calls") or []
    )
    return Message(role=raw["role"], content=raw.get("content"), tool_calls=calls,
                   tool_call_id=raw.get("tool_call_id"), name=raw.get("name"))


def run_to_unit(run: dict[str, Any], source: str) -> Unit:
    """Convert one tau-bench run (a dict as in the JSON file) into a :class:`Unit`.

    Raises:
        KeyError, TypeError, ValueError: when the run lacks ``traj`` or a message is malformed.
    """
    domain = detect_domain(run)
    unit_id = f"tau-{domain}/task-{run['task_id']}/trial-{run.get('trial', 0)}"
    trace_id = _hex(unit_id, 32)
    root_id = _hex(unit_id + "#root", 16)
    traj = run["traj"]
    messages = [_message(m) for m in traj]
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
    reward = run.get("reward")
    end = (len(messages) + 1) * _MS
    root = Span(trace_id=trace_id, span_id=root_id, name="agent run", kind="agent", start_ns=0, end_ns=end,
                output_messages=tuple(m for m in pending if m.role != "tool"), synthetic_time=True,
                attributes={"tau.task_id": run["task_id"], "tau.trial": run.get("trial"),
                            "tau.domain": domain, "tau.source": (run.get("info") or {}).get("source")})
    info = run.get("info") or {}
    task = info.get("task") or {}
    return Unit(unit_id=unit_id, kind="trace", source=source, spans=(root, *spans),
                outcome="unknown" if reward is None else ("pass" if float(reward) >= 1.0 else "fail"),
                reward=None if reward is None else float(reward),
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
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            yield None, f"run #{n}: {type(exc).__name__}: {exc}"
