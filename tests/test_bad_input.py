"""Bad input never crashes a reader, the ingest command or the OTLP receiver: a wrong-shaped record is
rejected with a reason naming the field and what was expected; everything else is still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assay._cli.main import app
from assay.traces import readers, tau_bench
from assay.traces.otlp import from_json as otlp_json
from assay.traces.readers import read_file

from .test_receiver import JS, Server, json_body, json_span, sid, tid

runner = CliRunner()
GOOD = json_span(7, 1, {"gen_ai.operation.name": "chat"})
INTERNALS = ("object has no attribute", "Traceback", "ValidationError", "TypeError", "AttributeError")


def _export(spans: list[Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def _ingest(ws: Path, *paths: Path) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["--workspace", str(ws), "ingest", *map(str, paths), "--json"])
    return result.exit_code, json.loads(result.stdout), result.output


def _no_internals(text: str) -> None:
    for bad in INTERNALS:
        assert bad not in text, text


# --- readers: shapes checked per element ---------------------------------------------------------
@pytest.mark.parametrize(("data", "reason"), [
    ({"resourceSpans": "x"}, "resourceSpans: expected a list, got string"),
    ({"resourceSpans": ["x"]}, "resourceSpans[0]: expected an object, got string"),
    ({"resourceSpans": [{"scopeSpans": "x"}]}, "resourceSpans[0].scopeSpans: expected a list, got string"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]},
     "resourceSpans[0].scopeSpans[0].spans: expected a list, got string"),
    (_export([{**GOOD, "attributes": "x"}]),
     "resourceSpans[0].scopeSpans[0].spans[0].attributes: expected a list, got string"),
    (_export([{**GOOD, "attributes": [{"key": "a", "value": {"arrayValue": "x"}}]}]),
     "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue: expected an object, got string"),
    (_export([{**GOOD, "events": [7]}]), "resourceSpans[0].scopeSpans[0].spans[0].events[0]: expected an object"),
    (_export([{**GOOD, "startTimeUnixNano": "soon"}]), "startTimeUnixNano: expected an integer"),
])
def test_otlp_wrong_shapes_are_rejected_with_the_json_path(data: dict[str, Any], reason: str) -> None:
    out = list(otlp_json.read_spans(data))
    assert [s for s, _ in out if s is not None] == []
    reasons = [str(r) for _, r in out if r is not None]
    assert len(reasons) == 1 and reason in reasons[0], reasons
    _no_internals(reasons[0])


def test_junk_spans_cost_only_themselves() -> None:
    out = list(otlp_json.read_spans(_export(["x", 5, GOOD])))
    assert [s.span_id for s, _ in out if s is not None] == [sid(1)]
    assert [r for _, r in out if r] == ["resourceSpans[0].scopeSpans[0].spans[0]: expected an object, got string",
                                         "resourceSpans[0].scopeSpans[0].spans[1]: expected an object, got number"]


def test_bad_trace_id_says_which_field() -> None:
    (span, reason), = otlp_json.read_spans(_export([{**GOOD, "traceId": "zz"}]))
    assert span is None and reason is not None
    assert "trace_id: String should match pattern" in reason and "spans[0]" in reason
    _no_internals(reason)


def test_attribute_nesting_is_capped() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(150):
        value = {"arrayValue": {"values": [value]}}
    ok: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(60):
        ok = {"arrayValue": {"values": [ok]}}
    deep = {**GOOD, "spanId": sid(2), "attributes": [{"key": "deep", "value": value}]}
    fine = {**GOOD, "attributes": [*GOOD["attributes"], {"key": "nested", "value": ok}]}
    out = list(otlp_json.read_spans(_export([deep, fine])))
    assert [s.span_id for s, _ in out if s is not None] == [sid(1)]
    (reason,) = [r for _, r in out if r]
    assert "nested attribute value too deep" in reason and "spans[0].attributes[0].value" in reason


@pytest.mark.parametrize(("run", "reason"), [
    ({"task_id": "x", "reward": "high", "traj": "q"}, "traj: expected a list, got string"),
    ({"task_id": "x", "reward": "high", "traj": []}, "reward: expected a number or null, got string"),
    ({"task_id": "x", "traj": ["q", 5]}, "traj[0]: expected an object, got string"),
    ({"task_id": "x", "traj": [{"role": "assistant", "content": "", "tool_calls": [{"function": 3}]}]},
     "traj[0].tool_calls[0].function: expected an object, got number"),
    ("just text", "run: expected an object, got string"),
    (5, "run: expected an object, got number"),
])
def test_tau_bench_wrong_shapes_rejected(run: Any, reason: str) -> None:
    good = {"task_id": 1, "reward": 1.0, "traj": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "hello"}]}
    out = list(tau_bench.read_runs([run, good], "tau-bench:t"))
    assert [u.unit_id for u, _ in out if u is not None] == ["tau-unknown/task-1/trial-0"]
    (got,) = [r for _, r in out if r]
    assert got.startswith("run #0") and reason in got, got
    _no_internals(got)


# --- ingest: per file, nothing else lost ----------------------------------------------------------
def test_ingest_tau_bench_bad_run_file_exits_1_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "b6.json"
    bad.write_text('[{"task_id":"x","reward":"high","traj":"q"}]')
    code, summary, output = _ingest(tmp_path / "ws", bad)
    assert code == 1  # every record rejected
    assert summary["rejected"][0]["reason"] == "run #0 (task_id 'x'): traj: expected a list, got string"
    assert "nothing ingested" in output
    _no_internals(output)


@pytest.mark.parametrize("content", ['{"resourceSpans": "x"}', '["x"]', json.dumps(_export(["x", 5]))])
def test_weird_otlp_file_in_a_folder_does_not_stop_the_others(tmp_path: Path, content: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_weird.json").write_text(content)
    (folder / "b_good.json").write_text(json.dumps(_export([GOOD])))
    code, summary, output = _ingest(tmp_path / "ws", folder)
    assert code == 0, output
    assert summary["spans_new"] == 1
    assert [f["path"] for f in summary["files"]][-1].endswith("b_good.json")
    assert any("a_weird.json" in r["path"] for r in summary["rejected"] + summary["skipped"])
    _no_internals(output)


def test_reader_crash_costs_one_file_not_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety net: an unexpected exception inside a reader rejects that file with its message."""
    real = readers.read_file

    def flaky(path: Path | str, fmt: str = "auto") -> readers.ReadResult:
        if Path(path).name == "a.json":
            raise AttributeError("'str' object has no attribute 'get'")
        return real(path, fmt)

    monkeypatch.setattr("assay.traces.ingest.read_file", flaky)
    (tmp_path / "a.json").write_text(json.dumps(_export([GOOD])))
    (tmp_path / "b.json").write_text(json.dumps(_export([json_span(8, 1, {})])))
    code, summary, output = _ingest(tmp_path / "ws", tmp_path / "a.json", tmp_path / "b.json")
    assert code == 0 and summary["spans_new"] == 1
    (rej,) = summary["rejected"]
    assert rej["path"].endswith("a.json") and rej["reason"].startswith("could not be read:")
    assert "Traceback" not in output


