"""Declarative trace mappings (``assay ingest --mapping``): the two worked mappings of docs/mappings/ on the
real benchmark files, text actions to tool calls, outcome/feedback/session fields, and errors that name the
mapping field and the record."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay.exceptions import ConfigError
from assay.traces import step_timeline
from assay.traces.mapping import load_mapping, mapping_json_schema, mapping_reader, parse_mapping
from assay.traces.mapping.paths import parse_path
from assay.traces.usage import unit_usage

from .conftest import DATA, ROOT

DEVAI = DATA / "devai-agent-as-a-judge" / "benchmark" / "trajectories" / "OpenHands" / \
    "39_Drug_Response_Prediction_SVM_GDSC_ML.json"
MAGENTIC = DATA / "agentrx" / "data" / "magentic_dataset"
MAPPINGS = ROOT / "docs" / "mappings"


def _ingest(ws: Path, *args: str) -> tuple[int, dict[str, Any] | str]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), "ingest", *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code in (0, 1) else result.output


# --- the worked mappings on real files ------------------------------------------------------------------
def test_devai_trajectory_mapping_end_to_end(tmp_path: Path) -> None:
    raw = json.loads(DEVAI.read_text())
    code, summary = _ingest(tmp_path, "--mapping", str(MAPPINGS / "devai-trajectory.yaml"), str(DEVAI))
    assert code == 0 and isinstance(summary, dict), summary
    assert summary["rejected"] == [] and summary["files"][0]["format"] == "devai-trajectory"
    store = Store(f"sqlite:///{tmp_path / '.assay' / 'assay.db'}")
    (unit_id,) = store.select_unit_ids()
    assert unit_id == "devai-trajectory/39_Drug_Response_Prediction_SVM_GDSC_ML"
    unit = store.unit(unit_id)
    store.close()
    actions = [s["agent"]["action"] for s in raw if s["agent"]["action"]]
    expected = Counter("shell" if a.startswith("Running command: ") else "python" for a in actions)
    tools = [s for s in unit.spans if s.kind == "tool"]
    assert Counter(s.tool_call.name for s in tools if s.tool_call) == expected == {"shell": 20, "python": 13}
    assert tools[0].tool_call is not None and tools[0].tool_call.arguments == {
        "command": actions[0].removeprefix("Running command: ")}
    assert [s.tool_result for s in tools] == [s["environment"] for s in raw if s["agent"]["action"]]
    assert sum(s.status == "error" for s in tools) >= 1  # step 11's traceback
    steps = step_timeline(unit)
    assert Counter(s.kind for s in steps) == {"user": 1, "assistant": len(raw), "tool_call": 33, "tool_result": 33}
    assert steps[0].text == raw[0]["user_message"]
    llm = [s for s in unit.spans if s.kind == "llm"]
    assert sum(s.input_tokens or 0 for s in llm) == sum(s["step_usage"]["input_tokens"] for s in raw)
    assert {s.model for s in llm} == {"gpt-4o-2024-05-13"}
    usage = unit_usage(unit)  # the steps' costs add up to the run's own running total
    assert usage.cost_usd == pytest.approx(raw[-1]["accumulated_usage"]["accumulated_cost"])
    assert (usage.spans_with_usage, usage.llm_spans) == (len(raw), len(raw))
    root = unit.spans[0] if unit.spans[0].kind == "agent" else next(s for s in unit.spans if s.kind == "agent")
    assert not root.synthetic_time  # the steps' durations give the run's real length
    assert root.duration_ns / 1e9 == pytest.approx(raw[-1]["accumulated_usage"]["accumulated_time"], abs=0.01)


def test_magentic_websurfer_mapping_on_every_log() -> None:
    read = mapping_reader(MAPPINGS / "magentic-one-websurfer.yaml")
    expected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    files = sorted(p for p in MAGENTIC.glob("*.json") if p.name != "steps_by_id.json")
    for path in files:
        raw = json.loads(path.read_text())
        for m in raw:
            expected.update(tool for start, tool in (("I clicked ", "click"), ("I typed '", "type"),
                                                     ("I input '", "type"), ("I scrolled ", "scroll"))
                            if m["content"].startswith(start))
        result = read(path)
        assert result.rejected == [] and len(result.units) == 1
        unit = result.units[0]
        assert unit.unit_id == f"magentic-one-websurfer/{path.stem}"
        tools = [s for s in unit.spans if s.kind == "tool"]
        found.update(s.tool_call.name for s in tools if s.tool_call)
        assert all(s.tool_result for s in tools)  # the page the action led to
        speakers = {m.name for s in unit.spans for m in s.output_messages if m.role == "assistant"}
        assert "Orchestrator (thought)" in speakers
    assert len(files) == 58 and found == expected == {"click": 289, "type": 203, "scroll": 66}
    assert read(MAGENTIC / "steps_by_id.json").rejected[0].reason.startswith("record 0: events:")


# --- text actions, outcome, feedback, sessions -----------------------------------------------------------
API_MAPPING = {
    "name": "api-agent", "records": "$", "id": "run", "session": "user", "time": "started",
    "outcome": {"path": "result", "pass": ["success"], "fail": ["failure"]},
    "feedback": {"score": "rating", "comment": "note", "map": {"down": 0, "up": 1}},
    "attributes": {"task_id": "task"},
    "events": "steps[*]", "event_time": "t",
    "messages": [{"role": "user", "content": "ask"},
                 {"role": {"path": "who", "map": {"bot": "assistant"}}, "content": "say", "name": "who"},
                 {"role": "tool", "content": "observation"}],
    "usage": {"input_tokens": "tokens.in", "output_tokens": "tokens.out", "model": "model"},
    "actions": [{"pattern": r"^(?P<method>GET) (?P<url>\S+)$", "tool": "http_{method}"},
                {"pattern": r"^POST (?P<url>\S+)\n(?P<body>\{.*\})$", "tool": "http_post", "as_json": ["body"]},
                {"pattern": r"^FINISH\((?P<answer>.*)\)$", "tool": "finish", "as_json": ["answer"], "result": "none"}],
}
API_LINES = [
    {"run": "r1", "user": "u-7", "started": "2025-05-01T10:00:00Z", "task": "refund-3", "result": "success",
     "rating": "down", "note": "slow", "steps": [
         {"t": "2025-05-01T10:00:00Z", "ask": "Refund order 3"},
         {"t": "2025-05-01T10:00:02Z", "who": "bot", "model": "m-1", "tokens": {"in": 120, "out": 30},
          "say": "Looking it up.\nGET https://shop.example/orders?id=3"},
         {"t": "2025-05-01T10:00:03Z", "observation": '{"id": 3, "total": 12.5}'},
         {"t": "2025-05-01T10:00:05Z", "who": "bot", "tokens": {"in": 180},
          "say": 'POST https://shop.example/refunds\n{"order": 3, "amount": 12.5}'},
         {"t": "2025-05-01T10:00:06Z", "observation": "Error: refund window closed"},
         {"t": "2025-05-01T10:00:07Z", "who": "bot", "say": 'Sorry, too late.\nFINISH(["denied"])'}]},
    {"run": "r2", "user": "u-7", "started": "2025-05-01T11:00:00Z", "result": "failure",
     "steps": [{"ask": "Thanks anyway"}]},
]


def _write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_text_actions_become_tool_calls_with_their_results(tmp_path: Path) -> None:
    result = mapping_reader(parse_mapping(API_MAPPING))(_write_lines(tmp_path / "runs.jsonl", API_LINES))
    assert result.rejected == []
    (unit,) = result.units  # both runs are traces of user u-7's session
    assert (unit.unit_id, unit.kind, unit.outcome) == ("api-agent/session/u-7", "session", "fail")
    assert len(unit.trace_ids) == 2 and {s.session_id for s in unit.spans} == {"u-7"}
    assert unit.attributes["task_id"] == "refund-3" and unit.attributes["user.feedback.score"] == 0
    assert unit.attributes["user.feedback.comment"] == "slow"
    tools = sorted((s for s in unit.spans if s.kind == "tool"), key=lambda s: s.start_ns)
    calls = [(s.tool_call.name, s.tool_call.arguments) for s in tools if s.tool_call]
    assert calls == [("http_GET", {"method": "GET", "url": "https://shop.example/orders?id=3"}),
                     ("http_post", {"url": "https://shop.example/refunds", "body": {"order": 3, "amount": 12.5}})]
    assert [s.tool_result for s in tools] == ['{"id": 3, "total": 12.5}', "Error: refund window closed"]
    assert [s.status for s in tools] == ["ok", "error"]
    steps = [s for s in step_timeline(unit) if s.kind != "user" or s.text != "Thanks anyway"]
    assert [s.kind for s in steps] == ["user", "assistant", "tool_call", "tool_result", "tool_call", "tool_result",
                                       "assistant", "tool_call"]
    assert steps[1].text == "Looking it up." and steps[6].text == "Sorry, too late."  # the action lines taken out
    assert (steps[7].tool_name, steps[7].arguments) == ("finish", {"answer": ["denied"]})  # no result: no tool span
    llm = sorted((s for s in unit.spans if s.kind == "llm"), key=lambda s: s.start_ns)
    assert [(s.input_tokens, s.output_tokens, s.model) for s in llm] == [(120, 30, "m-1"), (180, None, None),
                                                                          (None, None, None)]
    assert min(s.start_ns for s in unit.spans) >= 1746093600 * 10**9 - 1  # 2025-05-01T10:00:00Z
    assert not any(s.synthetic_time for s in unit.spans)


def test_a_bad_record_is_rejected_naming_the_field_and_the_others_kept(tmp_path: Path) -> None:
    lines = [API_LINES[0], {"user": "u-8", "steps": [{"ask": "hi"}]},  # no run id
             {"run": "r3", "steps": [{"who": "narrator", "say": "Once upon a time"}]},
             {"run": "r4", "started": "yesterday", "steps": [{"ask": "hi"}]},
             {"run": "r5", "steps": []}]
    result = mapping_reader(parse_mapping(API_MAPPING))(_write_lines(tmp_path / "runs.jsonl", [*lines, "x"]))
    assert [u.unit_id for u in result.units] == ["api-agent/session/u-7"]
    assert [r.reason for r in result.rejected] == [
        "line 2: id: 'run' is missing",
        "line 3: event 0: messages.1.role: 'narrator' is not a role; map it under messages.1.role.map or give "
        "messages.1.role.default",
        "line 4: time: 'yesterday' is not a timestamp",
        "line 5: events: 'steps[*]' found nothing in the record",
        "line 6: records: '$' selected a string, not an object or a list"]


@pytest.mark.parametrize("change, problem", [
    ({"events": "steps[*"}, "events: bad path 'steps[*' at character 6"),
    ({"messages": [{"role": "narrator"}]}, "messages.0.role: 'narrator' is not valid: expected 'system', 'user', "
                                           "'assistant', 'tool' or {path, map, default}"),
    ({"actions": [{"pattern": "(", "tool": "t"}]}, "actions.0.pattern: not a regular expression"),
    ({"actions": [{"pattern": "GET (?P<url>.*)", "tool": "http_{verb}"}]}, "actions.0: names groups the pattern "
                                                                          "does not have: verb"),
    ({"outcome": {"path": "result"}}, "outcome: give pass, fail or pass_at"),
    ({"records": 3}, "records: Input should be a valid string"),
    ({"unknown_field": 1}, "unknown_field: Extra inputs are not permitted"),
])
def test_a_bad_mapping_file_names_the_field(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**API_MAPPING, **change}))
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_mapping(path)
    code, out = _ingest(tmp_path / "ws", "--mapping", str(path), str(DEVAI))
    assert code == 2 and str(path) in " ".join(str(out).split())
    assert not (tmp_path / "ws" / ".assay").exists()


def test_a_pretty_printed_list_of_records(tmp_path: Path) -> None:
    mapping = parse_mapping({**API_MAPPING, "records": "runs[*]", "session": None})
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": API_LINES}, indent=2))
    result = mapping_reader(mapping)(path)
    assert [u.unit_id for u in result.units] == ["api-agent/r1", "api-agent/r2"] and result.rejected == []
    assert [u.outcome for u in result.units] == ["pass", "fail"]


def test_paths() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": None}, {"c": 3}], "x.y": 5}}
    assert parse_path("a.b[*].c").values(data) == [1, 3]
    assert parse_path("a.b[-1].c").first(data) == 3 and parse_path('a["x.y"]').first(data) == 5
    assert parse_path("$").first(data) is data and parse_path("a.nope[0]").first(data) is None
    for bad in ("a[", "a[0]b", "a..b"):
        with pytest.raises(ValueError, match="bad path"):
            parse_path(bad)


def test_the_schema_is_shipped_and_the_docs_mappings_follow_it() -> None:
    shipped = json.loads(resources.files("assay.traces.mapping").joinpath("mapping.schema.json").read_text())
    assert shipped == mapping_json_schema()  # regenerate the file when the format changes
    files = sorted(MAPPINGS.glob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        jsonschema.validate(yaml.safe_load(path.read_text()), shipped)
        load_mapping(path)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "messages": [{"role": "narrator"}]}, shipped)
