"""Readers on real data: tau-bench trajectories and OTel GenAI / OpenInference samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay._store import Store
from assay.exceptions import IngestError
from assay.traces import parse_arguments, read_file, render_timeline, step_timeline
from assay.traces.otlp import attributes_to_span

from .conftest import AIRLINE, DATA, RETAIL

FIXTURES = DATA / "otel-genai-openinference-samples" / "openinference" / "js" / "packages" / "openinference-genai" \
    / "test" / "__fixtures__"


@pytest.fixture(scope="module")
def airline():  # type: ignore[no-untyped-def]
    return read_file(AIRLINE)


def test_airline_units_and_outcomes(airline) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(AIRLINE.read_text())
    assert airline.format == "tau-bench"
    assert len(airline.units) == 200
    assert sum(u.outcome == "pass" for u in airline.units) == 84
    assert sum(u.outcome == "fail" for u in airline.units) == 116
    assert not airline.rejected
    n_calls = sum(len(m.get("tool_calls") or []) for r in raw for m in r["traj"])
    tool_spans = [s for u in airline.units for s in u.spans if s.kind == "tool"]
    assert len(tool_spans) == n_calls == 1164


def test_retail_units_and_outcomes() -> None:
    retail = read_file(RETAIL, "tau-bench")
    assert len(retail.units) == 100
    assert sum(u.outcome == "pass" for u in retail.units) == 73
    assert {u.attributes["domain"] for u in retail.units} == {"retail"}


def test_tool_arguments_parsed_and_results_attached(airline) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(AIRLINE.read_text())[0]
    first_call = next(m["tool_calls"][0] for m in raw["traj"] if m.get("tool_calls"))
    unit = airline.units[0]
    span = next(s for s in unit.spans if s.kind == "tool")
    assert span.tool_call is not None
    assert span.tool_call.name == first_call["function"]["name"]
    assert span.tool_call.arguments == json.loads(first_call["function"]["arguments"])
    assert span.tool_call.arguments_flag == "json_string"
    result = next(m["content"] for m in raw["traj"] if m.get("tool_call_id") == first_call["id"])
    assert span.tool_result == result


def test_timeline_order_and_errors(airline) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(AIRLINE.read_text())[0]
    steps = step_timeline(airline.units[0])
    assert [s.index for s in steps] == list(range(1, len(steps) + 1))
    users = [s.text for s in steps if s.kind == "user"]
    assert users == [m["content"] for m in raw["traj"] if m["role"] == "user"]
    assert steps[0].kind == "system"
    errs = [u for u in airline.units if any(s.is_error for s in step_timeline(u))]
    expected = [r for r in json.loads(AIRLINE.read_text())
                if any(m["role"] == "tool" and m["content"].startswith("Error") for m in r["traj"])]
    assert len(errs) == len(expected) > 0
    text = render_timeline(steps, max_chars=500, skip_system=True)
    assert "earlier steps omitted" in text and "SYSTEM" not in text


@pytest.mark.parametrize(("value", "flag", "parsed"), [
    ({"a": 1}, "object", {"a": 1}),
    ('{"a": 1}', "json_string", {"a": 1}),
    (json.dumps('{"a": 1}'), "json_string_twice", {"a": 1}),
    ("{not json", "invalid_json", None),
    ("", "empty", {}),
])
def test_parse_arguments_cases(value: object, flag: str, parsed: object) -> None:
    got, raw, got_flag = parse_arguments(value)
    assert (got, got_flag) == (parsed, flag)
    if isinstance(value, str):
        assert raw == value


def _fixture(name: str) -> dict[str, object]:
    return json.loads((FIXTURES / name).read_text())


IDS = {"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "1"}


def test_otel_genai_client_span_roles_and_tool_calls() -> None:
    span = attributes_to_span(_fixture("otel_genai_client_span_tool_calls.json"), **IDS)
    assert span.kind == "llm"
    assert [m.role for m in span.input_messages] == ["user", "assistant", "tool"]
    call = span.input_messages[1].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("1234", "get_weather", {"location": "Paris"})
    assert span.input_messages[2].tool_call_id == "1234"
    assert [m.role for m in span.output_messages] == ["assistant"]
    assert "rainy" in (span.output_messages[0].content or "")
    assert (span.input_tokens, span.output_tokens) == (97, 52)


def test_openinference_client_span_roles_and_tool_calls() -> None:
    span = attributes_to_span(_fixture("openinference_client_span_tool_calls.json"), **IDS)
    assert span.kind == "llm"
    assert [m.role for m in span.input_messages] == ["user", "assistant", "tool"]
    assert span.input_messages[0].content == "Weather in Paris?"
    call = span.input_messages[1].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("1234", "get_weather", {"location": "Paris"})
    assert span.output_messages[0].role == "assistant"
    assert span.model == "gpt-4-0613"


def test_otel_genai_tool_execution_span() -> None:
    span = attributes_to_span(_fixture("otel_genai_tool_execution_span.json"), **IDS)
    assert span.kind == "tool" and span.tool_call is not None
    assert (span.tool_call.id, span.tool_call.name) == ("1234", "get_weather")
    assert span.tool_call.arguments == {"city": "New York"}
    assert "sunny" in (span.tool_result or "")


def _otlp_file(tmp_path: Path, spans: list[dict[str, object]]) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                                    "scopeSpans": [{"spans": spans}]}]}))
    return path


def _kv(attrs: dict[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}}
            for k, v in attrs.items()]


def test_otlp_file_groups_by_session_and_rejects_bad_span(tmp_path: Path) -> None:
    attrs = _fixture("otel_genai_client_span_tool_calls.json")
    attrs = {k: v for k, v in attrs.items() if isinstance(v, str | int)}
    good = [{"traceId": f"{t:032x}", "spanId": f"{i + 1:016x}", "name": "chat gpt-4",
             "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
             "endTimeUnixNano": str(1_700_000_000_000_000_900 + i),
             "attributes": _kv({**attrs, "gen_ai.conversation.id": "conv-1"}),
             "status": {"code": 2 if i == 0 else 1, "message": "boom"}} for t, i in ((1, 0), (2, 1))]
    bad = {"traceId": "xyz", "spanId": "1", "name": "broken"}
    result = read_file(_otlp_file(tmp_path, [*good, bad]))
    assert result.format == "otlp-json"
    assert len(result.rejected) == 1 and "span #2" in result.rejected[0].reason
    assert len(result.units) == 1
    unit = result.units[0]
    assert unit.unit_id == "session/conv-1" and unit.kind == "session" and len(unit.trace_ids) == 2
    assert unit.has_error and unit.outcome == "fail"


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(IngestError, match="not valid JSON"):
        read_file(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(IngestError, match="unknown format"):
        read_file(tmp_path / "other.json")


def test_ingest_twice_creates_no_duplicates(tmp_path: Path, airline) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    first = store.add_units(airline.units)
    second = store.add_units(read_file(AIRLINE).units)
    assert first.units_new == 200 and first.spans_new == airline.span_count
    assert second.units_new == 0 and second.spans_new == 0 and second.spans_duplicate == airline.span_count
    assert len(store.select_unit_ids()) == 200
    assert len(store.select_unit_ids("failed")) == 116
    unit = store.unit(airline.units[3].unit_id)
    assert unit == airline.units[3]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize(("name", "attrs", "body", "state", "update"), [
    ("state", {"state": '{"a": 1}'}, None, {"a": 1}, False),
    ("langgraph.state", {"langgraph.state": {"a": 1}}, None, {"a": 1}, False),
    ("node.end", {"langgraph.state.a": 1, "langgraph.node": "n"}, None, {"a": 1}, False),
    ("anything", {"state.a": 1, "state.kind": "update"}, None, {"a": 1}, True),
    ("state.update", {"node": "n"}, {"a": 1}, {"a": 1}, True),  # a log record whose body is the state
    ("state", {"a": 1, "node": "n"}, None, {"a": 1}, False),
    ("gen_ai.choice", {"state": "running"}, None, None, False),  # a plain string is no state
    ("state", {"node": "n"}, None, None, False),  # nothing but bookkeeping
])
def test_event_state_forms(name: str, attrs: dict[str, object], body: object, state: object, update: bool) -> None:
    from assay.traces import SpanEvent
    from assay.traces.timeline import event_state

    event = SpanEvent(name=name, attributes=attrs, body=body, source="log_record" if body else "span_event")
    assert event_state(event) == (None if state is None else (state, update))
