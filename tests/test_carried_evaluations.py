"""Evaluation results carried in traces, stored as scores of external evaluators: Langfuse scores in the real
framework exports, OpenInference annotations on real OpenInference spans, OTel gen_ai.evaluation.result events
(span events, and assay's own export read back)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assay._cli.main import app
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.traces import read_file
from assay.traces.evaluations import carried_evaluations

from .conftest import AIRLINE, DATA

LANGFUSE = DATA / "langfuse-framework-traces" / "worker" / "src" / "__tests__" / "chatml" / "framework-traces"
OPENINFERENCE = (DATA / "otel-genai-openinference-samples" / "openinference" / "js" / "packages"
                 / "openinference-genai" / "test" / "__fixtures__" / "openinference_client_span_tool_calls.json")
CRITERION = {"name": "grounded", "version": 1, "text": "The answer states only what the tools returned."}


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout if "--json" in args else " ".join(result.output.split())


def _external(ws: Path, name: str, source: str, **spec: Any) -> None:
    save_evaluator(EvaluatorDef(name=name, kind="external", dimension="grounding", criterion=CRITERION,
                                external={"name": source, **spec}), ws / "evaluators" / f"{name}.yaml")


def _scores(ws: Path, evaluator: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), "scores", "export", "--jsonl", "--evaluator", evaluator])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_langfuse_scores_in_real_exports(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    code, out = _run(ws, "ingest", str(LANGFUSE), "--json")  # no external evaluator yet: counted, not stored
    assert code == 0, out
    evaluations = json.loads(out)["evaluations"]
    assert evaluations["found"] == 24 and evaluations["result"] is None
    assert evaluations["unmatched"] == {"correctness": 2, "hallucination": 11, "toxicity": 11}
    _external(ws, "hallucination-judge", "hallucination", invert=True)  # Langfuse's 1 means hallucinated
    code, out = _run(ws, "scores", "import", "--from-traces", "--json")
    assert code == 0, out
    result = json.loads(out)["result"]
    assert result["scored"] == {"hallucination-judge": 11} and result["unscored"] == {}
    scores = {s["unit_id"]: s for s in _scores(ws, "hallucination-judge")}
    claude = next(s for u, s in scores.items() if u.endswith("097f1d8982fa909b8cffb14a166ec272"))
    assert claude["score"] == 0.0 and claude["verdict"] == "fail" and "fabricated" in claude["reason"]
    assert claude["run_kind"] == "import" and claude["judge_parameters"]["provider"] == "external"
    # ingesting the same exports again imports nothing twice
    code, out = _run(ws, "ingest", str(LANGFUSE), "--json")
    assert code == 0 and json.loads(out)["evaluations"]["unchanged"] == 11, out
    assert len(_scores(ws, "hallucination-judge")) == 11


def _hex(key: str, n: int) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:n]


def _any(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


def _span(key: str, attributes: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"traceId": _hex(key, 32), "spanId": _hex(key + "s", 16), "name": "llm", "startTimeUnixNano": "1000",
            "endTimeUnixNano": "2000", "attributes": [{"key": k, "value": _any(v)} for k, v in attributes.items()],
            "events": [{"name": e["name"], "timeUnixNano": "1500",
                        "attributes": [{"key": k, "value": _any(v)} for k, v in e["attributes"].items()]}
                       for e in events or []]}


def test_openinference_annotations_and_otel_events_on_spans(tmp_path: Path) -> None:
    """The real OpenInference LLM span, annotated per the spec (flattened and as a JSON list, an LLM judge and a
    person), and an OTel GenAI span with gen_ai.evaluation.result events."""
    base = json.loads(OPENINFERENCE.read_text())
    judged = {**base, "annotations.0.annotation.name": "grounded", "annotations.0.annotation.label": "grounded",
              "annotations.0.annotation.score": 1.0, "annotations.0.annotation.annotator_kind": "LLM",
              "annotations.0.annotation.explanation": "The answer repeats the tool's weather.",
              "annotations.1.annotation.name": "grounded", "annotations.1.annotation.label": "grounded",
              "annotations.1.annotation.annotator_kind": "HUMAN"}
    listed = {**base, "evaluations": json.dumps([{"evaluation.name": "grounded", "evaluation.label": "ungrounded",
                                                  "evaluation.score": 0, "evaluation.annotator_kind": "LLM",
                                                  "evaluation.metadata": json.dumps({"model": "gpt-4o"})}])}
    event = {"name": "gen_ai.evaluation.result", "attributes": {
        "gen_ai.evaluation.name": "grounded", "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.evaluation.explanation": "half the claims have no source", "gen_ai.response.model": "judge-m"}}
    failed = {"name": "gen_ai.evaluation.result", "attributes": {"gen_ai.evaluation.name": "grounded",
                                                                  "error.type": "timeout"}}
    spans = [_span("a", judged), _span("b", listed), _span("c", {"gen_ai.operation.name": "chat"}, [event]),
             _span("d", {"gen_ai.operation.name": "chat"}, [failed])]
    path = tmp_path / "traces.json"
    path.write_text(json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}))
    found = [e for u in read_file(path).units for e in carried_evaluations(u)]
    assert [(e.origin, e.annotator_kind) for e in found] == [
        ("openinference", "LLM"), ("openinference", "HUMAN"), ("openinference", "LLM"), ("otel-event", None),
        ("otel-event", None)]
    ws = tmp_path / "ws"
    ws.mkdir()
    _external(ws, "grounded-judge", "grounded", labels={"grounded": 1.0, "ungrounded": 0.0})
    code, out = _run(ws, "ingest", str(path), "--json")
    assert code == 0, out
    evaluations = json.loads(out)["evaluations"]
    assert evaluations["human"] == 1 and evaluations["result"]["scored"] == {"grounded-judge": 3}
    assert evaluations["result"]["unscored"] == {"grounded-judge": 1}
    scores = {s["unit_id"]: s for s in _scores(ws, "grounded-judge")}
    by_trace = {key: scores[f"trace/{_hex(key, 32)}"] for key in "abcd"}
    assert by_trace["a"]["verdict"] == "pass" and by_trace["b"]["verdict"] == "fail"
    assert by_trace["b"]["judge_model"] == "gpt-4o" and by_trace["c"]["score"] == 0.25
    assert by_trace["c"]["verdict"] == "fail" and by_trace["c"]["judge_model"] == "judge-m"
    assert by_trace["d"]["status"] == "unscored" and "the source reported an error: timeout" in by_trace["d"]["reason"]


def test_assay_own_otel_export_reads_back_as_an_external_judge(tmp_path: Path) -> None:
    """Workspace A scores airline runs with a code check and exports OTel events; workspace B, with the same
    runs and human labels, imports them as an external judge and calibrates it."""
    runs = [r for r in json.loads(AIRLINE.read_text()) if r["trial"] == 0]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    a, b = tmp_path / "a", tmp_path / "b"
    criterion = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}
    for ws in (a, b):
        ws.mkdir()
        assert _run(ws, "ingest", str(tmp_path / "runs.json"))[0] == 0
    save_evaluator(EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use", criterion=criterion,
                                code={"callable": "assay.evaluators.checks:no_tool_errors"}),
                   a / "evaluators" / "no-tool-errors.yaml")
    assert _run(a, "score", "--evaluator", "no-tool-errors", "--units", "all")[0] == 0
    assert _run(a, "scores", "export", "--otel", "-o", str(tmp_path / "events.jsonl"))[0] == 0
    save_evaluator(EvaluatorDef(name="their-tool-check", kind="external", dimension="tool use", criterion=criterion,
                                external={"name": "no-tool-errors"}), b / "evaluators" / "their-tool-check.yaml")
    code, out = _run(b, "scores", "import", str(tmp_path / "events.jsonl"), "--json")
    assert code == 0, out
    assert json.loads(out)["scored"] == {"their-tool-check": 50} and json.loads(out)["rejected"] == []
    units = read_file(tmp_path / "runs.json").units
    assert _run(b, "criteria", "add", "0", criterion["text"], "--name", "tool-ok")[0] == 0
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(
        {"unit": u.unit_id, "annotator": "ann", "criterion": "tool-ok", "label": "fail" if u.has_error else "pass"})
        + "\n" for u in units))
    assert _run(b, "labels", "import", str(tmp_path / "labels.jsonl"))[0] == 0
    code, out = _run(b, "calibrate", "their-tool-check", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["agreement"]["n"] == 50 and report["agreement"]["accuracy"] == 1.0


@pytest.mark.parametrize("bad", ["{}", '{"resourceLogs": 3}'])
def test_an_otel_file_with_no_evaluation_imports_nothing(tmp_path: Path, bad: str) -> None:
    (tmp_path / "ev.jsonl").write_text('{"resourceLogs": []}\n' + bad + "\n")
    code, out = _run(tmp_path, "scores", "import", str(tmp_path / "ev.jsonl"))
    assert code == 1 and "nothing imported" in out
