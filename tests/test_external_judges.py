"""External judges: ``assay scores import`` of a real file built from real units (with 25 garbage values), then
``assay calibrate`` and ``assay gate`` treat the ``external`` evaluator like any other."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay._store.tables import RunRow, ScoreRow
from assay.evaluators import EvaluatorDef, ExternalEvaluatorDef, evaluate, save_evaluator
from assay.evaluators.external import ExternalValue, read_value
from assay.exceptions import ConfigError
from assay.settings import load_settings
from assay.signals import list_signals
from assay.traces import read_file

from .conftest import AIRLINE

CRITERION = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}
EXTERNAL = EvaluatorDef(name="team-tool-judge", kind="external", dimension="tool use", criterion=CRITERION,
                        external={"name": "tool_success", "labels": {"correct": 1.0, "incorrect": 0.0},
                                  "scale": [0, 10]})
GARBAGE: list[dict[str, Any]] = [
    {"value": "N/A"}, {"value": ""}, {"value": "ten"}, {"value": 11}, {"value": -3}, {"value": "NaN"},
    {"value": "inf"}, {"value": "1e9"}, {"value": "10/10"}, {"value": "pass?"}, {"value": None},
    {"value": None, "label": "maybe"}, {"value": "", "label": "???"}, {"value": 10.5}, {"value": "0,5"},
    {"value": [1]}, {"value": {"score": 1}}, {"value": "null"}, {"value": "-0.1"}, {"value": "ERROR: timeout"},
    {"value": "  "}, {"value": 100}, {"value": "1 0"}, {"value": "✓"}, {"value": -1e-9}]


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout if "--json" in args else " ".join(result.output.split())


def _rows(units: list[Any]) -> list[dict[str, Any]]:
    """The team's judge on every unit: 0 on a tool error, 10 otherwise (on its 0-10 scale), by unit id or by trace
    id alternately; 25 of the passing units carry a garbage value instead (labels kept for a few rows)."""
    passing = [u.unit_id for u in units if not u.has_error]
    garbage = dict(zip(passing[::5][:25], GARBAGE, strict=True))
    rows = []
    for n, u in enumerate(units):
        ref = {"unit": u.unit_id} if n % 2 else {"trace": u.trace_ids[0]}
        row: dict[str, Any] = {**ref, "evaluator": "tool_success", "value": 0 if u.has_error else 10,
                               "reason": "a tool returned an error" if u.has_error else "every tool call succeeded",
                               "model": "gpt-4o-2024-08-06", "version": "tool-judge-v3",
                               "time": f"2026-02-10T17:{n // 60:02d}:{n % 60:02d}Z"}
        if n % 7 == 0:
            row["label"] = "incorrect" if u.has_error else "correct"
        if u.unit_id in garbage:
            row = {**row, "label": None, **garbage[u.unit_id]}  # no label to fall back on
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 airline runs with human labels on tool-ok, an external evaluator, a code evaluator, a verdict file."""
    ws = tmp_path_factory.mktemp("external")
    assert _run(ws, "ingest", str(AIRLINE))[0] == 0
    assert _run(ws, "criteria", "add", "0", CRITERION["text"], "--name", "tool-ok")[0] == 0
    units = read_file(AIRLINE).units
    (ws / "labels.jsonl").write_text("".join(json.dumps({"unit": u.unit_id, "annotator": "ann", "criterion": "tool-ok",
                                                         "label": "fail" if u.has_error else "pass"}) + "\n"
                                             for u in units))
    assert _run(ws, "labels", "import", str(ws / "labels.jsonl"))[0] == 0
    save_evaluator(EXTERNAL, ws / "evaluators" / "team-tool-judge.yaml")
    save_evaluator(EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use", criterion=CRITERION,
                                code={"callable": "assay.evaluators.checks:no_tool_errors"}),
                   ws / "evaluators" / "no-tool-errors.yaml")
    lines = [json.dumps(r) for r in _rows(units)]
    lines += ['{"unit": "tau-airline/no-such-task", "evaluator": "tool_success", "value": 10}',
              '{"trace": "0123456789abcdef0123456789abcdef", "evaluator": "tool_success", "value": 10}',
              json.dumps({"unit": units[0].unit_id, "evaluator": "no-tool-errors", "value": 1}),
              json.dumps({"unit": units[0].unit_id, "evaluator": "hallucination", "value": 1}),
              json.dumps({"evaluator": "tool_success", "value": 1}), "{broken", "[1, 2]"]
    (ws / "verdicts.jsonl").write_text("\n".join(lines) + "\n")
    return ws


