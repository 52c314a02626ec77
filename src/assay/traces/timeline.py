"""Flatten a unit into its step timeline: what an expert or a judge reads.

Each span contributes the messages it saw at its start (input) and produced at its end
(output); tool spans contribute a call and its result. Chat spans repeat the history in
their input, so a message already shown is not shown again.

Every span that carries content becomes a step: an LLM span with only ``input.value`` /
``output.value`` (no message attributes) gets its messages from those (normalised by
:func:`assay.traces.chat_formats.chat_messages`; ``text/*`` mime types stay one text message); other
spans (chain, agent, retriever, reranker, embedding, guardrail, generic) give an ``input`` step and an
``output`` step, except where their value is a state transition (a JSON object in and out: a ``state``
step), a retrieval's documents (a ``retrieval`` step) or the same text as a message already shown.
Embedding vectors are summarised, never printed.

Media (images, audio, files) are parts of their step (``Step.media``) with their reference, never its
text: :func:`render_timeline` writes a ``[image: reference]`` marker where one occurred, and
:func:`media_note` tells a text-only judge what it cannot see.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from assay.traces.chat_formats import chat_messages
from assay.traces.media import extract_media
from assay.traces.model import Message, Role, Span, SpanEvent, Step, StepKind, ToolCall, Unit

_ERROR_RE = re.compile(r"^\s*(error|exception|traceback|failed)\b", re.IGNORECASE)


def looks_like_error(text: str | None) -> bool:
    """True when a tool result reads as an error: ``Error: ...``, a traceback, or ``{"error": ...}``."""
    if not text:
        return False
    if _ERROR_RE.match(text):
        return True
    stripped = text.lstrip()
    if stripped.startswith("{") and '"error"' in stripped:
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


MessageKey = tuple[object, object, object, object]
_AGENT_KEYS = ("gen_ai.agent.name", "agent.name")


class _Repeats:
    """Which message steps repeat one already shown (module docstring of :func:`step_timeline`).

    A message is a repeat when a *related* span (itself, an ancestor or a descendant) showed the same one
    (a framework passes one message down its span tree), or when it is on the input side of a span whose
    input replays the history (it holds an earlier assistant turn, or two messages shown before): there
    each message counts once per time it was shown, so a turn said twice stays twice. Transcripts (chat
    logs, tau-bench, Magentic-One) replay nothing: their repeated turns are all shown.
    """

    def __init__(self, spans: list[Span], input_keys: dict[str, list[MessageKey]]) -> None:
        self.parent = {s.span_id: s.parent_span_id for s in spans}
        self.history = {s.span_id for s in spans if any(m.role == "assistant" for m in s.input_messages)}
        self.input_keys = input_keys
        self.shown: dict[MessageKey, list[str]] = defaultdict(list)
        self.replays: dict[str, bool] = {}
        self.local: Counter[tuple[str, MessageKey]] = Counter()
        self._ancestors: dict[str, set[str]] = {}

    def ancestors(self, span_id: str) -> set[str]:
        if span_id not in self._ancestors:
            out: set[str] = set()
            current = span_id
            while (current := self.parent.get(current) or "") and current not in out:
                out.add(current)
            self._ancestors[span_id] = out
        return self._ancestors[span_id]

    def related(self, a: str, b: str) -> bool:
        return a == b or a in self.ancestors(b) or b in self.ancestors(a)

    def replay(self, span_id: str) -> bool:
        """Whether the span's input replays history: it holds an assistant turn, or two messages shown before."""
        if span_id not in self.replays:
            keys = self.input_keys[span_id]
            self.replays[span_id] = span_id in self.history or sum(k in self.shown for k in keys) >= 2
        return self.replays[span_id]

    def show(self, key: MessageKey, span_id: str, is_input: bool) -> bool:
        """Whether to show this message step (and remember it when shown)."""
        if is_input and self.replay(span_id):
            self.local[(span_id, key)] += 1
            if self.local[(span_id, key)] <= len(self.shown[key]):
                return False
        elif any(self.related(span_id, other) for other in self.shown[key]):
            return False
        self.shown[key].append(span_id)
        return True

    def show_tool(self, key: MessageKey, span_id: str, is_input: bool) -> bool:
        """Whether to show a tool call or result step: one on the input side of a span that replays the
        history counts once per time shown (a chat span's history repeats the calls its model made and
        their results); any other is shown."""
        if is_input and self.replay(span_id):
            return self.show(key, span_id, True)
        self.shown[key].append(span_id)
        return True


