"""File formats → one domain model: Langfuse exports (checked against Langfuse's own ChatML
oracle for all 20 frameworks), OpenAI / Anthropic chat-log JSONL, and the UTC timestamp rule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from assay._store import Store
from assay.traces import read_file, render_timeline, step_timeline
from assay.traces.model import Message, timestamp_ns

from .conftest import DATA

LANGFUSE = DATA / "langfuse-framework-traces" / "worker" / "src" / "__tests__" / "chatml" / "framework-traces"
TRACE_FILES = sorted(LANGFUSE.glob("*.trace.json"))
_ROLE = {"model": "assistant", "developer": "system"}


def _oracle_key(m: dict[str, Any], default: str) -> tuple[str, str, tuple[str, ...]]:
    content = m.get("content")
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", p.get("content", ""))) if isinstance(p, dict) else str(p)
                            for p in content)
    elif content is not None and not isinstance(content, str):
        content = json.dumps(content)
    role = m.get("role") or default
    calls = tuple(sorted(str(c.get("name") or (c.get("function") or {}).get("name"))
                         for c in m.get("tool_calls") or []))
    return _ROLE.get(role, role), (content or "").strip(), calls


def _our_key(m: Message) -> tuple[str, str, tuple[str, ...]]:
    return m.role, (m.content or "").strip(), tuple(sorted(c.name for c in m.tool_calls))


def _compare(trace_file: Path) -> tuple[int, int]:
    """(sides matching the oracle, sides the oracle parsed successfully) for one framework file."""
    oracle = json.loads(trace_file.with_name(trace_file.name.replace(".trace.", ".chatml.")).read_text())
    spans = {s.span_id: s for u in read_file(trace_file).units for s in u.spans}
    ok = total = 0
    for oid, sides in oracle.items():
        span = spans[oid]
        for side, expected in sides.items():
            if not expected.get("success"):
                continue
            total += 1
            got = span.input_messages if side == "input" else span.output_messages
            default = "user" if side == "input" else "assistant"
            ok += [_oracle_key(m, default) for m in expected["data"]] == [_our_key(m) for m in got]
    return ok, total


def test_twenty_frameworks_present() -> None:
    assert len(TRACE_FILES) == 20


@pytest.mark.parametrize("trace_file", TRACE_FILES, ids=lambda p: p.name.removesuffix(".trace.json"))
def test_langfuse_export_reads_whole(trace_file: Path) -> None:
    raw = json.loads(trace_file.read_text())
    result = read_file(trace_file)
    assert result.format == "langfuse" and not result.rejected
    assert len(result.units) == 1 and result.span_count == len(raw["observations"])
    unit = result.units[0]
    assert unit.attributes["langfuse_trace_id"] == raw["trace"]["id"]
    assert len(unit.attributes["langfuse_scores"]) == len(raw["trace"].get("scores") or [])
    generations = {o["id"] for o in raw["observations"] if o["type"] == "GENERATION"}
    assert {s.span_id for s in unit.spans if s.kind == "llm"} >= generations
    assert render_timeline(step_timeline(unit))


def test_langfuse_oracle_agreement_overall() -> None:
    """Pinned from a measured run: 75 of the 114 input/output sides Langfuse parses match exactly
    (role, text, tool-call names). Most of the rest are where Langfuse's adapter drops content we keep
    (e.g. Anthropic tool_use blocks, tool results under the user role)."""
    pairs = [_compare(f) for f in TRACE_FILES]
    ok, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    assert total == 114
    assert ok >= 75, f"{ok}/{total} sides match"


def test_langfuse_tool_call_and_usage() -> None:
    unit = read_file(LANGFUSE / "openai-agents-2025-09-30.trace.json").units[0]
    llm = next(s for s in unit.spans if s.span_id == "90d94774e8e3724d")
    assert [m.role for m in llm.input_messages] == ["user", "assistant", "tool"]
    call = llm.input_messages[1].tool_calls[0]
    assert (call.name, call.arguments, call.arguments_flag) == ("get_weather", {"city": "Tokyo"}, "json_string")
    assert llm.input_messages[2].tool_call_id == call.id
    assert llm.input_tokens is not None and llm.usage_source is not None
    no_usage = [s for s in unit.spans if s.kind != "llm"]
    assert no_usage and all(s.input_tokens is None and s.usage_source is None for s in no_usage)


# --- timestamps: one rule (UTC) ---------------------------------------------------------------
def test_timestamp_rule() -> None:
    z = timestamp_ns("2025-06-06T14:40:28.562Z")
    assert timestamp_ns("2025-06-06T16:40:28.562+02:00") == z
    assert timestamp_ns("2025-06-06T14:40:28.562") == z  # no offset: UTC, never local time
    assert timestamp_ns(1749220828.562) == z == timestamp_ns(1749220828562) == timestamp_ns(str(z))
    with pytest.raises(ValueError):
        timestamp_ns("yesterday")


def test_same_trace_with_different_offsets_is_one_trace(tmp_path: Path) -> None:
    raw = json.loads((LANGFUSE / "pydantic-ai-tools-2025-12-04.trace.json").read_text())
    first, second = dict(raw), dict(raw)
    half = len(raw["observations"]) // 2

    def shift(obs: dict[str, Any]) -> dict[str, Any]:  # same instants written as +02:00
        out = dict(obs)
        for key in ("startTime", "endTime"):
            if obs.get(key):
                ns = timestamp_ns(obs[key])
                local = datetime.fromtimestamp(ns // 10**9, timezone(timedelta(hours=2)))
                out[key] = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns % 10**9) // 10**6:03d}+02:00"
                assert out[key] != obs[key]
        return out

    first["observations"] = raw["observations"][:half]
    second["observations"] = [shift(o) for o in raw["observations"][half:]]
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    whole = read_file(LANGFUSE / "pydantic-ai-tools-2025-12-04.trace.json").units[0]
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    for name in ("a.json", "b.json"):
        store.add_units(read_file(tmp_path / name).units)
    assert store.select_unit_ids() == [whole.unit_id]
    stored = store.unit(whole.unit_id)
    assert sorted((s.span_id, s.start_ns, s.end_ns) for s in stored.spans) == \
        sorted((s.span_id, s.start_ns, s.end_ns) for s in whole.spans)


# --- chat logs ------------------------------------------------------------------------------------
OPENAI_LINES = [
    {"id": "conv-1", "created_at": "2025-03-01T09:00:00", "messages": [
        {"role": "system", "content": "You book flights."},
        {"role": "user", "content": "Book LHR→JFK on May 2"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search_flights",
                                                               "arguments": "{\"from\": \"LHR\", \"to\": \"JFK\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no flights on that date"},
        {"role": "assistant", "content": "Sorry, nothing on May 2."}]},
    {"messages": [{"role": "user", "content": "hi 👋"}, {"role": "assistant", "content": "hello"}]},
]


def test_openai_chat_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join([*(json.dumps(x, ensure_ascii=False) for x in OPENAI_LINES), "{broken"]) + "\n")
    result = read_file(path)
    assert result.format == "openai-chat" and len(result.units) == 2
    assert len(result.rejected) == 1 and result.rejected[0].reason.startswith("line 3:")
    unit = result.units[0]
    assert unit.unit_id == "openai-chat/conv-1"
    tool = next(s for s in unit.spans if s.kind == "tool")
    assert tool.tool_call is not None and tool.tool_call.arguments == {"from": "LHR", "to": "JFK"}
    assert tool.tool_call.arguments_flag == "json_string" and tool.status == "error"
    assert min(s.start_ns for s in unit.spans) == timestamp_ns("2025-03-01T09:00:00Z")
    steps = step_timeline(unit)
    assert [s.kind for s in steps] == ["system", "user", "tool_call", "tool_result", "assistant"]
    assert steps[3].is_error
    assert result.units[1].spans[0].synthetic_time


def test_anthropic_messages_jsonl(tmp_path: Path) -> None:
    line = {"system": "You are a shop assistant.", "messages": [
        {"role": "user", "content": "Refund order 42"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "tu_1", "name": "refund",
                                           "input": {"order": 42}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "is_error": True,
                                      "content": [{"type": "text", "text": "order not refundable"}]}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It cannot be refunded."}]}]}
    path = tmp_path / "claude.log"
    path.write_text(json.dumps(line) + "\n")
    result = read_file(path, "anthropic-messages")
    assert result.format == "anthropic-messages" and not result.rejected
    unit = result.units[0]
    tool = next(s for s in unit.spans if s.kind == "tool")
    assert tool.tool_call is not None and tool.tool_call.arguments == {"order": 42}
    assert tool.tool_call.arguments_flag == "object"
    assert tool.status == "error" and tool.tool_result == "order not refundable"
    steps = step_timeline(unit)
    assert [s.kind for s in steps] == ["system", "user", "assistant", "tool_call", "tool_result", "assistant"]
    assert steps[4].is_error and steps[0].text == "You are a shop assistant."
    auto = tmp_path / "claude.jsonl"
    auto.write_text(json.dumps(line) + "\n")
    assert read_file(auto).format == "anthropic-messages"


# --- multi-agent chat logs: every turn kept, with its speaker (issue 15, finding 7) ---------------------
MAGENTIC_LOG = DATA / "agentrx" / "data" / "magentic_dataset" / "08cae58d-4084-4616-b6dd-dd6534e4825b.json"


def test_a_group_chat_keeps_every_turn_and_its_speaker(tmp_path: Path) -> None:
    """A real Magentic-One run written as an OpenAI chat log, speakers in ``name``: one step per message."""
    raw = json.loads(MAGENTIC_LOG.read_text(encoding="utf-8"))
    speakers = [None if m["role"] == "human" else m["role"].split(" (")[0] for m in raw]
    chat = [{"role": "assistant" if m["role"].startswith("Orchestrator") else "user", "content": m["content"],
             **({"name": who} if who else {})} for m, who in zip(raw, speakers, strict=True)]
    path = tmp_path / "group.jsonl"
    path.write_text(json.dumps({"id": "group-1", "messages": chat}) + "\n")
    unit = read_file(path).units[0]
    steps = step_timeline(unit)
    assert len(raw) == 129 and len(steps) == 129  # repeated ledgers and consecutive turns are all kept
    assert [s.agent for s in steps] == speakers
    assert [s.text for s in steps] == [m["content"] for m in chat]
    assert len({s.span_id for s in steps}) == 129  # one span per turn
    text = render_timeline(steps)
    assert "USER (WebSurfer): " in text and "ASSISTANT (Orchestrator): " in text


def test_one_span_per_turn_keeps_the_records_usage_outcome_and_feedback(tmp_path: Path) -> None:
    """The logged usage goes on the span of the last assistant turn (the response it describes); the record's
    outcome and feedback reach the unit; every turn keeps its own span and speaker."""
    record = {"id": "turns-1", "model": "gpt-4o", "outcome": "fail",
              "feedback": {"thumbs": "down", "comment": "wrong city"},
              "usage": {"prompt_tokens": 30, "completion_tokens": 4},
              "messages": [{"role": "user", "name": "alice", "content": "Weather in Paris?"},
                           {"role": "assistant", "name": "planner", "content": "Let me check."},
                           {"role": "user", "name": "alice", "content": "Thanks."},
                           {"role": "assistant", "name": "planner", "content": "Sunny in Lyon."}]}
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (unit,) = read_file(path).units
    turns = [s for s in unit.spans if s.output_messages]
    assert [s.output_messages[0].content for s in turns] == [m["content"] for m in record["messages"]]
    assert [(s.kind, s.input_tokens, s.output_tokens, s.model) for s in turns if s.kind == "llm"] == [
        ("llm", None, None, None), ("llm", 30, 4, "gpt-4o")]
    assert unit.outcome == "fail"
    assert unit.attributes["user.feedback"] == "down" and unit.attributes["user.feedback.comment"] == "wrong city"
    assert [s.agent for s in step_timeline(unit)] == ["alice", "planner", "alice", "planner"]


def test_the_magentic_reader_keeps_repeated_orchestrator_turns() -> None:
    raw = json.loads(MAGENTIC_LOG.read_text(encoding="utf-8"))
    steps = step_timeline(read_file(MAGENTIC_LOG).units[0])
    said = [s for s in steps if s.kind == "assistant"]
    spoken = [m for m in raw if m["role"].startswith("Orchestrator (") and "->" not in m["role"]]
    assert len(said) == len(spoken) and len({s.text for s in said}) < len(said)  # some say the same twice
    assert all(s.agent == "Orchestrator" for s in said)


# --- JSON documents: one conversation (pretty-printed), a list of them, a bare message list ---------
def test_a_pretty_printed_conversation_is_one_unit_not_line_by_line_rejections(tmp_path: Path) -> None:
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(OPENAI_LINES[0], indent=2, ensure_ascii=False))
    assert len(path.read_text().splitlines()) > 30  # as a user's editor saves it
    result = read_file(path)
    assert result.rejected == [] and result.format == "openai-chat"
    (unit,) = result.units
    lines = tmp_path / "conversation.jsonl"
    lines.write_text(json.dumps(OPENAI_LINES[0], ensure_ascii=False) + "\n")
    (same,) = read_file(lines).units
    assert unit.unit_id == same.unit_id == "openai-chat/conv-1"
    assert [s.kind for s in step_timeline(unit)] == [s.kind for s in step_timeline(same)]
    named = read_file(path, "openai-chat")  # a named format reads the document whole too
    assert named.rejected == [] and [u.unit_id for u in named.units] == [unit.unit_id]
    in_jsonl = tmp_path / "pretty.jsonl"  # even when the file name says JSON Lines
    in_jsonl.write_text(json.dumps(OPENAI_LINES[0], indent=2, ensure_ascii=False))
    assert read_file(in_jsonl).rejected == [] and len(read_file(in_jsonl).units) == 1


def test_a_list_of_conversations_and_a_bad_item_rejected_alone(tmp_path: Path) -> None:
    anthropic = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant",
                 "content": [{"type": "text", "text": "Hey"}]}]}
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([*OPENAI_LINES, {"no": "messages"}, anthropic], indent=1, ensure_ascii=False))
    result = read_file(path)
    assert [u.attributes["format"] for u in result.units] == ["openai-chat", "openai-chat", "anthropic-messages"]
    assert result.format == "chat-jsonl"
    assert [r.reason[:9] for r in result.rejected] == ["record 2:"]
    again = read_file(path)  # ids are stable across reads (content hash when the record has no id)
    assert [u.unit_id for u in again.units] == [u.unit_id for u in result.units]
    compact = tmp_path / "one-line.json"
    compact.write_text(json.dumps(OPENAI_LINES, ensure_ascii=False))
    assert [u.unit_id for u in read_file(compact).units][:1] == ["openai-chat/conv-1"]


def test_a_bare_list_of_messages_is_one_conversation(tmp_path: Path) -> None:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(OPENAI_LINES[0]["messages"], indent=2, ensure_ascii=False))
    result = read_file(path)
    (unit,) = result.units
    assert result.format == "openai-chat" and not result.rejected
    assert [s.kind for s in step_timeline(unit)] == ["system", "user", "tool_call", "tool_result", "assistant"]


def test_a_list_of_langfuse_exports(tmp_path: Path) -> None:
    exports = [json.loads(f.read_text()) for f in TRACE_FILES[:3]]
    path = tmp_path / "langfuse.json"
    path.write_text(json.dumps(exports))
    result = read_file(path)
    assert result.format == "langfuse" and not result.rejected
    assert len(result.units) == sum(len(read_file(f).units) for f in TRACE_FILES[:3])
