"""Reader for Magentic-One run logs (the AgentRx ``magentic_dataset`` / Who&When hand-crafted logs).

A log is a JSON list of ``{"role": str, "content": str}`` messages, one run per file. Roles:
``human`` (the task), ``Orchestrator (thought)`` (plans and progress ledgers),
``Orchestrator (-> Agent)`` (a request to a sub-agent), ``Agent`` (its reply; agents are
``WebSurfer``, ``FileSurfer``, ``Assistant``, ``ComputerTerminal``) and
``Orchestrator (termination condition)`` (why the run stopped, with ``FINAL ANSWER: ...``).

One run = one unit (a single trace). The orchestrator is the agent and its sub-agents are
its tools: a request and the sub-agent's next reply become one tool span (call name = the
sub-agent, ``arguments = {"request": text}``, result = the reply); orchestrator thoughts and
the termination message become LLM spans with an assistant message named ``Orchestrator``.
A reply that reads as a failure (a traceback, ``Error processing publish message``, an
agent reporting that it ``encountered an error``, a page that did not load
(``chrome-error://``), a non-zero exit code) gets error status and a one-line status message.

The logs carry no timestamps: message ``i`` (1-based, the AgentRx ``step_number``) is at
``i`` ms and spans are marked ``synthetic_time``; every span keeps ``magentic.step`` (the
1-based message position) and ``magentic.role``. Lines the Python runtime interleaved into
the log (``...py:116: UserWarning: ...`` and the source line after it, ``SCENARIO.PY
COMPLETE !#!#``) are removed from message text. The logs record no outcome: units are
``unknown`` unless the caller knows better.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from assay.traces.model import Message, Span, ToolCall, Unit
from assay.traces.shapes import describe_error

_MS = 1_000_000
_REQUEST = re.compile(r"^Orchestrator \(-> (?P<agent>[^)]+)\)$")
_ORCHESTRATOR = "Orchestrator"
_WARNING_LINE = re.compile(r"^\S+\.py:\d+: \w*Warning: .*$")
_HARNESS_LINE = re.compile(r"^(SCENARIO\.PY|RUN\.SH) COMPLETE !#!#\s*$")
_FINAL = re.compile(r"FINAL ANSWER:\s*(?P<answer>.*)")
_EXIT = re.compile(r"exit(?:ed with Unix)? code(?: was)?:\s*(?P<code>-?\d+)", re.IGNORECASE)
_ERROR_HINTS = (
    re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE),
    re.compile(r"^Error processing publish message", re.MULTILINE),
    re.compile(r"encountered an error[^\n]*", re.IGNORECASE),
    re.compile(r"^Error\. [^\n]*", re.MULTILINE),
    re.compile(r"chrome-error://"),
    re.compile(r"^No code block detected[^\n]*", re.MULTILINE),
)


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def clean_content(text: str) -> str:
    """Remove runtime warning lines (and the indented source line after each) and harness
    markers from a message; strip surrounding whitespace."""
    out: list[str] = []
    skip_source = False
    for line in text.splitlines():
        if skip_source and line.startswith((" ", "\t")):
            skip_source = False
            continue
        skip_source = bool(_WARNING_LINE.match(line))
        if skip_source or _HARNESS_LINE.match(line):
            continue
        out.append(line)
    return "\n".join(out).strip()


def error_message(text: str) -> str | None:
    """The one-line error a sub-agent reply reports, or None when it reads as a success.

    A traceback gives its exception line (``ExceptionType: message``, the first unindented
    line after the last traceback header); a non-zero exit code gives
    ``exit code N``; the other hints (see module docstring) give the matching line.
    """
    exit_code = _EXIT.search(text)
    if exit_code and int(exit_code.group("code")) != 0:
        return f"exit code {exit_code.group('code')}"
    tracebacks = list(_ERROR_HINTS[0].finditer(text))
    if tracebacks:
        after = text[tracebacks[-1].end():].splitlines()
        line = next((x.strip() for x in after if x.strip() and not x[:1].isspace()), "traceback")
        return line[:200]
    for hint in _ERROR_HINTS[1:]:
        found = hint.search(text)
        if found:
            return "page failed to load (chrome-error)" if "chrome-error" in found.group(0) else found.group(0)[:200]
    return None


def looks_like_magentic(data: object) -> bool:
    """True when parsed JSON is a list of ``{role, content}`` messages with an Orchestrator role."""
    if not isinstance(data, list) or not data:
        return False
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in data):
        return False
    return any(str(m["role"]).startswith(_ORCHESTRATOR) for m in data)


def _reply_index(messages: list[dict[str, Any]], request: int, agent: str) -> int | None:
    """Index of the sub-agent's reply to the request at ``request``: the next message that is
    not an orchestrator thought, when it comes from ``agent``."""
    for j in range(request + 1, len(messages)):
        role = str(messages[j]["role"])
        if role == f"{_ORCHESTRATOR} (thought)":
            continue
        return j if role == agent else None
    return None


class _RunBuilder:
    """Builds the spans of one run, message by message."""

    def __init__(self, unit_id: str, messages: list[dict[str, Any]]) -> None:
        self.unit_id = unit_id
        self.messages = messages
        self.trace_id = _hex(unit_id, 32)
        self.root_id = _hex(unit_id + "#root", 16)
        self.spans: list[Span] = []
        self.pending: list[Message] = []
        self.replies: set[int] = set()

    def _span(self, i: int, name: str, **fields: Any) -> Span:
        role = str(self.messages[i]["role"])
        return Span(trace_id=self.trace_id, span_id=_hex(f"{self.unit_id}#{i}", 16), parent_span_id=self.root_id,
                    name=name, synthetic_time=True, attributes={"magentic.step": i + 1, "magentic.role": role},
                    **fields)

    def _say(self, i: int, name: str, text: str) -> None:
        t = (i + 1) * _MS
        self.spans.append(self._span(i, name, kind="llm", start_ns=t - _MS // 2, end_ns=t,
                                     input_messages=tuple(self.pending),
                                     output_messages=(Message(role="assistant", content=text, name=name),)))
        self.pending = []

    def _request(self, i: int, agent: str, text: str) -> None:
        j = _reply_index(self.messages, i, agent)
        reply = clean_content(str(self.messages[j]["content"])) if j is not None else None
        if j is not None:
            self.replies.add(j)
        error = error_message(reply) if reply is not None else None
        call = ToolCall(id=f"step-{i + 1}", name=agent, arguments={"request": text},
                        arguments_raw=json.dumps({"request": text}, ensure_ascii=False), arguments_flag="object")
        self.spans.append(self._span(i, f"execute_tool {agent}", kind="tool", start_ns=(i + 1) * _MS,
                                     end_ns=((j if j is not None else i) + 1) * _MS + 1, tool_call=call,
                                     tool_result=reply, status="error" if error else "ok",
                                     status_message=error))

    def build(self) -> list[Span]:
        for i, raw in enumerate(self.messages):
            role, text = str(raw["role"]), clean_content(str(raw["content"]))
            request = _REQUEST.match(role)
            if i in self.replies:
                continue
            if role == "human":
                self.pending.append(Message(role="user", content=text))
            elif request:
                self._request(i, request.group("agent"), text)
            elif role.startswith(_ORCHESTRATOR):
                self._say(i, _ORCHESTRATOR, text)
            else:  # a sub-agent speaking without a request
                self._say(i, role, text)
        return self.spans


def run_to_unit(messages: list[dict[str, Any]], run_id: str, source: str) -> Unit:
    """Convert one Magentic-One log (the parsed JSON list) into a :class:`Unit`.

    Args:
        messages: the ``{role, content}`` list.
        run_id: the run's id (the AgentRx ``trajectory_id``: the file name without ``.json``).
        source: recorded on the unit, e.g. ``magentic-one:<file name>``.

    Returns:
        a unit ``magentic-one/<run_id>`` with outcome ``unknown``; attributes ``question``,
        ``final_answer`` and ``termination`` (None when absent) and ``steps`` (message count).

    Raises:
        ValueError: an empty log or a message without ``role``/``content``.
    """
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise ValueError("a Magentic-One log is a non-empty list of {role, content} messages")
    unit_id = f"magentic-one/{run_id}"
    builder = _RunBuilder(unit_id, messages)
    spans = builder.build()
    question = next((clean_content(str(m["content"])) for m in messages if m["role"] == "human"), None)
    ending = next((clean_content(str(m["content"])) for m in reversed(messages)
                   if m["role"] == f"{_ORCHESTRATOR} (termination condition)"), None)
    final = _FINAL.search(ending or "")
    termination = (ending or "").splitlines()[0].strip() if ending else None
    root = Span(trace_id=builder.trace_id, span_id=builder.root_id, name="magentic-one run", kind="agent",
                start_ns=0, end_ns=(len(messages) + 1) * _MS, synthetic_time=True,
                attributes={"magentic.run_id": run_id, "magentic.termination": termination})
    return Unit(unit_id=unit_id, kind="trace", source=source, spans=(root, *spans),
                attributes={"question": question, "final_answer": final.group("answer").strip() if final else None,
                            "termination": termination, "steps": len(messages)})


def read_runs(data: object, run_id: str, source: str) -> Iterator[tuple[Unit | None, str | None]]:
    """Yield ``(unit, None)`` for a readable log and ``(None, reason)`` for a rejected one."""
    try:
        yield run_to_unit(data, run_id, source), None  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a bad log is rejected with a reason, never a traceback
        yield None, f"{run_id}: {describe_error(exc)}"