def _span_messages(s: Span) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
    """A span's input and output messages; an LLM span without message attributes gets them from its
    ``input.value`` / ``output.value`` (:func:`value_messages`)."""
    inputs, outputs = s.input_messages, s.output_messages
    if s.kind == "llm":
        inputs = inputs or tuple(value_messages(s.input_value, _mime(s, "input"), "user"))
        outputs = outputs or tuple(value_messages(s.output_value, _mime(s, "output"), "assistant"))
    return inputs, outputs


CallRef = tuple[str, int, int]
"""A tool call a span's output requested: (span id, message index, call index)."""


def _arguments_agree(a: ToolCall, b: ToolCall) -> bool:
    """Whether two calls' arguments can be the same: equal parsed objects, equal unparsed texts, or one
    side that did not record (or parse) them."""
    if not a.arguments_raw or not b.arguments_raw:
        return True
    if a.arguments is not None and b.arguments is not None:
        return a.arguments == b.arguments
    if a.arguments is None and b.arguments is None:
        return a.arguments_raw.strip() == b.arguments_raw.strip()
    return True


def _same_call(request: ToolCall, executed: ToolCall) -> bool:
    """Whether a tool span may have executed a requested call: the same id when both carry one, else the
    same tool name with arguments that agree (:func:`_arguments_agree`)."""
    if request.id and executed.id:
        return request.id == executed.id
    return request.name == executed.name and _arguments_agree(request, executed)


def executed_requests(spans: list[Span], io: dict[str, tuple[tuple[Message, ...], tuple[Message, ...]]]
                      ) -> dict[CallRef, tuple[ToolCall, str]]:
    """``{requested call: (that call, the id of the tool span that executed it)}``.

    A model's requested call (an output message's tool call: OpenInference ``llm.output_messages.*.
    tool_calls``, GenAI ``tool_call`` parts) and the tool span that ran it (OpenInference ``TOOL``, GenAI
    ``execute_tool``) are one call. A tool span executes the requested call of the same trace that matches it
    (:func:`_same_call`), started no later than the tool span and not yet taken; of several, the first
    requested (parallel calls of one tool run in the order asked).
    ``spans`` are in time order; ``io`` holds each span's input and output messages.
    """
    waiting: dict[str, list[tuple[CallRef, Span, ToolCall]]] = defaultdict(list)  # by tool name, in order
    for s in spans:
        for i, m in enumerate(io[s.span_id][1]):
            for k, call in enumerate(m.tool_calls):
                waiting[call.name].append(((s.span_id, i, k), s, call))
    out: dict[CallRef, tuple[ToolCall, str]] = {}
    for tool in spans:
        if tool.kind != "tool" or tool.tool_call is None:
            continue
        asked = waiting.get(tool.tool_call.name, [])
        n = next((n for n, (_, s, call) in enumerate(asked) if s.trace_id == tool.trace_id and s.span_id != tool.span_id
                  and s.start_ns <= tool.start_ns and _same_call(call, tool.tool_call)), None)
        if n is not None:
            ref, _, call = asked.pop(n)
            out[ref] = (call, tool.span_id)
    return out


