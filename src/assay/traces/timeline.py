"""Flatten a unit into its step timeline: what an expert or a judge reads.

Each span contributes the messages it saw at its start (input) and produced at its end
(output); tool spans contribute a call and its result. Chat spans repeat the history in
their input, so a message already shown is not shown again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from assay.traces.model import Message, Span, Step, StepKind, Unit

_ERROR_RE = re.compile(r"^\s*(error|exception|traceback|failed)\b", re.IGNORECASE)


def looks_like_error(text: str | None) -> bool:
    """True when a tool result reads as an error: ``Error: ...``, a traceback, or ``{"error": ...}``."""
    if not text:
        return False
    if _ERROR_RE.match(text):
        return True
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            return False
        return isinstance(obj, dict) and bool(obj.get("error"))
    return False


_ROLE_KIND: dict[str, StepKind] = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool_result",
}


class _Builder:
    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
        self.tool_ids = {s.tool_call.id for s in self.spans if s.tool_call and s.tool_call.id}
        self.events: list[tuple[int, int, Step]] = []
        self.seq = 0
        self.last_state: dict[str, object] | None = None

    def add(self, t: int, kind: StepKind, span: Span, **fields: object) -> None:
        self.seq += 1
        step = Step(index=0, kind=kind, span_id=span.span_id, time_ns=t, **fields)
        self.events.append((t, self.seq, step))

    def messages(self, t: int, span: Span, messages: Iterable[Message]) -> None:
        for m in messages:
            if m.role == "tool" and m.tool_call_id in self.tool_ids:
                continue
            if m.content or m.role != "assistant":
                self.add(t, _ROLE_KIND[m.role], span, text=m.content or "", tool_name=m.name,
                         is_error=m.role == "tool" and (m.is_error or looks_like_error(m.content)))
            for call in m.tool_calls:
                if call.id not in self.tool_ids or call.id is None:
                    self.add(t, "tool_call", span, tool_name=call.name, arguments=call.arguments,
                             text=call.arguments_raw)

    def span(self, s: Span) -> None:
        self.messages(s.start_ns, s, s.input_messages)
        if s.kind == "tool" and s.tool_call is not None:
            call = s.tool_call
            self.add(s.start_ns, "tool_call", s, tool_name=call.name, arguments=call.arguments,
                     text=call.arguments_raw)
            self.add(s.end_ns, "tool_result", s, tool_name=call.name, text=s.tool_result or "",
                     is_error=s.status == "error" or looks_like_error(s.tool_result))
        elif s.kind == "retrieval":
            self.add(s.end_ns, "retrieval", s, text=s.output_value or "")
        self.messages(s.end_ns, s, s.output_messages)
        if s.status == "error" and s.kind != "tool":
            self.add(s.end_ns, "error", s, text=s.status_message or f"{s.name} failed", is_error=True)

    def state(self, s: Span) -> None:
        """A ``state`` step when a chain/agent span's output is a JSON object that differs from the
        state before it (the last state seen in this unit, else the span's own input object)."""
        after = _json_object(s.output_value)
        if after is None:
            return
        before = self.last_state if self.last_state is not None else (_json_object(s.input_value) or {})
        text = state_diff(before, after)
        self.last_state = after
        if text:
            self.add(s.end_ns, "state", s, text=f"{s.name}: {text}")

    def build(self) -> list[Step]:
        for s in self.spans:
            self.span(s)
        for s in sorted((sp for sp in self.spans if sp.kind in ("chain", "agent")), key=lambda sp: sp.end_ns):
            self.state(s)
        self.events.sort(key=lambda e: (e[0], e[1]))
        seen: set[tuple[object, ...]] = set()
        steps: list[Step] = []
        for _, _, step in self.events:
            key = (step.kind, step.text, step.tool_name)
            if step.kind in ("system", "user", "assistant"):
                if key in seen:
                    continue
                seen.add(key)
            steps.append(step.model_copy(update={"index": len(steps) + 1}))
        return steps


def _json_object(text: str | None) -> dict[str, object] | None:
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def state_diff(before: dict[str, object], after: dict[str, object]) -> str:
    """What changed between two state objects, as one line: ``set k: old → new; added k: v;
    removed k`` (values cut at 200 characters); empty when nothing changed."""
    parts = [f"set {k}: {_short(before[k])} → {_short(v)}" for k, v in after.items() if k in before and before[k] != v]
    parts += [f"added {k}: {_short(v)}" for k, v in after.items() if k not in before]
    parts += [f"removed {k}" for k in before if k not in after]
    return "; ".join(parts)


def step_timeline(unit: Unit) -> list[Step]:
    """Return the unit's step timeline in time order (indices 1-based).

    Args:
        unit: any unit, from any reader.

    Returns:
        list of :class:`Step`; empty when the unit has no content.
    """
    return _Builder(unit.spans).build()


def render_timeline(steps: list[Step], max_chars: int | None = None, skip_system: bool = False) -> str:
    """Render steps as plain text, one block per step (the text a judge reads).

    Args:
        steps: a step timeline.
        max_chars: keep at most this many characters, dropping the *oldest* steps first
            (a marker says how many were dropped).
        skip_system: leave out system prompts (long policies).
    """
    blocks: list[str] = []
    for step in steps:
        if skip_system and step.kind == "system":
            continue
        label = step.kind.upper()
        if step.kind in ("tool_call", "tool_result"):
            label += f" {step.tool_name}"
        if step.is_error:
            label += " [ERROR]"
        blocks.append(f"[{step.index}] {label}: {step.text}")
    if max_chars is None:
        return "\n".join(blocks)
    kept: list[str] = []
    total = 0
    for block in reversed(blocks):
        if total + len(block) + 1 > max_chars and kept:
            break
        kept.append(block[-max_chars:])
        total += len(block) + 1
    dropped = len(blocks) - len(kept)
    head = [f"[... {dropped} earlier steps omitted ...]"] if dropped else []
    return "\n".join(head + list(reversed(kept)))