def test_empty_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(readers.IngestError, match="empty file"):
        read_file(empty)
    code, summary, _ = _ingest(tmp_path / "ws", empty)
    assert code == 1 and summary["rejected"] == [{"path": str(empty), "reason": "empty file"}]


def test_deeply_nested_json_file_rejected(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"a":' * 50000 + "1" + "}" * 50000)
    code, summary, output = _ingest(tmp_path / "ws", deep)
    assert code == 1
    assert summary["rejected"][0]["reason"] == "JSON nested too deeply to read"
    assert "RecursionError" not in output


def test_folder_with_nothing_ingestible_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "readme.md").write_text("# hi")
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "ingest", str(folder)])
    assert result.exit_code == 1
    assert "nothing ingested: no ingestible file found (1 skipped)" in " ".join(result.output.split())


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    assert "nothing could be ingested" in " ".join(result.output.split())


# --- receiver ----------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_receiver_junk_span_costs_only_itself(server: Server) -> None:
    r = server.post("/v1/traces", json_body(["x", GOOD]), JS)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "spans[0]: expected an object, got string" in partial["errorMessage"]
    _no_internals(partial["errorMessage"])
    assert server.span(7, 1).name == GOOD["name"]


@pytest.mark.parametrize("body", [
    {"resourceSpans": ["x"]},
    {"resourceSpans": [{"scopeSpans": "x"}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{**GOOD, "attributes": "x"}]}]}]},
])
def test_receiver_wrong_shapes_are_partial_success(server: Server, body: dict[str, Any]) -> None:
    r = server.post("/v1/traces", json.dumps(body).encode(), JS)
    assert r.status_code == 200, r.text
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    _no_internals(r.text)