class _Builder:
    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
        self.io = {s.span_id: _span_messages(s) for s in self.spans}
        self.executed = executed_requests(self.spans, self.io)
        self.request_of = {tool_span: call for call, tool_span in self.executed.values()}
        self.tool_ids = {s.tool_call.id for s in self.spans if s.tool_call and s.tool_call.id}
        self.tool_ids |= {call.id for call in self.request_of.values() if call.id}
        self.events: list[tuple[int, int, StepKind, str, dict[str, object]]] = []
        self.seq = 0
        self.last_state: dict[str, object] | None = None
        self.inputs: set[int] = set()
        self.input_keys: dict[str, list[MessageKey]] = defaultdict(list)
        self.agents = _agents(self.spans)

    def add(self, t: int, kind: StepKind, span: Span, **fields: object) -> None:
        self.seq += 1
        agent = fields.pop("agent", None) or self.agents.get(span.span_id)
        if agent:
            fields["agent"] = agent
        text = fields.get("text")
        if kind != "tool_call" and isinstance(text, str) and ("base64," in text or "@@@langfuseMedia:" in text):
            fields["text"], found = extract_media(text)  # a tool result, a value: media out of the text
            fields["media"] = (*fields.get("media", ()), *found)  # type: ignore[misc]
        self.events.append((t, self.seq, kind, span.span_id, fields))

    def messages(self, t: int, span: Span, messages: Iterable[Message], is_input: bool = False,
                 extra: dict[str, object] | None = None) -> None:
        extra = extra or {}
        for i, m in enumerate(messages):
            if m.role == "tool" and m.tool_call_id in self.tool_ids:
                continue
            if m.content or m.media or m.role != "assistant":
                self.add(t, _ROLE_KIND[m.role], span, text=m.content or "", tool_name=m.name, agent=m.name,
                         is_error=m.role == "tool" and (m.is_error or looks_like_error(m.content)),
                         **({"media": m.media} if m.media else {}), **extra)
                if is_input:
                    self.inputs.add(self.seq)
                    self.input_keys[span.span_id].append(_key(_ROLE_KIND[m.role], m.content or "", m.name, m.media))
            for k, call in enumerate(m.tool_calls):
                if (call.id is None or call.id not in self.tool_ids) and (
                        is_input or (span.span_id, i, k) not in self.executed):  # else its tool span shows it
                    self.add(t, "tool_call", span, tool_name=call.name, arguments=call.arguments,
                             text=call.arguments_raw, agent=m.name, **extra)
                    if is_input:
                        self.inputs.add(self.seq)

    def span(self, s: Span) -> None:
        inputs, outputs = self.io[s.span_id]
        self.messages(s.start_ns, s, inputs, is_input=True)
        running = s.end_ns <= 0 and not s.synthetic_time
        end = s.start_ns if running else s.end_ns
        extra: dict[str, object] = {"in_progress": True} if running else {}
        if s.kind == "tool" and s.tool_call is not None:
            call = s.tool_call
            request = self.request_of.get(s.span_id)
            said = request if request is not None and not call.arguments_raw else call  # arguments not recorded
            self.add(s.start_ns, "tool_call", s, tool_name=call.name, arguments=said.arguments,
                     text=said.arguments_raw)
            result = s.tool_result or ("(no result yet: the tool span has not ended)" if running else "")
            self.add(end, "tool_result", s, tool_name=call.name, text=result,
                     is_error=s.status == "error" or looks_like_error(s.tool_result), **extra, **_failure(s))
        elif s.kind == "retrieval":
            self.add(end, "retrieval", s, text=s.output_value or "", **extra)
        self.messages(end, s, outputs, extra=extra)
        if s.kind not in ("llm", "tool"):
            self.values(s, end, extra)
        if s.status == "error" and s.kind != "tool":
            failure = _failure(s)
            self.add(end, "error", s, text=str(failure.get("error") or f"{s.name} failed"), is_error=True, **failure)

    def values(self, s: Span, end: int, extra: dict[str, object]) -> None:
        """``input`` / ``output`` steps of a span that is no LLM call or tool (module docstring)."""
        state = _state_object(s, "output") is not None
        if s.input_value and not s.input_messages and not (state and _state_object(s, "input") is not None):
            self.add(s.start_ns, "input", s, text=_value_text(s, s.input_value), span_name=s.name,
                     mime_type=_mime(s, "input"))
        if s.output_value and not s.output_messages and not state and s.kind != "retrieval":
            self.add(end, "output", s, text=_value_text(s, s.output_value), span_name=s.name,
                     mime_type=_mime(s, "output"), **extra)

    def state(self, t: int, s: Span, label: str, after: dict[str, object], before: dict[str, object] | None,
              update: bool = False) -> None:
        """A ``state`` step when ``after`` differs from the state before it (the last state seen in
        this unit, else ``before``); an ``update`` is a partial state merged into the last one."""
        prior = self.last_state if self.last_state is not None else (before or {})
        if update:
            after = {**prior, **after}
        text = state_diff(prior, after)
        self.last_state = after
        if text:
            self.add(t, "state", s, text=f"{label}: {text}")

    def states(self) -> None:
        """State transitions in time order: chain/agent span outputs (at the span's end) and span
        events carrying state (at the event's time)."""
        found: list[tuple[int, int, Span, str, dict[str, object], dict[str, object] | None, bool]] = []
        for s in self.spans:
            if s.kind in ("chain", "agent"):
                after = _state_object(s, "output")
                if after is not None:
                    found.append((s.end_ns, len(found), s, s.name, after, _state_object(s, "input"), False))
            for ev in s.events:
                state = event_state(ev)
                if state is not None:
                    label = str(ev.attributes.get("langgraph.node") or ev.attributes.get("node") or s.name)
                    found.append((ev.time_ns or s.end_ns, len(found), s, label, state[0], None, state[1]))
        for t, _, s, label, after, before, update in sorted(found, key=lambda f: (f[0], f[1])):
            self.state(t, s, label, after, before, update)

    def build(self) -> list[Step]:
        for s in self.spans:
            self.span(s)
        self.states()
        self.events.sort(key=lambda e: (e[0], e[1]))
        repeats = _Repeats(self.spans, self.input_keys)
        steps: list[Step] = []
        said = {str(f.get("text", "")).strip() for _, _, k, _, f in self.events
                if k in ("system", "user", "assistant", "tool_result")}
        for t, seq, kind, span_id, fields in self.events:
            if kind in ("input", "output"):  # nested spans pass one value along: show it once
                text = str(fields.get("text", "")).strip()
                if text in said:
                    continue
                said.add(text)
            if kind in ("system", "user", "assistant") and not repeats.show(
                    _key(kind, fields.get("text", ""), fields.get("tool_name"), fields.get("media", ())), span_id,
                    seq in self.inputs):
                continue
            if kind in ("tool_call", "tool_result") and not repeats.show_tool(_tool_key(kind, fields), span_id,
                                                                             seq in self.inputs):
                continue
            # fields come from validated spans: construct without validating again (deep dict copies)
            values = {**_STEP_DEFAULTS, **fields, "index": len(steps) + 1, "kind": kind, "span_id": span_id,
                      "time_ns": t}
            steps.append(Step.model_construct(**values))  # type: ignore[arg-type]
        return steps


