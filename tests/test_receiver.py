"""The OTLP/HTTP receiver, in process (httpx.ASGITransport): encodings, partial success, limits,
auth, and the bad-input rules of trace capture."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from assay._store import Store
from assay._web.app import create_app
from assay.settings import ServerSettings, Settings
from assay.traces import render_timeline, step_timeline
from assay.traces.model import Span

T0 = 1_760_000_000_000_000_000
PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json; charset=utf-8"}


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=_kvs(v)))
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def _kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in attrs.items()]


def pb_span(trace: int, span: int, parent: int | None = None, *, name: str = "chat gpt-4o", start: int = T0,
            end: int | None = None, attrs: dict[str, Any] | None = None,
            events: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
            raw_span_id: bytes | None = None) -> PbSpan:
    sp = PbSpan(trace_id=bytes.fromhex(tid(trace)), span_id=raw_span_id if raw_span_id is not None
                else bytes.fromhex(sid(span)), name=name, start_time_unix_nano=start,
                end_time_unix_nano=end if end is not None else start + 1_000_000, attributes=_kvs(attrs or {}))
    if parent is not None:
        sp.parent_span_id = bytes.fromhex(sid(parent))
    for i, (ev_name, ev_attrs) in enumerate(events):
        sp.events.add(name=ev_name, time_unix_nano=start + i, attributes=_kvs(ev_attrs))
    return sp


def pb_body(*spans: PbSpan) -> bytes:
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])])
    return req.SerializeToString()


def json_body(spans: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                          "scopeSpans": [{"spans": spans}]}]}).encode()


def json_span(trace: int, span: int, attrs: dict[str, str], *, name: str = "chat gpt-4o",
              trace_id: str | None = None) -> dict[str, Any]:
    return {"traceId": tid(trace) if trace_id is None else trace_id, "spanId": sid(span), "name": name,
            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 5),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}


class Server:
    """The app over a real SQLite store, driven in process."""

    def __init__(self, tmp_path: Path, **server: Any) -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
        self.app = create_app(Settings(server=ServerSettings(**server)), self.store)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://assay") as client:
                return await client.post(path, content=body, headers=headers)

        return asyncio.run(go())

    def span(self, trace: int, span: int) -> Span:
        unit = self.store.unit(f"trace/{tid(trace)}")
        return next(s for s in unit.spans if s.span_id == sid(span))


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def pb_response(r: httpx.Response) -> ExportTraceServiceResponse:
    assert r.status_code == 200, r.content
    assert r.headers["content-type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    return resp


# --- encodings ------------------------------------------------------------------------------
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant",
                                                "parts": [{"type": "text", "content": "Hello!"}]}]),
        "gen_ai.usage.input_tokens": 7}


def test_protobuf_and_json_give_the_same_span(tmp_path: Path) -> None:
    a, b = Server(tmp_path / "a"), Server(tmp_path / "b")
    resp = pb_response(a.post("/v1/traces", pb_body(pb_span(1, 1, attrs=CHAT, end=T0 + 5)), PB))
    assert not resp.HasField("partial_success")
    attrs = {**CHAT, "gen_ai.usage.input_tokens": None}
    js = json_span(1, 1, {k: v for k, v in attrs.items() if isinstance(v, str)})
    js["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}})
    r = b.post("/v1/traces", gzip.compress(json_body([js])), {**JS, "content-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}
    span_pb, span_js = a.span(1, 1), b.span(1, 1)
    assert span_pb == span_js
    assert [m.role for m in span_pb.output_messages] == ["assistant"]
    assert (span_pb.provider, span_pb.input_tokens, span_pb.output_tokens) == ("openai", 7, None)


def test_one_bad_span_of_fifty_is_rejected_with_its_reason(server: Server) -> None:
    spans = [pb_span(1, i + 1, attrs=CHAT) for i in range(50)]
    spans[17] = pb_span(1, 18, attrs=CHAT, raw_span_id=b"\x01\x02\x03")
    resp = pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    assert resp.partial_success.rejected_spans == 1
    assert "span #17" in resp.partial_success.error_message and "010203" in resp.partial_success.error_message
    assert len(server.store.unit(f"trace/{tid(1)}").spans) == 49


def test_empty_trace_id_rejected_in_json(server: Server) -> None:
    spans = [json_span(2, i + 1, {"gen_ai.operation.name": "chat"}) for i in range(50)]
    spans[3]["traceId"] = ""
    r = server.post("/v1/traces", json_body(spans), JS)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "span #3" in r.json()["partialSuccess"]["errorMessage"]
    assert len(server.store.unit(f"trace/{tid(2)}").spans) == 49


def test_all_zero_ids_are_invalid(server: Server) -> None:
    resp = pb_response(server.post("/v1/traces", pb_body(pb_span(0, 1), pb_span(3, 1)), PB))
    assert resp.partial_success.rejected_spans == 1 and "all zeros" in resp.partial_success.error_message


def test_body_cap_gives_413_with_reason(tmp_path: Path) -> None:
    srv = Server(tmp_path, max_body_bytes=2_000)
    big = pb_body(*[pb_span(1, i + 1, attrs=CHAT) for i in range(20)])
    r = srv.post("/v1/traces", big, PB)
    assert r.status_code == 413 and r.headers["content-type"] == "application/x-protobuf"
    assert b"max_body_bytes" in r.content
    bomb = gzip.compress(b" " * 100_000)
    r = srv.post("/v1/traces", bomb, {**JS, "content-encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["message"]
    assert srv.post("/v1/traces", pb_body(pb_span(1, 1)), PB).status_code == 200


def test_api_key_required_when_configured(tmp_path: Path) -> None:
    srv = Server(tmp_path, api_key="s3cret")
    body = pb_body(pb_span(1, 1))
    assert srv.post("/v1/traces", body, PB).status_code == 401
    assert srv.post("/v1/traces", body, {**PB, "authorization": "Bearer wrong"}).status_code == 401
    r = srv.post("/v1/logs", b"{}", JS)
    assert r.status_code == 401 and "API key" in r.json()["message"]
    assert srv.post("/v1/traces", body, {**PB, "authorization": "Bearer s3cret"}).status_code == 200
    assert srv.post("/v1/traces", body, {**PB, "x-api-key": "s3cret"}).status_code == 200


def test_keys_from_assay_keys_create_are_accepted(tmp_path: Path) -> None:
    from assay._web.auth import create_api_key

    srv = Server(tmp_path)
    body = pb_body(pb_span(1, 1))
    assert srv.post("/v1/traces", body, PB).status_code == 200  # no key anywhere: open
    key = create_api_key(srv.store, owner="ingest")
    assert srv.post("/v1/traces", body, PB).status_code == 401  # a stored key now guards it
    assert srv.post("/v1/traces", body, {**PB, "authorization": "Bearer nope"}).status_code == 401
    assert srv.post("/v1/traces", body, {**PB, "authorization": f"Bearer {key}"}).status_code == 200
    assert srv.post("/v1/traces", body, {**PB, "x-api-key": key}).status_code == 200


def test_undecodable_bodies_and_other_types(server: Server) -> None:
    assert server.post("/v1/traces", b"\xff\xff\xff", PB).status_code == 400
    assert server.post("/v1/traces", b"{nope", JS).status_code == 400
    assert server.post("/v1/traces", b"x", {"content-type": "text/plain"}).status_code == 415
    assert server.post("/v1/traces", b"x", {**PB, "content-encoding": "gzip"}).status_code == 400


# --- parents, orphans, clock skew --------------------------------------------------------------
def test_orphan_kept_as_root_and_flagged(server: Server) -> None:
    pb_response(server.post("/v1/traces", pb_body(pb_span(4, 1, attrs=CHAT), pb_span(4, 2, parent=99, attrs=CHAT)),
                            PB))
    assert "orphan" in server.span(4, 2).flags
    assert "orphan" not in server.span(4, 1).flags
    assert step_timeline(server.store.unit(f"trace/{tid(4)}"))


def test_child_before_parent_is_linked_when_parent_arrives(server: Server) -> None:
    pb_response(server.post("/v1/traces", pb_body(pb_span(5, 2, parent=1, start=T0 + 10, name="step")), PB))
    assert "orphan" in server.span(5, 2).flags
    pb_response(server.post("/v1/traces", pb_body(pb_span(5, 1, start=T0, name="agent")), PB))
    child = server.span(5, 2)
    assert child.flags == () and child.parent_span_id == sid(1)
    assert len(server.store.unit(f"trace/{tid(5)}").spans) == 2


def test_clock_skew_accepted_with_warning(server: Server) -> None:
    parent, child = pb_span(6, 1, start=T0, name="agent"), pb_span(6, 2, parent=1, start=T0 - 3_000_000, name="step")
    resp = pb_response(server.post("/v1/traces", pb_body(parent, child), PB))
    assert resp.partial_success.rejected_spans == 0
    assert "clock skew" in resp.partial_success.error_message and "3.000 ms" in resp.partial_success.error_message
    stored = server.span(6, 2)
    assert stored.start_ns == T0 - 3_000_000 and stored.flags == ("clock_skew",)


# --- text -----------------------------------------------------------------------------------
def test_lone_surrogate_replaced_and_flagged_emoji_round_trip(server: Server) -> None:
    family = "👩‍👩‍👧‍👦 ok 🏳️‍🌈"
    body = json_body([json_span(7, 1, {"input.value": "cut \ud83d", "output.value": family},
                                name="agent")]).replace(b"\\\\ud83d", b"\\ud83d")
    body = body.replace(b"cut \\\\", b"cut \\")
    assert b'"cut \\ud83d"' in body
    assert server.post("/v1/traces", body, JS).status_code == 200
    span = server.span(7, 1)
    assert span.input_value == "cut \ufffd" and "lone_surrogate_replaced" in span.flags
    assert span.output_value == family
    pb_response(server.post("/v1/traces", pb_body(pb_span(7, 2, attrs={"output.value": family})), PB))
    assert server.span(7, 2).output_value == family and server.span(7, 2).flags == ()


# --- tool arguments, message sides, events, logs --------------------------------------------------
@pytest.mark.parametrize(("args", "flag", "parsed"), [
    ({"city": "Paris"}, "object", {"city": "Paris"}),
    ('{"city": "Paris"}', "json_string", {"city": "Paris"}),
    (json.dumps('{"city": "Paris"}'), "json_string_twice", {"city": "Paris"}),
    ('{"city": "Par', "invalid_json", None),
])
def test_tool_arguments_four_ways(server: Server, args: Any, flag: str, parsed: Any) -> None:
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather",
             "gen_ai.tool.call.id": "c1", "gen_ai.tool.call.arguments": args, "gen_ai.tool.call.result": "rain"}
    pb_response(server.post("/v1/traces", pb_body(pb_span(8, 1, name="execute_tool weather", attrs=attrs)), PB))
    call = server.span(8, 1).tool_call
    assert call is not None and (call.arguments_flag, call.arguments) == (flag, parsed)
    if isinstance(args, str):
        assert call.arguments_raw == args
    text = render_timeline(step_timeline(server.store.unit(f"trace/{tid(8)}")))
    assert "TOOL_CALL weather" in text and "TOOL_RESULT weather: rain" in text


def test_output_messages_never_on_the_input_side(server: Server) -> None:
    pb_response(server.post("/v1/traces", pb_body(pb_span(9, 1, attrs=CHAT)), PB))
    span = server.span(9, 1)
    assert [m.content for m in span.input_messages] == ["Hi"]
    assert [m.content for m in span.output_messages] == ["Hello!"]
    steps = step_timeline(server.store.unit(f"trace/{tid(9)}"))
    assert [(s.kind, s.text) for s in steps] == [("user", "Hi"), ("assistant", "Hello!")]
    assert steps[1].time_ns > steps[0].time_ns


def test_legacy_span_events_carry_the_conversation(server: Server) -> None:
    prompt = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
    events = [("gen_ai.content.prompt", {"gen_ai.prompt": prompt}),
              ("gen_ai.content.completion", {"gen_ai.completion": json.dumps([{"role": "assistant",
                                                                              "content": "4"}])})]
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 11,
             "gen_ai.usage.completion_tokens": 1}
    pb_response(server.post("/v1/traces", pb_body(pb_span(10, 1, attrs=attrs, events=events)), PB))
    span = server.span(10, 1)
    assert [(m.role, m.content) for m in span.input_messages] == [("system", "Be brief."), ("user", "2+2?")]
    assert [(m.role, m.content) for m in span.output_messages] == [("assistant", "4")]
    assert (span.provider, span.input_tokens, span.output_tokens) == ("openai", 11, 1)
    assert span.attributes["gen_ai.provider.name"] == "openai" and span.attributes["gen_ai.usage.input_tokens"] == 11
    assert span.usage_source == "gen_ai.usage" and span.flags == ()


def test_unknown_token_usage_stays_none(server: Server) -> None:
    pb_response(server.post("/v1/traces", pb_body(pb_span(11, 1, attrs={"gen_ai.operation.name": "chat"})), PB))
    span = server.span(11, 1)
    assert (span.input_tokens, span.output_tokens, span.usage_source) == (None, None, None)


def _log(trace: int, span: int, name: str, body: dict[str, Any], t: int) -> LogRecord:
    return LogRecord(trace_id=bytes.fromhex(tid(trace)), span_id=bytes.fromhex(sid(span)), event_name=name,
                     time_unix_nano=T0 + t, body=_value(body))


def _logs_body(*records: LogRecord) -> bytes:
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=list(records))])])
    return req.SerializeToString()


def _post_logs(server: Server, *records: LogRecord) -> ExportLogsServiceResponse:
    r = server.post("/v1/logs", _logs_body(*records), PB)
    assert r.status_code == 200, r.content
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(r.content)
    return resp


LOGS = [("gen_ai.system.message", {"content": "You are terse."}),
        ("gen_ai.user.message", {"content": "Weather in Paris?"}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "tool_calls",
                           "message": {"role": "assistant", "tool_calls": [
                               {"id": "c1", "type": "function",
                                "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}})]


@pytest.mark.parametrize("logs_first", [False, True])
def test_log_records_joined_to_their_span(server: Server, logs_first: bool) -> None:
    span_body = pb_body(pb_span(12, 1, attrs={"gen_ai.operation.name": "chat", "gen_ai.system": "openai"}))
    records = [_log(12, 1, name, body, i) for i, (name, body) in enumerate(LOGS)]
    if logs_first:
        assert not _post_logs(server, *records).HasField("partial_success")
    pb_response(server.post("/v1/traces", span_body, PB))
    if not logs_first:
        assert "content_not_captured" in server.span(12, 1).flags
        _post_logs(server, *records)
    span = server.span(12, 1)
    assert [(m.role, m.content) for m in span.input_messages] == [("system", "You are terse."),
                                                                 ("user", "Weather in Paris?")]
    call = span.output_messages[0].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("c1", "weather", {"city": "Paris"})
    assert span.flags == () and len(span.events) == 3
    assert server.store.unit(f"trace/{tid(12)}").content_missing_reason is None


def test_log_record_with_bad_span_id_rejected(server: Server) -> None:
    bad = LogRecord(trace_id=bytes.fromhex(tid(1)), span_id=b"\x01", event_name="gen_ai.user.message")
    resp = _post_logs(server, bad, _log(1, 1, "gen_ai.user.message", {"content": "hi"}, 0))
    assert resp.partial_success.rejected_log_records == 1


def test_content_capture_off_is_flagged(server: Server) -> None:
    events = [("gen_ai.user.message", {}), ("gen_ai.choice", {"index": 0, "finish_reason": "stop"})]
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.conversation.id": "conv-9"}
    pb_response(server.post("/v1/traces", pb_body(pb_span(13, 1, attrs=attrs, events=events)), PB))
    unit = server.store.unit("session/conv-9")
    assert unit.kind == "session"
    assert unit.spans[0].flags == ("content_not_captured",)
    assert unit.content_missing_reason is not None and "content not captured" in unit.content_missing_reason


def test_retried_batch_is_stored_once(server: Server) -> None:
    body = pb_body(pb_span(14, 1, attrs=CHAT), pb_span(14, 2, parent=1, attrs=CHAT))
    pb_response(server.post("/v1/traces", body, PB))
    pb_response(server.post("/v1/traces", body, PB))
    assert len(server.store.unit(f"trace/{tid(14)}").spans) == 2


def test_server_settings_from_env(tmp_path: Path) -> None:
    from assay.settings import load_settings

    settings = load_settings(tmp_path, env={"ASSAY_SERVER__PORT": "5001", "ASSAY_SERVER__API_KEY": "k"})
    assert (settings.server.host, settings.server.port, settings.server.api_key) == ("127.0.0.1", 5001, "k")
    assert settings.server.max_body_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(("oi_kind", "kind"), [
    ("LLM", "llm"), ("CHAIN", "chain"), ("TOOL", "tool"), ("RETRIEVER", "retrieval"), ("AGENT", "agent"),
    ("EMBEDDING", "embedding"), ("RERANKER", "retrieval"), ("GUARDRAIL", "chain"), ("EVALUATOR", "chain"),
])
def test_openinference_span_kinds(server: Server, oi_kind: str, kind: str) -> None:
    attrs = {"openinference.span.kind": oi_kind, "session.id": "oi-sess", "user.id": "u-1",
             "retrieval.documents.0.document.id": "doc-7", "retrieval.documents.0.document.content": "Bags: 23 kg",
             "retrieval.documents.0.document.score": 0.9}
    pb_response(server.post("/v1/traces", pb_body(pb_span(15, 1, name="step", attrs=attrs)), PB))
    span = server.store.unit("session/oi-sess").spans[0]
    assert span.kind == kind and span.attributes["user.id"] == "u-1"
    if kind == "retrieval":
        assert span.output_value == "[doc-7] (score 0.9) Bags: 23 kg"
        steps = step_timeline(server.store.unit("session/oi-sess"))
        assert [s.kind for s in steps] == ["retrieval"]


def test_state_transitions_between_steps(server: Server) -> None:
    def node(span: int, name: str, start: int, end: int, before: dict[str, Any], after: dict[str, Any]) -> PbSpan:
        attrs = {"openinference.span.kind": "CHAIN", "input.value": json.dumps(before),
                 "output.value": json.dumps(after)}
        return pb_span(16, span, None if span == 1 else 1, name=name, start=T0 + start, end=T0 + end, attrs=attrs)

    s0, s1 = {"count": 0, "messages": []}, {"count": 1, "messages": [], "plan": "refund"}
    s2 = {"count": 2, "messages": [], "plan": "refund", "result": "ok"}
    spans = [node(1, "LangGraph", 0, 100, s0, s2), node(2, "agent", 10, 40, s0, s1), node(3, "tools", 50, 90, s1, s2)]
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    steps = step_timeline(server.store.unit(f"trace/{tid(16)}"))
    assert [s.text for s in steps if s.kind == "state"] == [
        "agent: set count: 0 → 1; added plan: refund", "tools: set count: 1 → 2; added result: ok"]


def test_state_carried_in_span_events_shows_what_changed(server: Server) -> None:
    snapshot = {"langgraph.node": "planner", "langgraph.state": json.dumps({"step": 0, "plan": None})}
    events = [("langgraph.state", snapshot),
              ("state.update", {"node": "planner", "state.step": 1, "state.plan": "refund"}),
              ("gen_ai.content.prompt", {"gen_ai.prompt": "not state"}),
              ("state", {"node": "executor", "state": {"step": 2, "plan": "refund", "done": True}}),
              ("state", {"node": "executor", "state": {"step": 2, "plan": "refund", "done": True}})]
    agent = pb_span(17, 1, name="invoke_agent graph", attrs={"gen_ai.operation.name": "invoke_agent"},
                    events=events, end=T0 + 100)
    pb_response(server.post("/v1/traces", pb_body(agent), PB))
    steps = step_timeline(server.store.unit(f"trace/{tid(17)}"))
    states = [s for s in steps if s.kind == "state"]
    assert [s.text for s in states] == [
        "planner: added step: 0; added plan: null",
        "planner: set step: 0 → 1; set plan: null → refund",
        "executor: set step: 1 → 2; added done: true",
    ]
    assert [s.time_ns for s in states] == [T0, T0 + 1, T0 + 3]
    assert "STATE: executor: set step: 1 → 2" in render_timeline(steps)


def test_event_states_and_chain_outputs_share_one_history(server: Server) -> None:
    chain = pb_span(18, 1, name="router", start=T0, end=T0 + 10, attrs={
        "openinference.span.kind": "CHAIN", "input.value": json.dumps({"route": None}),
        "output.value": json.dumps({"route": "billing"})})
    later = pb_span(18, 2, 1, name="billing", start=T0 + 20, end=T0 + 40,
                    events=[("state.update", {"state.route": "billing", "state.ticket": "T-9"})])
    pb_response(server.post("/v1/traces", pb_body(chain, later), PB))
    states = [s.text for s in step_timeline(server.store.unit(f"trace/{tid(18)}")) if s.kind == "state"]
    assert states == ["router: set route: null → billing", "billing: added ticket: T-9"]


def test_late_session_id_moves_the_trace_into_the_session_unit(server: Server) -> None:
    from assay._store.scores import RunParams, new_run
    from assay._store.spans import resolve_unit_id
    from assay._store.tables import MemberRow, ScoreRow, SignatureRow, UnitRow
    from assay.annotations import Annotation, add_annotations, list_annotations
    from assay.signatures.severe import flag_unit

    session = {"gen_ai.conversation.id": "conv-9"}
    pb_response(server.post("/v1/traces", pb_body(pb_span(21, 1, attrs=CHAIN_NO_SESSION),
                                                  pb_span(21, 2, 1, start=T0 + 5)), PB))
    old = f"trace/{tid(21)}"
    assert server.store.select_unit_ids() == [old]
    add_annotations(server.store, [Annotation(unit_id=old, annotator="ann", label="fail", rationale="wrong")])
    flag_unit(server.store, old, "refund promised", flagged_by="ann")
    run = new_run(server.store, "backfill", RunParams())
    with server.store.session() as s:
        s.add(SignatureRow(id=1, structural_key="k", label="l", keywords=[], size=1, representative_unit=old))
        s.flush()
        s.add(MemberRow(unit_id=old, signature_id=1, structural_key="k"))
        s.add(ScoreRow(run_id=run, unit_id=old, evaluator_name="e", evaluator_version="v1", status="ok", score=1.0))
    # another trace of the same conversation was stored under the session already
    pb_response(server.post("/v1/traces", pb_body(pb_span(22, 1, start=T0 - 100, attrs=session)), PB))
    # the late span: the root's sibling carries the conversation id
    pb_response(server.post("/v1/traces", pb_body(pb_span(21, 3, 1, start=T0 + 9, attrs=session)), PB))

    assert server.store.select_unit_ids() == ["session/conv-9"]
    unit = server.store.unit("session/conv-9")
    assert sorted((s.trace_id, s.span_id) for s in unit.spans) == [
        (tid(21), sid(1)), (tid(21), sid(2)), (tid(21), sid(3)), (tid(22), sid(1))]
    assert [a.unit_id for a in list_annotations(server.store)] == ["session/conv-9"]
    assert resolve_unit_id(server.store, old) == "session/conv-9"
    with server.store.session() as s:
        assert s.get(UnitRow, "session/conv-9").attributes["merged_from"] == [old]  # type: ignore[union-attr]
        assert s.get(UnitRow, old) is None
        assert s.get(MemberRow, "session/conv-9").signature_id == 1  # type: ignore[union-attr]
        assert s.get(SignatureRow, 1).representative_unit == "session/conv-9"  # type: ignore[union-attr]
        assert [r.unit_id for r in s.query(ScoreRow)] == ["session/conv-9"]
        hash_before = s.get(UnitRow, "session/conv-9").content_hash  # type: ignore[union-attr]
    from assay.signatures import severe_queue
    assert [i.unit_id for i in severe_queue(server.store)] == ["session/conv-9"]
    from assay._store.store import unit_content_hash
    assert hash_before == unit_content_hash(unit.spans)
    # a different session id later does not move the trace again
    pb_response(server.post("/v1/traces", pb_body(pb_span(21, 4, 1, attrs={"gen_ai.conversation.id": "x"})), PB))
    assert server.store.select_unit_ids() == ["session/conv-9"]


CHAIN_NO_SESSION = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(
    [{"role": "user", "parts": [{"type": "text", "content": "Refund please"}]}])}


def test_invalid_utf8_in_one_protobuf_span_costs_only_that_span(server: Server) -> None:
    spans = [pb_span(23, n, attrs={"gen_ai.operation.name": "chat", "note": f"span {n} ok ✓"}) for n in range(1, 51)]
    spans[16] = pb_span(23, 17, attrs={"gen_ai.operation.name": "chat", "note": "PLACEHOLDER!",
                                       "gen_ai.input.messages": CHAIN_NO_SESSION["gen_ai.input.messages"]})
    body = pb_body(*spans)
    assert body.count(b"PLACEHOLDER!") == 1
    body = body.replace(b"PLACEHOLDER!", b"bad \xff\xfe utf8!")
    with pytest.raises(Exception, match="(?i)utf-?8"):
        ExportTraceServiceRequest.FromString(body)  # what the receiver used to answer 400 for
    r = server.post("/v1/traces", body, PB)
    resp = pb_response(r)
    assert resp.partial_success.rejected_spans == 0
    assert resp.partial_success.error_message == (
        f"span {sid(17)} (trace {tid(23)}) stored with invalid UTF-8 replaced by U+FFFD (flag invalid_utf8_replaced)")
    unit = server.store.unit(f"trace/{tid(23)}")
    assert len(unit.spans) == 50
    bad = next(s for s in unit.spans if s.span_id == sid(17))
    assert bad.attributes["note"] == "bad \ufffd\ufffd utf8!"
    assert bad.flags == ("invalid_utf8_replaced",)
    assert [m.content for m in bad.input_messages] == ["Refund please"]
    good = [s for s in unit.spans if s.span_id != sid(17)]
    assert all(not s.flags or s.flags == ("content_not_captured",) for s in good)
    assert {s.attributes["note"] for s in good} == {f"span {n} ok ✓" for n in range(1, 51) if n != 17}


def test_invalid_utf8_in_span_name_and_event_is_repaired_and_real_garbage_still_400(server: Server) -> None:
    sp = pb_span(24, 1, name="NAMEHOLDER", events=[("EVNTHOLDER", {"k": "v"})])
    body = pb_body(sp).replace(b"NAMEHOLDER", b"tool \xc3\x28 xy").replace(b"EVNTHOLDER", b"\xe2\x82 events ")
    resp = pb_response(server.post("/v1/traces", body, PB))
    assert resp.partial_success.rejected_spans == 0
    span = server.span(24, 1)
    assert span.name == "tool \ufffd( xy" and span.events[0].name == "\ufffd events "
    assert "invalid_utf8_replaced" in span.flags
    r = server.post("/v1/traces", b"\x0a\xff\xff\xff\xff\x0f garbage", PB)
    assert r.status_code == 400


def test_invalid_utf8_in_a_log_record_is_replaced_not_a_400(server: Server) -> None:
    pb_response(server.post("/v1/traces", pb_body(pb_span(25, 1, attrs={"gen_ai.operation.name": "chat"})), PB))
    body = _logs_body(_log(25, 1, "gen_ai.user.message", {"content": "LOGHOLDER!"}, T0))
    r = server.post("/v1/logs", body.replace(b"LOGHOLDER!", b"hi \xff there"), PB)
    assert r.status_code == 200, r.content
    span = next(s for s in server.store.unit(f"trace/{tid(25)}").spans)
    assert [m.content for m in span.input_messages] == ["hi \ufffd there"]


def test_invalid_utf8_in_a_json_body_costs_only_that_string(server: Server) -> None:
    spans = [json_span(26, n, {"gen_ai.operation.name": "chat", "note": f"ok {n}"}) for n in range(1, 4)]
    spans[1]["attributes"][1]["value"]["stringValue"] = "JSONHOLDER"
    body = json_body(spans).replace(b"JSONHOLDER", b"cut \xf0\x9f here")
    r = server.post("/v1/traces", body, JS)
    assert r.status_code == 200, r.content
    assert r.json() == {} or r.json().get("partialSuccess", {}).get("rejectedSpans", 0) == 0
    notes = {s.span_id: (s.attributes["note"], s.flags) for s in server.store.unit(f"trace/{tid(26)}").spans}
    assert notes[sid(2)] == ("cut \ufffd\ufffd here", ("content_not_captured", "lone_surrogate_replaced"))
    assert notes[sid(1)][0] == "ok 1" and "lone_surrogate_replaced" not in notes[sid(1)][1]


def test_late_session_move_drops_only_rows_that_would_collide(server: Server) -> None:
    from assay._store.scores import RunParams, new_run
    from assay._store.tables import MemberRow, ScoreRow, SignatureRow

    session = {"session.id": "s-27"}
    pb_response(server.post("/v1/traces", pb_body(pb_span(27, 1)), PB))
    pb_response(server.post("/v1/traces", pb_body(pb_span(28, 1, attrs=session)), PB))
    old, new = f"trace/{tid(27)}", "session/s-27"
    run, other_run = new_run(server.store, "online", RunParams()), new_run(server.store, "gate", RunParams())
    with server.store.session() as s:
        s.add_all([SignatureRow(id=1, structural_key="a", label="a", keywords=[], size=1),
                   SignatureRow(id=2, structural_key="b", label="b", keywords=[], size=1)])
        s.flush()
        s.add_all([MemberRow(unit_id=old, signature_id=1, structural_key="a"),
                   MemberRow(unit_id=new, signature_id=2, structural_key="b")])
        for uid, rid, score in ((old, run, 0.0), (new, run, 1.0), (old, other_run, 0.5)):
            s.add(ScoreRow(run_id=rid, unit_id=uid, evaluator_name="e", evaluator_version="v1", status="scored",
                           score=score))
    pb_response(server.post("/v1/traces", pb_body(pb_span(27, 2, 1, attrs=session)), PB))
    assert server.store.select_unit_ids() == [new]
    with server.store.session() as s:
        assert {(m.unit_id, m.signature_id) for m in s.query(MemberRow)} == {(new, 2)}
        scores = sorted((r.run_id, r.unit_id, r.score) for r in s.query(ScoreRow))
    # the session's own score of the shared run wins; the other run's score of the trace follows it
    assert scores == sorted([(run, new, 1.0), (other_run, new, 0.5)])
