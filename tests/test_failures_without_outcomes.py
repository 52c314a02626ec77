"""The issue's 126 group-chat runs in miniature: chat logs with no error and no outcome, where the user is
frustrated, asks for a person or complains last, become failed units through their signals; a chat-log
record's optional ``outcome`` and ``feedback`` fields; ``assay signals`` and ``assay signals update``
through the real command line on a real workspace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay.settings import load_settings
from assay.signals import list_signals
from assay.traces import read_file

runner = CliRunner()
CALM = [("user", "Can you change my delivery address to 5 Elm Street?"),
        ("assistant", "Done: your parcel now goes to 5 Elm Street."), ("user", "Great, thanks!"),
        ("assistant", "You're welcome.")]
ANGRY = [("user", "My parcel is two weeks late."),
         ("assistant", "I'm sorry. Our default refund policy does not cover this order."),
         ("user", "This is ridiculous. I want to talk to a human agent now."),
         ("assistant", "I understand. Is there anything else I can help with?")]
IGNORED = [("user", "I need a refund for the late delivery."),
           ("assistant", "Your order is eligible for store credit under our default policy."),
           ("user", "That's not what I asked. I already told you it was late, I want my money back.")]


def record(n: int, turns: list[tuple[str, str]], **fields: Any) -> str:
    return json.dumps({"id": f"conv-{n}", "messages": [{"role": r, "content": c} for r, c in turns], **fields})


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout


def _chat_logs(tmp_path: Path) -> Path:
    path = tmp_path / "groupchat.jsonl"
    lines = [record(n, CALM) for n in range(6)] + [record(n, ANGRY) for n in range(6, 10)] + \
        [record(n, IGNORED) for n in range(10, 13)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_chat_logs_without_outcome_or_error_yield_failed_units(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    logs = _chat_logs(tmp_path)
    code, out = _run(ws, "ingest", str(logs), "--no-signals")  # as before signals existed
    assert code == 0, out
    store = Store(load_settings(ws).resolved_store_url())
    assert store.select_unit_ids("failed") == []  # "0 failed units": nothing recorded a failure
    assert all(u.outcome == "unknown" and not u.has_error for u in store.units(store.select_unit_ids()))

    code, out = _run(ws, "signals", "update", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["scanned"] == 13 and summary["failed"] == 7
    failed = store.select_unit_ids("failed")
    assert failed == sorted(f"openai-chat/conv-{n}" for n in range(6, 13))
    angry = {s.kind for s in list_signals(store, unit_id="openai-chat/conv-6")}
    assert angry >= {"user_frustration", "escalation"}
    ignored = {s.kind for s in list_signals(store, unit_id="openai-chat/conv-10")}
    assert "unanswered_complaint" in ignored
    assert list_signals(store, unit_id="openai-chat/conv-0") == []

    code, out = _run(ws, "signals", "--json")
    counts = {c["kind"]: c["units"] for c in json.loads(out)["counts"]}
    assert code == 0 and counts["user_frustration"] == 4 and counts["unanswered_complaint"] == 3
    code, out = _run(ws, "signals", "--unit", "openai-chat/conv-10", "--json")
    listed = {s["kind"]: s for s in json.loads(out)}
    assert code == 0 and "That's not what I asked" in listed["unanswered_complaint"]["evidence"]
    assert listed["unanswered_complaint"]["step"] == 3 and len(listed["unanswered_complaint"]["key"]) == 32
    store.close()


def test_ingest_detects_signals_as_it_reads(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    code, out = _run(ws, "ingest", str(_chat_logs(tmp_path)))
    assert code == 0 and "signals:" in out, out
    store = Store(load_settings(ws).resolved_store_url())
    assert len(store.select_unit_ids("failed")) == 7
    code, out = _run(ws, "signals", "update", "--json")
    assert json.loads(out)["scanned"] == 0  # nothing missing
    store.close()


def test_chat_log_outcome_and_feedback_fields(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    anthropic = {"id": "a-1", "system": "You are a support agent.", "outcome": "pass",
                 "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}]}
    path.write_text("\n".join([
        record(1, CALM, outcome="fail"),
        record(2, CALM, feedback="down"),
        record(3, CALM, feedback={"score": 0.2, "comment": "slow and wrong"}, outcome=True),
        record(4, CALM, feedback="thumbs_up"),
        json.dumps(anthropic),
        record(5, CALM, outcome="maybe"),
        record(6, CALM, feedback={"stars": 4}),
    ]) + "\n")
    read = read_file(path)
    by_id = {u.unit_id: u for u in read.units}
    assert by_id["openai-chat/conv-1"].outcome == "fail" and by_id["openai-chat/conv-3"].outcome == "pass"
    assert by_id["anthropic-messages/a-1"].outcome == "pass"
    assert by_id["openai-chat/conv-3"].attributes["user.feedback.comment"] == "slow and wrong"
    reasons = [r.reason for r in read.rejected]
    assert len(reasons) == 2 and "outcome must be pass, fail" in reasons[0] and "feedback must be" in reasons[1]

    ws = tmp_path / "ws"
    code, out = _run(ws, "ingest", str(path))
    assert code == 0, out
    store = Store(load_settings(ws).resolved_store_url())
    kinds = {s.unit_id: s.kind for s in list_signals(store) if s.source in ("feedback", "outcome")}
    assert kinds == {"openai-chat/conv-1": "outcome_fail", "openai-chat/conv-2": "thumbs_down",
                     "openai-chat/conv-3": "low_feedback_score"}
    [low] = list_signals(store, unit_id="openai-chat/conv-3")
    assert low.evidence == "feedback score 0.2 (record user.feedback): slow and wrong"
    assert low.lineage.model_dump() == {"type": "feedback", "channel": "record", "sender": None}
    assert store.select_unit_ids("failed") == ["openai-chat/conv-1", "openai-chat/conv-2", "openai-chat/conv-3"]
    store.close()