_STEP_DEFAULTS: dict[str, object] = {name: f.get_default(call_default_factory=True)
                                     for name, f in Step.model_fields.items() if not f.is_required()}
"""Every optional field of :class:`Step` with its default: ``model_construct`` then looks none up per step."""


def _key(kind: object, text: object, name: object, media: object) -> MessageKey:
    """What makes two message steps the same: kind, text, speaker, its media's references."""
    return kind, text, name, tuple(m.reference for m in media) if media and isinstance(media, tuple) else ()


def _tool_key(kind: StepKind, fields: dict[str, object]) -> MessageKey:
    """What makes two tool call steps the same (tool and arguments) or two tool results (their text)."""
    if kind == "tool_result":
        return kind, str(fields.get("text") or "").strip(), None, ()
    args = fields.get("arguments")
    said = json.dumps(args, sort_keys=True, default=str) if args is not None else str(fields.get("text") or "")
    return kind, fields.get("tool_name"), said.strip(), ()


def span_error(span: Span) -> tuple[str | None, str | None]:
    """What a failed span says about its failure: ``(error, stack trace)``.

    The error joins the status message and each ``exception`` event's ``exception.type: exception.message``
    (OTel semantic conventions for exceptions), without repeating one inside another; the stack trace is
    the first exception event's ``exception.stacktrace``. ``(None, None)`` when the span did not fail.
    """
    if span.status != "error":
        return None, None
    parts = [span.status_message] if span.status_message else []
    stack = None
    for ev in span.events:
        if ev.name != "exception":
            continue
        kind, message = ev.attributes.get("exception.type"), ev.attributes.get("exception.message")
        line = f"{kind}: {message}" if kind and message else str(kind or message or "")
        if line and not any(line in p or p in line for p in parts):
            parts.append(line)
        stack = stack or (str(ev.attributes["exception.stacktrace"]) if ev.attributes.get("exception.stacktrace")
                          else None)
    return "; ".join(parts) or None, stack


def _failure(span: Span) -> dict[str, object]:
    error, stack = span_error(span)
    return {k: v for k, v in (("error", error), ("stacktrace", stack)) if v}


def _agents(spans: list[Span]) -> dict[str, str]:
    """``{span id: agent name}``: the span's own ``gen_ai.agent.name`` / ``agent.name``, else its nearest
    ancestor's."""
    by_id = {s.span_id: s for s in spans}
    out: dict[str, str] = {}
    for s in spans:
        _agent_of(s.span_id, by_id, out)
    return out


def _agent_of(span_id: str, by_id: dict[str, Span], out: dict[str, str]) -> None:
    """Put the agent of ``span_id`` (and of the ancestors walked to find it) into ``out``; at most 200
    ancestors up, so a parent cycle ends. A loop, not a recursive closure: a closure that calls itself is
    a reference cycle holding the unit's spans until the cyclic collector runs."""
    path: list[str] = []
    found: str | None = None
    current: str | None = span_id
    while current is not None and len(path) <= 200:
        if current in out:
            found = out[current]
            break
        span = by_id.get(current)
        if span is None:
            break
        found = next((str(span.attributes[k]) for k in _AGENT_KEYS if span.attributes.get(k)), None)
        path.append(current)
        if found:
            break
        current = span.parent_span_id or None
    if found:
        out.update(dict.fromkeys(path, found))