def test_import_stores_fitting_values_and_keeps_garbage_unscored(ws: Path) -> None:
    code, out = _run(ws, "scores", "import", str(ws / "verdicts.jsonl"), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["imported"] == 200 and result["scored"] == {"team-tool-judge": 175}
    assert result["unscored"] == {"team-tool-judge": 25}
    reasons = [why for _, why in result["rejected"]]
    assert len(reasons) == 7 and "unknown unit 'tau-airline/no-such-task'" in reasons[0]
    assert "no stored unit holds trace" in reasons[1] and "is a code evaluator, not external" in reasons[2]
    assert "no external evaluator named 'hallucination'" in reasons[3] and reasons[4] == "no unit and no trace id"
    assert "invalid JSON" in reasons[5] and "expected a JSON object" in reasons[6]
    store = Store(load_settings(ws).resolved_store_url())
    with store.session() as s:
        rows = list(s.scalars(select(ScoreRow).where(ScoreRow.run_id == result["run_id"])))
        run = s.get(RunRow, result["run_id"])
        assert run is not None and run.kind == "import"
        lineage = run.params["lineage"][f"team-tool-judge@{rows[0].evaluator_version}"]
    store.close()
    unscored = [r for r in rows if r.status == "unscored"]
    assert len(unscored) == 25 and all(r.verdict is None and r.score is None and r.raw for r in unscored)
    assert {r.parse_status for r in unscored} == {"failed"}  # as a judge reply no verdict could be read from
    assert {r.parse_status for r in rows if r.status == "scored"} == {"ok"}
    assert {json.dumps(json.loads(r.raw or "{}").get("value")) for r in unscored} >= {'"N/A"', '"NaN"', "11", "-3"}
    assert any("outside the scale [0, 10]" in r.reason for r in unscored)
    assert any("is not a number" in r.reason for r in unscored)
    assert all(r.judge_model == "gpt-4o-2024-08-06" for r in rows)
    assert lineage["judge_model"] == "gpt-4o-2024-08-06" and lineage["judge_parameters"]["provider"] == "external"
    scored = [r for r in rows if r.status == "scored"]
    assert {r.score for r in scored} == {0.0, 1.0} and all(json.loads(r.raw or "")["version"] == "tool-judge-v3"
                                                         for r in scored)


def test_calibrate_and_gate_treat_the_external_judge_like_any_other(ws: Path) -> None:
    _run(ws, "scores", "import", str(ws / "verdicts.jsonl"))
    code, out = _run(ws, "calibrate", "team-tool-judge", "--split", "0.2,0.2,0.6", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["n_unscored"] == 25 and report["agreement"]["n"] == 175 and report["agreement"]["accuracy"] == 1.0
    assert report["status"] == "active" and report["judge_model"] is None and report["judge"] is None
    assert all(b["clears"] for b in report["certification"]["bounds"])
    code, out = _run(ws, "gate", "--max-unscored", "0.2", "--json")
    assert code == 0, out
    item = json.loads(out)["items"][0]
    assert item["evaluator"] == "team-tool-judge" and item["n"] == 175 and item["n_unscored"] == 25
    assert item["judge_model"] == "gpt-4o-2024-08-06"
    code, out = _run(ws, "gate", "--json")  # 12.5% unscored is above the default tolerance of 10%
    assert code == 3, out


def test_an_active_external_evaluators_failed_imports_become_failure_signals(ws: Path, tmp_path: Path) -> None:
    _run(ws, "scores", "import", str(ws / "verdicts.jsonl"))
    assert _run(ws, "calibrate", "team-tool-judge", "--split", "0.2,0.2,0.6")[0] == 0  # active (test above)
    failing = [u for u in read_file(AIRLINE).units if not u.has_error][1:4]  # passed until now: no signal yet
    path = tmp_path / "later.jsonl"
    path.write_text("".join(json.dumps({"unit": u.unit_id, "evaluator": "tool_success", "value": 0,
                                        "reason": "a tool error seen later"}) + "\n" for u in failing))
    assert _run(ws, "scores", "import", str(path))[0] == 0
    store = Store(load_settings(ws).resolved_store_url())
    try:
        found = {u.unit_id: list_signals(store, unit_id=u.unit_id, kind="evaluator_fail") for u in failing}
    finally:
        store.close()
    for unit_id, signals in found.items():
        mine = [sg for sg in signals if sg.lineage.name == "team-tool-judge"]
        assert len(mine) == 1, (unit_id, signals)
        assert "a tool error seen later" in mine[0].evidence and mine[0].lineage.run_id.startswith("import-")


def test_a_csv_file_and_a_file_with_nothing_to_import(ws: Path, tmp_path: Path) -> None:
    units = read_file(AIRLINE).units[:3]
    path = tmp_path / "verdicts.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["unit_id", "evaluator", "score", "label", "explanation", "model", "version",
                                     "timestamp"])
        writer.writeheader()
        for u in units:
            writer.writerow({"unit_id": u.unit_id, "evaluator": "tool_success", "score": "",
                             "label": "Incorrect" if u.has_error else "CORRECT", "explanation": "read the run",
                             "model": "m", "version": "", "timestamp": ""})
    code, out = _run(ws, "scores", "import", str(path), "--json")
    assert code == 0 and json.loads(out)["scored"] == {"team-tool-judge": 3}, out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"unit": "nope", "evaluator": "tool_success", "value": 1}\n{"evaluator": "x"}\n')
    code, out = _run(ws, "scores", "import", str(bad))
    assert code == 1 and "nothing imported" in out and "unknown unit 'nope'" in out
    assert _run(ws, "scores", "import", str(tmp_path / "missing.jsonl"))[0] == 2


