"""Explicit user feedback through the real app (``httpx.ASGITransport``) on a real SQLite store: the REST
endpoint before and after its trace, OTLP span attributes, span events and log records, late sessions,
malformed bodies (400 with the reason, nothing stored) and unknown ids (kept pending with the reason)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from assay._store import Store
from assay._web.app import create_app
from assay._web.auth import create_api_key
from assay.signals import list_signals
from assay.signals.feedback import list_feedback, parse_value
from tests.ui_fixtures import settings_for

T0 = 1_700_000_000_000_000_000


def tid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def sid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": str(v)}
    return [{"key": k, "value": value(v)} for k, v in d.items()]


def trace_spans(key: str, extra: dict[str, Any] | None = None, session: str | None = None,
                events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A support conversation as OTLP JSON: a root and one chat span; no error anywhere."""
    root: dict[str, Any] = {"traceId": tid(key), "spanId": sid(key + "root"), "name": "invoke_agent support",
                            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10_000),
                            "attributes": attrs({**(extra or {}), **({"session.id": session} if session else {})}),
                            "events": events or []}
    chat = {"traceId": tid(key), "spanId": sid(key + "chat"), "parentSpanId": sid(key + "root"), "name": "chat",
            "startTimeUnixNano": str(T0 + 1000), "endTimeUnixNano": str(T0 + 2000),
            "attributes": attrs({"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "My parcel is late, can I get a refund?"}]}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                    {"type": "text", "content": "Our default refund policy does not cover this."}]}])})}
    return [root, chat]


class App:
    def __init__(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path)
        self.store = Store(settings.store_url, settings.signals)
        self.key = create_api_key(self.store, owner="support-app")
        self.app = create_app(settings, self.store)
        self.auth = {"Authorization": f"Bearer {self.key}"}

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
                content = raw if raw is not None else json.dumps(body).encode() if body is not None else None
                return await c.request(method, path, content=content, headers={
                    "content-type": "application/json", **(self.auth if headers is None else headers)})

        return asyncio.run(go())

    def feedback(self, body: Any) -> httpx.Response:
        return self.request("POST", "/api/v1/feedback", body)

    def traces(self, *traces: list[dict[str, Any]]) -> None:
        spans = [sp for t in traces for sp in t]
        r = self.request("POST", "/v1/traces", {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]})
        assert r.status_code == 200 and "rejected" not in r.text, r.text

    def logs(self, records: list[dict[str, Any]]) -> None:
        body = {"resourceLogs": [{"resource": {}, "scopeLogs": [{"logRecords": records}]}]}
        r = self.request("POST", "/v1/logs", body)
        assert r.status_code == 200 and "rejected" not in r.text, r.text


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path)
    yield a
    a.store.close()
    gc.unfreeze()


def test_feedback_before_its_trace_is_kept_and_attached_when_it_arrives(app: App) -> None:
    unit = f"trace/{tid('late')}"
    r = app.feedback({"trace_id": tid("late"), "thumbs": "down", "comment": "refused my refund for a delay"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["unit_id"] is None and body["signal"] is None
    assert body["reason"] == f"no stored trace {tid('late')!r} yet: kept pending, attached when it arrives"
    assert [f.status for f in list_feedback(app.store)] == ["pending"]
    assert app.store.select_unit_ids("failed") == []

    app.traces(trace_spans("late"))  # minutes later, the trace arrives through the OTLP receiver
    [record] = list_feedback(app.store)
    assert record.status == "attached" and record.attached_to == unit and record.sender == "support-app"
    [signal] = list_signals(app.store, unit_id=unit)
    assert (signal.kind, signal.source, signal.strength) == ("thumbs_down", "feedback", 0.7)
    assert signal.evidence == "thumbs down (POST /api/v1/feedback): refused my refund for a delay"
    assert signal.lineage.model_dump() == {"type": "feedback", "channel": "api", "sender": "support-app"}
    assert record.signal_key == signal.key
    assert app.store.select_unit_ids("failed") == [unit]  # no outcome, no error: failed by the thumbs-down
    got = app.request("GET", f"/api/v1/units/{unit}").json()
    assert got["failed"] and got["failure_score"] == 0.7 and [s["kind"] for s in got["signals"]] == ["thumbs_down"]


def test_feedback_after_its_trace_by_trace_session_and_unit(app: App) -> None:
    app.traces(trace_spans("a"), trace_spans("b", session="conv-7"))
    r = app.feedback({"trace_id": tid("a").upper(), "score": 0.1, "time": "2026-01-05T10:00:00Z"})
    assert r.status_code == 201 and r.json()["signal"]["kind"] == "low_feedback_score", r.text
    assert r.json()["signal"]["time_ns"] == 1_767_607_200_000_000_000
    again = app.feedback({"trace_id": tid("a"), "score": 0.1, "time": "2026-01-05T10:00:00Z"})
    assert again.status_code == 200 and again.json()["duplicate"]  # the same feedback is stored once
    r = app.feedback({"session_id": "conv-7", "thumbs": "up"})
    assert r.status_code == 201 and r.json()["unit_id"] == "session/conv-7" and r.json()["signal"] is None
    assert r.json()["reason"] == "not negative: no failure signal"
    r = app.feedback({"unit_id": "session/conv-7", "thumbs": "down"})
    assert r.status_code == 201 and r.json()["signal"]["unit_id"] == "session/conv-7"
    assert len(list_feedback(app.store)) == 3
    assert app.store.select_unit_ids("failed") == ["session/conv-7", f"trace/{tid('a')}"]


def test_feedback_in_spans_events_and_log_records(app: App) -> None:
    app.logs([{"traceId": tid("logged"), "spanId": sid("logged" + "root"), "timeUnixNano": str(T0 + 50_000),
               "eventName": "user_feedback",
               "attributes": attrs({"user.feedback.score": 0.0, "user.feedback.comment": "useless"})}])
    [pending] = list_feedback(app.store)
    assert pending.status == "pending" and pending.channel == "otel_event"  # its trace is not stored yet
    app.traces(trace_spans("logged"),
               trace_spans("attr", extra={"user_feedback.score": 0.2}),
               trace_spans("event", events=[{"name": "feedback", "timeUnixNano": str(T0 + 9000),
                                             "attributes": attrs({"thumbs": "down", "comment": "wrong policy"})}]),
               trace_spans("happy", extra={"user.feedback.thumbs": "up"}),
               trace_spans("oi", extra={"annotations.0.annotation.name": "user_feedback",
                                        "annotations.0.annotation.score": 0.0}))
    by_unit = {s.unit_id.removeprefix("trace/"): s for s in list_signals(app.store, source="feedback")}
    assert set(by_unit) == {tid("logged"), tid("attr"), tid("event"), tid("oi")}
    assert by_unit[tid("logged")].evidence == \
        "feedback score 0 (log record 'user_feedback' user.feedback.score): useless"
    assert by_unit[tid("attr")].kind == "low_feedback_score"
    assert by_unit[tid("attr")].lineage.channel == "otel_attribute"
    assert by_unit[tid("event")].kind == "thumbs_down" and "wrong policy" in by_unit[tid("event")].evidence
    assert by_unit[tid("oi")].lineage.channel == "openinference"
    assert {f.status for f in list_feedback(app.store)} == {"attached"} and len(list_feedback(app.store)) == 5
    app.traces(trace_spans("attr", extra={"user_feedback.score": 0.2}))  # an exporter's retry: nothing twice
    assert len(list_feedback(app.store)) == 5 and len(list_signals(app.store, source="feedback")) == 4


def test_pending_feedback_for_a_session_attaches_when_it_arrives(app: App) -> None:
    assert app.feedback({"session_id": "conv-9", "thumbs": "down"}).status_code == 202
    app.traces(trace_spans("t1", session="conv-9"))
    assert [s.unit_id for s in list_signals(app.store)] == ["session/conv-9"]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{nope", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'{"thumbs": "down"}', "give exactly one of trace_id, session_id, unit_id (got none)"),
    (b'{"trace_id": "' + b"a" * 32 + b'", "unit_id": "u", "thumbs": "down"}',
     "give exactly one of trace_id, session_id, unit_id (got trace_id, unit_id)"),
    (b'{"unit_id": "u"}', "give exactly one of thumbs ('up' or 'down') and score"),
    (b'{"unit_id": "u", "thumbs": "down", "score": 0.1}', "give exactly one of thumbs"),
    (b'{"unit_id": "u", "score": 1.5}', "score must be a number in [0, 1], got 1.5"),
    (b'{"unit_id": "u", "score": "0.2"}', "score must be a number in [0, 1], got '0.2'"),
    (b'{"unit_id": "u", "score": true}', "score must be a number in [0, 1], got True"),
    (b'{"unit_id": "u", "thumbs": "sideways"}', "thumbs must be 'up' or 'down' (or true / false, -1 / +1), got "
                                                "'sideways'"),
    (b'{"unit_id": "u", "thumbs": 0.3}', "thumbs must be 'up' or 'down'"),
    (b'{"trace_id": "xyz", "thumbs": "down"}', "trace_id: String should match pattern"),
    (b'{"unit_id": "u", "thumbs": "down", "rating": 5}', "rating: Extra inputs are not permitted"),
    (b'{"unit_id": "u", "thumbs": "down", "time": "yesterday"}', "time: "),
])
def test_malformed_feedback_is_a_400_with_the_reason(app: App, raw: bytes, reason: str) -> None:
    r = app.request("POST", "/api/v1/feedback", raw=raw)
    assert r.status_code == 400, r.text
    assert reason in r.json()["detail"]
    assert list_feedback(app.store) == []


def test_feedback_needs_an_api_key_and_unknown_ids_stay_pending(app: App) -> None:
    r = app.request("POST", "/api/v1/feedback", {"unit_id": "u", "thumbs": "down"}, headers={})
    assert r.status_code == 401 and list_feedback(app.store) == []
    r = app.feedback({"unit_id": "no-such-unit", "thumbs": "down"})
    assert r.status_code == 202 and "no stored unit 'no-such-unit' yet" in r.json()["reason"]
    listed = app.request("GET", "/api/v1/feedback").json()
    assert [(f["status"], f["unit_id"], f["thumbs"]) for f in listed] == [("pending", "no-such-unit", "down")]


def test_feedback_values() -> None:
    assert parse_value(True) == ("up", None) and parse_value("👎") == ("down", None)
    assert parse_value(-1) == ("down", None) and parse_value(False) == ("down", None)
    assert parse_value("0.25") is None and parse_value(0) == (None, 0.0)  # a number as text is no score
    assert parse_value(4) is None and parse_value("meh") is None and parse_value(None) is None


def _otel(k: str, v: Any) -> dict[str, Any]:
    """An OTLP/JSON attribute with the value type an SDK sends (``intValue`` for an int)."""
    kind = "boolValue" if isinstance(v, bool) else "intValue" if isinstance(v, int) else \
        "doubleValue" if isinstance(v, float) else "stringValue"
    return {"key": k, "value": {kind: str(v) if kind == "intValue" else v}}


def _record(key: str, name: str, value: Any) -> dict[str, Any]:
    return {"timeUnixNano": str(T0), "traceId": tid(key), "spanId": sid(key), "attributes": [_otel(name, value)]}


def test_bad_feedback_in_log_records_is_rejected_with_the_reason(app: App) -> None:
    """A user's batch (``/tmp/adopt2-app/app/logs_fb2.py``): three values no channel reads are rejected in OTLP
    partial success with the reason each, the good records of the same batch are kept."""
    records = [_record("high", "user.feedback.score", "high"), _record("minus", "user.feedback.thumbs", -1),
               _record("seven", "user.feedback.score", 7), _record("meh", "user.feedback.thumbs", "meh"),
               _record("good", "user.feedback.score", 0.1)]
    r = app.request("POST", "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "3"  # an int64 in OTLP/JSON
    message = partial["errorMessage"]
    for key, reason in [("high", "user.feedback.score: score must be a number in [0, 1], got 'high'"),
                        ("seven", "user.feedback.score: score must be a number in [0, 1], got 7"),
                        ("meh", "user.feedback.thumbs: thumbs must be 'up' or 'down' (or true / false, -1 / +1), "
                                "got 'meh'")]:
        assert f"log record (traceId {tid(key)}, spanId {sid(key)}) rejected: {reason}" in message
    kept = {(f.trace_id, f.thumbs, f.score, f.status) for f in list_feedback(app.store)}
    assert kept == {(tid("minus"), "down", None, "pending"), (tid("good"), None, 0.1, "pending")}
    ok = app.request("POST", "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": records[1:2]}]}]})
    assert ok.status_code == 200 and ok.json() == {}  # nothing rejected: no partialSuccess


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("thumbs", -1, None), ("thumbs", True, None), ("thumbs", 1, None), ("thumbs", "👎", None),
    ("score", 0.2, None), ("score", 1, None),
    ("score", "0.2", "score must be a number in [0, 1], got '0.2'"),
    ("score", 7, "score must be a number in [0, 1], got 7"),
    ("score", True, "score must be a number in [0, 1], got True"),
    ("thumbs", "meh", "thumbs must be 'up' or 'down' (or true / false, -1 / +1), got 'meh'"),
    ("thumbs", 0.3, "thumbs must be 'up' or 'down' (or true / false, -1 / +1), got 0.3"),
])
def test_one_feedback_parser_for_every_channel(app: App, tmp_path: Path, field: str, value: Any,
                                               reason: str | None) -> None:
    """The REST API, OTel log records and a chat-log record's ``feedback`` read ``thumbs`` / ``score`` alike:
    what one accepts the others accept, what one rejects the others reject with the same text."""
    from assay.traces.readers import read_file

    api = app.feedback({"trace_id": tid("rest"), field: value})
    logs = app.request("POST", "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        _record("otel", f"user.feedback.{field}", value)]}]}]}).json()
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": "c", "messages": [{"role": "user", "content": "hi"}],
                                "feedback": {field: value}}) + "\n")
    read = read_file(path)
    if reason is None:
        assert api.status_code == 202, api.text
        assert logs == {} and len(list_feedback(app.store)) == 2
        assert not read.rejected and len(read.units) == 1
        expect = (api.json()["reason"], {f.trace_id: (f.thumbs, f.score) for f in list_feedback(app.store)})
        assert expect[1][tid("rest")] == expect[1][tid("otel")]
        return
    assert api.status_code == 400 and api.json()["detail"] == reason
    assert logs["partialSuccess"]["errorMessage"].endswith(f"user.feedback.{field}: {reason}")
    assert [r.reason for r in read.rejected] == [f"line 1: feedback.{field}: {reason}"] and not read.units
    assert list_feedback(app.store) == []


def test_a_span_with_a_bad_feedback_value_keeps_its_trace_and_the_answer_warns(app: App) -> None:
    spans = trace_spans("bad-attr", extra={"user.feedback.score": "high"})
    r = app.request("POST", "/v1/traces", {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]})
    assert r.status_code == 200 and "rejectedSpans" not in r.text, r.text
    assert r.json()["partialSuccess"]["errorMessage"] == \
        "feedback not read: user.feedback.score: score must be a number in [0, 1], got 'high'"
    assert app.store.unit(f"trace/{tid('bad-attr')}") is not None and list_feedback(app.store) == []