def _mime(span: Span, side: str) -> str | None:
    value = span.attributes.get(f"{side}.mime_type")
    return str(value) if value else None


def value_messages(value: str | None, mime_type: str | None, role: Role) -> list[Message]:
    """Messages of an LLM span's ``input.value`` / ``output.value``: one text message of ``role`` when
    the mime type is ``text/*``, else whatever :func:`~assay.traces.chat_formats.chat_messages` reads
    (a request's ``messages``, a response's ``choices``, plain text)."""
    if not value:
        return []
    if mime_type and mime_type.startswith("text/"):
        return [Message(role=role, content=value)]
    return chat_messages(value, role)


def _state_object(span: Span, side: str) -> dict[str, object] | None:
    """The JSON object a chain / agent span's input or output value holds (a state), unless its mime type
    says it is text."""
    mime = _mime(span, side)
    if mime and mime.startswith("text/"):
        return None
    return _json_object(span.input_value if side == "input" else span.output_value)


def _value_text(span: Span, text: str) -> str:
    """``text`` as a step shows it: an embedding's vectors summarised (never thousands of numbers)."""
    if span.kind != "embedding" or not text.lstrip().startswith("["):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    vectors = value if value and all(isinstance(v, list) for v in value) else [value]
    if all(isinstance(x, int | float) for v in vectors for x in v):
        return f"(embedding: {len(vectors)} vector(s) of {len(vectors[0]) if vectors else 0} numbers)"
    return text


def _json_object(text: str | None) -> dict[str, object] | None:
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


_STATE_EVENTS = frozenset({"state", "state.update", "state_update", "state.snapshot", "langgraph.state",
                           "langgraph.state.update", "graph.state", "agent.state"})
_STATE_KEYS = ("langgraph.state", "state", "state.value", "graph.state", "agent.state")
_STATE_PREFIXES = ("langgraph.state.", "state.")
_STATE_META = frozenset({"langgraph.node", "node", "langgraph.step", "step", "event.name"})


def _as_object(value: object) -> dict[str, object] | None:
    if isinstance(value, dict):
        return value
    return _json_object(value) if isinstance(value, str) else None


def event_state(event: SpanEvent) -> tuple[dict[str, object], bool] | None:
    """The state a span event carries, and whether it is a partial update; None when it carries none.

    Recognised: an attribute ``langgraph.state`` / ``state`` / ``state.value`` holding a JSON object
    (or a key-value list); attributes ``state.KEY`` / ``langgraph.state.KEY`` (one state key each);
    or an event named ``state``, ``state.update``, ``langgraph.state`` ... whose other attributes are
    the state (or whose log body is). An event whose name mentions ``update`` (or with
    ``state.kind = update``) is merged into the previous state; others are full snapshots.
    """
    attrs = event.attributes
    name = event.name.lower()
    update = "update" in name or "delta" in name or str(attrs.get("state.kind", "")).lower() in ("update", "delta")
    for key in _STATE_KEYS:
        obj = _as_object(attrs.get(key))
        if obj is not None:
            return obj, update
    prefixed = {k[len(p):]: v for k, v in attrs.items() for p in _STATE_PREFIXES
                if k.startswith(p) and k != "state.kind"}
    if prefixed:
        return prefixed, update
    if name in _STATE_EVENTS:
        body = _as_object(event.body)
        if body is not None:
            return body, update
        rest = {k: v for k, v in attrs.items() if k not in _STATE_META and k != "state.kind"}
        return (rest, update) if rest else None
    return None


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


def media_note(steps: list[Step]) -> str:
    """A line telling a text-only judge that the run held media it cannot see, or "" when it held none."""
    counts = Counter(m.kind for s in steps for m in s.media)
    if not counts:
        return ""
    what = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(counts.items()))
    return (f"[This run contains media you cannot see (only text reaches you): {what}; each is marked "
            f"[kind: reference] where it occurred.]")


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
        elif step.kind in ("input", "output") and step.span_name:
            label += f" {step.span_name}"
        if step.agent and not (step.kind in ("tool_call", "tool_result") and step.agent == step.tool_name):
            label += f" ({step.agent})"
        if step.is_error:
            label += " [ERROR]"
        if step.in_progress:
            label += " [IN PROGRESS]"
        text = step.text
        if step.error and step.error not in text:
            text = f"{text}\nError: {step.error}" if text else f"Error: {step.error}"
        if step.media:
            text = " ".join([text, *(m.marker for m in step.media)]) if text else " ".join(m.marker for m in step.media)
        blocks.append(f"[{step.index}] {label}: {text}")
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
