"""The Magentic-One log reader on the real AgentRx / Who&When logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.exceptions import IngestError
from assay.signatures import structural_key
from assay.traces import detect_format, read_file, step_timeline
from assay.traces.magentic import clean_content, error_message, looks_like_magentic

MAGENTIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agentrx" / "data" / "magentic_dataset"
APPLE = MAGENTIC / "08cae58d-4084-4616-b6dd-dd6534e4825b.json"  # 129 messages, ends at max rounds
FILTERED = MAGENTIC / "56137764-b4e0-45b8-9c52-1866420c3df5.json"  # WebSurfer hits a content filter


def _raw(path: Path) -> list[dict[str, str]]:
    data: list[dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_every_log_reads_and_is_detected() -> None:
    files = sorted(p for p in MAGENTIC.glob("*.json") if p.name != "steps_by_id.json")
    assert len(files) == 58
    for path in files:
        result = read_file(path)
        assert (result.format, len(result.units), result.rejected) == ("magentic-one", 1, [])
        assert result.units[0].unit_id == f"magentic-one/{path.stem}"
    assert not looks_like_magentic(json.loads((MAGENTIC / "steps_by_id.json").read_text()))
    # a plain list of chat messages is not Magentic-One: it is one OpenAI chat conversation
    assert detect_format([{"role": "user", "content": "hi"}]) == "openai-chat"
    with pytest.raises(IngestError, match="unknown format"):
        detect_format([{"role": "narrator", "content": "hi"}])


def test_requests_and_replies_become_tool_spans() -> None:
    raw = _raw(APPLE)
    unit = read_file(APPLE).units[0]
    root, *spans = unit.spans
    assert root.kind == "agent" and root.parent_span_id is None
    requests = [i for i, m in enumerate(raw) if m["role"].startswith("Orchestrator (->")]
    tools = [s for s in spans if s.kind == "tool"]
    assert [s.attributes["magentic.step"] for s in tools] == [i + 1 for i in requests]
    for span in tools:
        i = span.attributes["magentic.step"] - 1
        agent = raw[i]["role"].removeprefix("Orchestrator (-> ").removesuffix(")")
        assert span.tool_call is not None and span.tool_call.name == agent
        assert span.tool_call.arguments == {"request": clean_content(raw[i]["content"])}
        reply = next((m for m in raw[i + 1:] if m["role"] != "Orchestrator (thought)"), None)
        assert (span.tool_result is not None) == (reply is not None and reply["role"] == agent)
    # every message is in exactly one place: a user input, a request (+ its reply), or an LLM span
    users = sum(1 for s in spans for m in s.input_messages if m.role == "user")
    assert users + sum(1 + (s.tool_result is not None) for s in tools) + \
        sum(1 for s in spans if s.kind == "llm") == len(raw)
    assert unit.attributes["question"].startswith("According to Google Finance")
    assert (unit.attributes["termination"], unit.attributes["final_answer"]) == ("Max rounds (30) reached.", "2007")
    assert unit.outcome == "unknown" and all(s.synthetic_time for s in unit.spans)


def test_timeline_reads_in_message_order_without_runtime_noise() -> None:
    steps = step_timeline(read_file(APPLE).units[0])
    assert steps[0].kind == "user" and steps[0].text.startswith("According to Google Finance")
    assert [s.index for s in steps] == list(range(1, len(steps) + 1))
    assert [s.time_ns for s in steps] == sorted(s.time_ns for s in steps)
    assert not any("UserWarning" in s.text or "SCENARIO.PY COMPLETE" in s.text for s in steps)
    assert steps[-1].kind == "assistant" and "FINAL ANSWER: 2007" in steps[-1].text


def test_a_failing_sub_agent_gives_an_error_span_and_key() -> None:
    unit = read_file(FILTERED).units[0]
    errors = [s for s in unit.spans if s.status == "error"]
    assert errors and all(s.kind == "tool" for s in errors)
    assert errors[-1].status_message is not None
    assert errors[-1].status_message.startswith("openai.BadRequestError: Error code: 400")
    key = structural_key(unit)
    assert key.tool == "WebSurfer"
    assert key.error == "openai.badrequesterror: error code: <NUM> - error: inner_error: code: " \
                        "responsibleaipolicyviolation"


@pytest.mark.parametrize(("text", "message"), [
    ("The script ran, then exited with Unix exit code: 1\nIts output was:\nboom", "exit code 1"),
    ("The script ran, then exited with Unix exit code: 0\nIts output was:\n42", None),
    ("Nothing to summarize.\nError processing publish message\nTraceback (most recent call last):\n"
     "  File \"x.py\", line 1\n    f()\nhttpx.ReadTimeout: timed out\n", "httpx.ReadTimeout: timed out"),
    ("Address: file:///workspace/a.mp3\n### Audio Transcript:\nError. Could not transcribe this audio.",
     "Error. Could not transcribe this audio."),
    ("I clicked 'Ensembl'.\nHere is a screenshot of [x](chrome-error://chromewebdata/).",
     "page failed to load (chrome-error)"),
    ("I typed 'apple stock' into the search box.", None),
])
def test_error_message_of_sub_agent_replies(text: str, message: str | None) -> None:
    assert error_message(text) == message


def test_clean_content_drops_runtime_warnings_only() -> None:
    text = ("Plan:\n- search\n/usr/lib/python3.11/site-packages/x/orchestrator.py:216: UserWarning: model mismatch\n"
            "  ledger = await create(\n  - indented plan item stays\nFINAL ANSWER: 7\nSCENARIO.PY COMPLETE !#!#")
    assert clean_content(text) == "Plan:\n- search\n  - indented plan item stays\nFINAL ANSWER: 7"


def test_bad_logs_are_rejected_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"role": "Orchestrator (thought)"}]), encoding="utf-8")
    result = read_file(path, fmt="magentic-one")
    assert result.units == [] and len(result.rejected) == 1
    assert "bad: a Magentic-One log is a non-empty list" in result.rejected[0].reason
