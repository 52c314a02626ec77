"""One tool call, one ``tool_call`` step: a model's requested call (OpenInference ``llm.output_messages.*.
tool_calls``, GenAI ``tool_call`` parts) and the tool span that executed it (``TOOL`` / ``execute_tool``) are the
same call, and a chat span replaying the history does not add it again. Real OpenInference / OTel GenAI
fixtures (``DATA``), sent to the receiver in process and read from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assay.signals import detect
from assay.traces import step_timeline
from assay.traces.model import Step
from assay.traces.readers import read_file

from .conftest import DATA
from .test_receiver import PB, T0, Server, pb_body, pb_response, pb_span, sid, tid

FIXTURES = DATA / "otel-genai-openinference-samples" / "openinference" / "js" / "packages" / "openinference-genai" \
    / "test" / "__fixtures__"
FALSE_SIGNALS = {"tool_loop", "retry_after_error", "many_actions"}


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def _fixture(name: str) -> dict[str, Any]:
    if not FIXTURES.exists():
        pytest.skip("OpenInference fixtures not available")
    return dict(json.loads((FIXTURES / name).read_text()))


def _tools(steps: list[Step]) -> list[tuple[str, str | None, str, str | None]]:
    return [(s.kind, s.tool_name, s.text, s.span_id) for s in steps if s.kind in ("tool_call", "tool_result")]


def _openinference_spans(trace: int, *, ids: bool, failed: bool = False) -> list[Any]:
    """An agent, the LLM call asking for get_weather, the TOOL span running it (no ``tool_call.id``, as most
    instrumentors write it) and the next LLM call: the real fixture, replaying the history."""
    request = {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Weather in Paris?",
               "llm.output_messages.0.message.role": "assistant",
               "llm.output_messages.0.message.content": "Absolutely! Let me check the weather for you.",
               "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
               "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"location":"Paris"}'}
    second = _fixture("openinference_client_span_tool_calls.json")
    if ids:
        request["llm.output_messages.0.message.tool_calls.0.tool_call.id"] = "1234"
    else:
        second = {k: v for k, v in second.items() if not k.endswith(("tool_call.id", "tool_call_id"))}
    tool = {"openinference.span.kind": "TOOL", "tool.name": "get_weather", "input.value": '{"location": "Paris"}',
            "output.value": "Error: weather service timeout" if failed else "rainy, 57°F"}
    return [pb_span(trace, 1, name="agent", start=T0, end=T0 + 100, attrs={"openinference.span.kind": "AGENT",
                                                                            "input.value": "Weather in Paris?"}),
            pb_span(trace, 2, 1, name="ChatCompletion", start=T0 + 1, end=T0 + 10,
                    attrs={"openinference.span.kind": "LLM", **request}),
            pb_span(trace, 3, 1, name="get_weather", start=T0 + 11, end=T0 + 20, attrs=tool),
            pb_span(trace, 4, 1, name="ChatCompletion", start=T0 + 21, end=T0 + 30, attrs=second)]


@pytest.mark.parametrize("ids", [True, False], ids=["call-id", "no-ids"])
def test_an_openinference_tool_call_is_one_step(server: Server, ids: bool) -> None:
    pb_response(server.post("/v1/traces", pb_body(*_openinference_spans(50, ids=ids)), PB))
    unit = server.store.unit(f"trace/{tid(50)}")
    steps = step_timeline(unit)
    assert _tools(steps) == [("tool_call", "get_weather", '{"location": "Paris"}', sid(3)),
                             ("tool_result", "get_weather", "rainy, 57°F", sid(3))]
    assert [s.kind for s in steps] == ["user", "assistant", "tool_call", "tool_result", "assistant"]
    assert not FALSE_SIGNALS & {s.kind for s in detect(unit)}


def test_a_failed_tool_span_keeps_its_error_on_the_one_call(server: Server) -> None:
    spans = _openinference_spans(51, ids=False, failed=True)[:3]  # the fixture's history holds the good result
    spans[2].status.code, spans[2].status.message = 2, "weather service timeout"
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    unit = server.store.unit(f"trace/{tid(51)}")
    steps = step_timeline(unit)
    calls, results = ([s for s in steps if s.kind == kind] for kind in ("tool_call", "tool_result"))
    assert len(calls) == 1 and len(results) == 1 and calls[0].span_id == results[0].span_id == sid(3)
    assert results[0].is_error and results[0].text == "Error: weather service timeout"
    assert results[0].error == "weather service timeout"
    kinds = {s.kind for s in detect(unit)}
    assert "tool_error" in kinds and not FALSE_SIGNALS & kinds


def _export(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}


def _json_span(span: int, name: str, start: int, attrs: dict[str, Any], status: int = 1) -> dict[str, Any]:
    kv = [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
          for k, v in attrs.items()]
    return {"traceId": tid(52), "spanId": sid(span), "parentSpanId": sid(1), "name": name,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 9), "attributes": kv,
            "status": {"code": status}}


def test_an_ingested_openinference_file_counts_each_call_once(tmp_path: Path) -> None:
    """The shape the OpenInference instrumentors write and a user's ``assay ingest one.json`` reads: the request
    carries no call id, the TOOL span its name and arguments; a second call of the same tool is its own call."""
    def llm(n: int, start: int, tool: str | None, args: str = "") -> dict[str, Any]:
        out = ({"llm.output_messages.0.message.tool_calls.0.tool_call.function.name": tool,
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": args}
               if tool else {"llm.output_messages.0.message.content": "Order 2001 is in transit."})
        return _json_span(n, "llm", start, {"openinference.span.kind": "LLM", "llm.output_messages.0.message.role":
                                            "assistant", **out})

    def tool(n: int, start: int, args: str, result: str) -> dict[str, Any]:
        return _json_span(n, "lookup_order", start, {"openinference.span.kind": "TOOL", "tool.name": "lookup_order",
                                                     "input.value": args, "output.value": result})

    root = {**_json_span(1, "support_agent", T0, {"openinference.span.kind": "AGENT",
                                                   "input.value": "Where are 2001 and 2002?"}), "parentSpanId": ""}
    spans = [root, llm(2, T0 + 10, "lookup_order", '{"order_id": 2001}'),
             tool(3, T0 + 20, '{"order_id": 2001}', '{"status": "in transit"}'),
             llm(4, T0 + 30, "lookup_order", '{"order_id": 2002}'),
             tool(5, T0 + 40, '{"order_id": 2002}', '{"status": "delivered"}'), llm(6, T0 + 50, None)]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(_export(spans)))
    read = read_file(path)
    assert not read.rejected and len(read.units) == 1
    steps = step_timeline(read.units[0])
    assert [(k, text, span) for k, _, text, span in _tools(steps)] == [
        ("tool_call", '{"order_id": 2001}', sid(3)), ("tool_result", '{"status": "in transit"}', sid(3)),
        ("tool_call", '{"order_id": 2002}', sid(5)), ("tool_result", '{"status": "delivered"}', sid(5))]
    assert not FALSE_SIGNALS & {s.kind for s in detect(read.units[0])}


def test_a_genai_tool_call_is_one_step(server: Server) -> None:
    """GenAI semantic conventions: the ``tool_call`` part of ``gen_ai.output.messages``, then an ``execute_tool``
    span without ``gen_ai.tool.call.id`` (recommended) or arguments (opt-in), then the real fixture's chat span
    replaying the history. The one step shows the arguments the model asked for."""
    request = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": "Absolutely! Let me check the weather for you."},
            {"type": "tool_call", "id": "1234", "name": "get_weather", "arguments": {"location": "Paris"}}]}])}
    tool = {k: v for k, v in _fixture("otel_genai_tool_execution_span.json").items()
            if k not in ("gen_ai.tool.call.id", "input")}
    spans = [pb_span(53, 1, name="invoke_agent weather", start=T0, end=T0 + 100,
                     attrs={"gen_ai.operation.name": "invoke_agent"}),
             pb_span(53, 2, 1, name="chat gpt-4", start=T0 + 1, end=T0 + 10, attrs=request),
             pb_span(53, 3, 1, name="execute_tool get_weather", start=T0 + 11, end=T0 + 20, attrs=tool),
             pb_span(53, 4, 1, name="chat gpt-4", start=T0 + 21, end=T0 + 30,
                     attrs=_fixture("otel_genai_client_span_tool_calls.json"))]
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    unit = server.store.unit(f"trace/{tid(53)}")
    tools = _tools(step_timeline(unit))
    assert [(k, name, span) for k, name, _, span in tools] == [("tool_call", "get_weather", sid(3)),
                                                                ("tool_result", "get_weather", sid(3))]
    assert json.loads(tools[0][2]) == {"location": "Paris"}
    assert "sunny" in tools[1][2]
    assert not FALSE_SIGNALS & {s.kind for s in detect(unit)}


def test_tool_spans_without_arguments_take_the_requests_in_the_order_asked(tmp_path: Path) -> None:
    """The Claude Agent SDK shape (Langfuse framework trace): two turns each ask for the weather tool, then two
    tool spans that record no arguments run them; each call shows the arguments its request asked for."""
    def ask(n: int, start: int, city: str) -> dict[str, Any]:
        return _json_span(n, "assistant.turn", start, {
            "openinference.span.kind": "LLM", "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": json.dumps({"city": city})})

    def run(n: int, start: int, result: str) -> dict[str, Any]:
        return _json_span(n, "get_weather", start, {"openinference.span.kind": "TOOL", "tool.name": "get_weather",
                                                     "output.value": result})

    root = {**_json_span(1, "agent", T0, {"openinference.span.kind": "AGENT"}), "parentSpanId": ""}
    path = tmp_path / "claude.json"
    path.write_text(json.dumps(_export([root, ask(2, T0 + 10, "Berlin"), ask(3, T0 + 20, "New York"),
                                        run(4, T0 + 30, "Berlin: cloudy"), run(5, T0 + 40, "New York: sunny")])))
    steps = step_timeline(read_file(path).units[0])
    assert [(k, text, span) for k, _, text, span in _tools(steps)] == [
        ("tool_call", '{"city": "Berlin"}', sid(4)), ("tool_result", "Berlin: cloudy", sid(4)),
        ("tool_call", '{"city": "New York"}', sid(5)), ("tool_result", "New York: sunny", sid(5))]