def test_reading_values_and_the_store_it_needs() -> None:
    defn = EXTERNAL
    assert isinstance(defn, ExternalEvaluatorDef)
    assert read_value(defn, ExternalValue(value="7.5")).score == 0.75  # type: ignore[union-attr]
    assert read_value(defn, ExternalValue(value=11, label="Correct")).verdict == "pass"  # type: ignore[union-attr]
    assert read_value(defn, ExternalValue(value=True)).score == 1.0  # type: ignore[union-attr]
    assert read_value(defn, ExternalValue(label="maybe")) == "label 'maybe' is not one of correct, incorrect and " \
                                                             "there is no value"
    with pytest.raises(ConfigError, match="reads its imported scores from the store"):
        evaluate(defn, read_file(AIRLINE).units[0])


def test_an_external_judge_on_an_ordinal_or_categorical_criterion_reads_the_scale() -> None:
    ordinal = {**CRITERION, "scale": {"kind": "ordinal", "levels": [{"value": v, "anchor": f"level {v}"}
                                                                  for v in range(1, 6)]}}
    defn = EvaluatorDef(name="graded", kind="external", dimension="d", criterion=ordinal, pass_score=0.75)
    assert isinstance(defn, ExternalEvaluatorDef)
    four = read_value(defn, ExternalValue(value=4))
    assert not isinstance(four, str) and (four.value, four.score, four.verdict) == (4, 0.75, "pass")
    three = read_value(defn, ExternalValue(value="2", label="3"))  # the label wins
    assert not isinstance(three, str) and (three.value, three.verdict) == (3, "fail")
    assert "is not a value of this ordinal scale" in str(read_value(defn, ExternalValue(value=7)))
    assert read_value(defn, ExternalValue()) == "no value and no label"
    kinds = {**CRITERION, "scale": {"kind": "categorical", "classes": [{"name": "ok", "score": 1.0},
                                                                       {"name": "wrong-tool"}, {"name": "bad-args"}]}}
    cat = EvaluatorDef(name="category", kind="external", dimension="d", criterion=kinds)
    assert isinstance(cat, ExternalEvaluatorDef)
    read = read_value(cat, ExternalValue(label="Wrong-Tool"))
    assert not isinstance(read, str) and (read.value, read.verdict) == ("wrong-tool", "fail")
    assert "is not a value of this categorical scale" in str(read_value(cat, ExternalValue(label="slow")))
    with pytest.raises(ValueError, match="a pairwise criterion compares two"):
        EvaluatorDef(name="pref", kind="external", dimension="d",
                     criterion={**CRITERION, "scale": {"kind": "pairwise"}})