def test_receiver_logs_junk_record_costs_only_itself(server: Server) -> None:
    assert server.post("/v1/traces", json_body([GOOD]), JS).status_code == 200
    good = {"traceId": tid(7), "spanId": sid(1), "eventName": "gen_ai.user.message", "timeUnixNano": "1",
            "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "hi there"}}]}}}
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": ["x", good]}]}]}
    r = server.post("/v1/logs", json.dumps(body).encode(), JS)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    assert "logRecords[0]: expected an object, got string" in partial["errorMessage"]
    _no_internals(partial["errorMessage"])
    assert any(e.source == "log_record" for e in server.span(7, 1).events)


def test_receiver_deep_body_is_400(server: Server) -> None:
    r = server.post("/v1/traces", ('{"a":' * 50000 + "1" + "}" * 50000).encode(), JS)
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["message"]


def _nested_attribute_body(levels: int) -> bytes:
    """An export with a span whose attribute nests ``levels`` arrayValues, then a valid span (built as
    text: json.dumps itself cannot encode thousands of levels)."""
    value = '{"arrayValue":{"values":[' * levels + '{"stringValue":"leaf"}' + "]}}" * levels
    deep = json.dumps({**GOOD, "spanId": sid(2), "attributes": [{"key": "deep", "value": "@"}]})
    deep = deep.replace('"@"', value)
    return json_body([GOOD]).replace(b'"spans": [', f'"spans": [{deep}, '.encode())


def test_receiver_deep_attribute_rejects_that_span(server: Server) -> None:
    r = server.post("/v1/traces", _nested_attribute_body(150), JS)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "nested attribute value too deep" in partial["errorMessage"]
    assert server.span(7, 1).span_id == sid(1)


def test_receiver_attribute_too_deep_for_the_json_parser_is_400(server: Server) -> None:
    """3,000 levels exceed what Python's json module decodes: the body is refused with a reason."""
    r = server.post("/v1/traces", _nested_attribute_body(3000), JS)
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["message"]


# --- every node replaced by junk: readers never raise ---------------------------------------------
JUNK: tuple[Any, ...] = ("x", 5, None, [], {}, True, ["x"], [5])


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _replaced(doc: Any, path: tuple[Any, ...], junk: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    if not path:
        return junk
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = junk
    return doc


RICH_SPAN = {**GOOD, "parentSpanId": sid(9), "status": {"code": 2, "message": "boom"},
             "events": [{"name": "gen_ai.choice", "timeUnixNano": "3",
                         "attributes": [{"key": "k", "value": {"kvlistValue": {"values": [
                             {"key": "a", "value": {"intValue": "3"}}]}}}]}],
             "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                            {"key": "n", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}]}}}]}


def test_no_junk_anywhere_in_an_otlp_export_makes_the_reader_raise() -> None:
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                              "scopeSpans": [{"spans": [RICH_SPAN]}]}]}
    assert [r for _, r in otlp_json.read_spans(doc)] == [None]
    tried = 0
    for path in _paths(doc):
        for junk in JUNK:
            out = list(otlp_json.read_spans(_replaced(doc, path, junk)))  # must not raise
            for _, reason in out:
                if reason:
                    _no_internals(reason)
            tried += 1
    assert tried > 100


def test_no_junk_anywhere_in_a_tau_bench_run_makes_the_reader_raise() -> None:
    run = {"task_id": 3, "trial": 0, "reward": 0.0, "info": {"source": "user", "task": {"instruction": "i"}},
           "traj": [{"role": "system", "content": "airline agent"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "c1", "function": {"name": "get", "arguments": "{\"a\": 1}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "name": "get", "content": "Error: no"}]}
    assert [r for _, r in tau_bench.read_runs([run], "t")] == [None]
    for path in _paths(run):
        for junk in JUNK:
            for _, reason in tau_bench.read_runs([_replaced(run, path, junk)], "t"):  # must not raise
                if reason:
                    _no_internals(reason)


def test_tau_bench_pydantic_errors_name_the_message_and_field() -> None:
    runs = [{"task_id": 2, "traj": [{"role": "user", "content": "hi"}, {"role": "bogus", "content": 3}]},
            {"task_id": 3, "traj": [{"role": "assistant", "tool_calls": [{"id": 4, "function": {"name": "f"}}]}]}]
    reasons = [r for _, r in tau_bench.read_runs(runs, "t")]
    assert reasons[0] is not None and reasons[0].startswith("run #0 (task_id 2): traj[1]: role: Input should be")
    assert "content: Input should be a valid string" in reasons[0]
    assert reasons[1] is not None and reasons[1].startswith("run #1 (task_id 3): traj[0].tool_calls[0]: id:")


def test_chat_log_records_with_wrong_types_are_rejected_with_the_line(tmp_path: Path) -> None:
    """A chat-log line whose messages are empty or of the wrong types becomes no unit: the reason names the line
    and the message, as a bad JSON line does; the good lines are kept."""
    from assay.traces.timeline import step_timeline

    good = {"id": "ok", "messages": [{"role": "user", "content": "Where is order 1000?"},
                                     {"role": "assistant", "content": "It shipped."}]}
    lines = [good, {"id": "num-role", "messages": [{"role": 42, "content": "hi"}]},
             {"id": "empty", "messages": []}, {"id": "str-msg", "messages": ["hi"]},
             {"id": "num-content", "messages": [{"role": "user", "content": 42}]},
             {"id": "odd-role", "messages": [{"role": "customer", "content": "hi"}]},
             {"id": "no-role", "messages": [{"content": "hi"}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    read = read_file(path)
    assert [u.unit_id for u in read.units] == ["openai-chat/ok"]
    assert [s.kind for s in step_timeline(read.units[0])] == ["user", "assistant"]
    assert [r.reason for r in read.rejected] == [
        "line 2: messages[0].role: expected a chat role (system, user, assistant, tool ...), got 42",
        "line 3: 'messages' is empty: a conversation needs at least one message",
        "line 4: messages[0]: expected a message object, got 'hi'",
        "line 5: messages[0].content: expected text, a list of parts or null, got 42",
        "line 6: messages[0].role: expected a chat role (system, user, assistant, tool ...), got 'customer'",
        "line 7: messages[0]: no 'role'", "line 8: Expecting property name enclosed in double quotes: line 1 column 2 "
                                          "(char 1)"]
