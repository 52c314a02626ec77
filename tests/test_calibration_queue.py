"""``assay queue --for-calibration NAME``: the unlabelled units whose labels would help certify NAME most."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay._cli.main import app
from assay.calibration.labelling import _candidate, _Evidence
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.traces import read_file
from assay.traces.model import Step, Unit

from .conftest import AIRLINE

CRITERION = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout if "--json" in args else " ".join(result.output.split())


def reads_the_reward(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """A second evaluator of the same criterion that disagrees with the first on some units."""
    return (1.0 if unit.outcome == "pass" else 0.0), "the environment's reward"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 airline runs, 40 of them labelled (few fails), two evaluators of the criterion, both backfilled."""
    ws = tmp_path_factory.mktemp("queue")
    assert _run(ws, "ingest", str(AIRLINE))[0] == 0
    assert _run(ws, "criteria", "add", "0", CRITERION["text"], "--name", "tool-ok")[0] == 0
    units = read_file(AIRLINE).units[:40]
    lines = [json.dumps({"unit": u.unit_id, "annotator": "ann", "criterion": "tool-ok",
                         "label": "fail" if u.has_error else "pass"}) for u in units]
    (ws / "labels.jsonl").write_text("\n".join(lines) + "\n")
    assert _run(ws, "labels", "import", str(ws / "labels.jsonl"))[0] == 0
    for name, fn in (("no-tool-errors", "assay.evaluators.checks:no_tool_errors"),
                     ("reward", "tests.test_calibration_queue:reads_the_reward")):
        save_evaluator(EvaluatorDef(name=name, kind="code", dimension="tool use", criterion=CRITERION,
                                    code={"callable": fn}), ws / "evaluators" / f"{name}.yaml")
    return ws


def test_queue_before_scoring_says_to_score_first(ws: Path) -> None:
    code, out = _run(ws, "queue", "--for-calibration", "no-tool-errors", "--json")
    assert code == 0, out
    queue = json.loads(out)
    assert queue["short_class"] == "fail" and "score it first" in queue["notes"][0]
    assert len(queue["unit_ids"]) == 10


def test_queue_prefers_the_short_class_and_disputed_units(ws: Path) -> None:
    for name in ("no-tool-errors", "reward"):
        assert _run(ws, "score", "--evaluator", name, "--units", "all")[0] == 0
    code, out = _run(ws, "calibrate", "no-tool-errors", "--json")
    assert code == 0 and json.loads(out)["status"] == "draft"
    labelled = {json.loads(line)["unit"] for line in (ws / "labels.jsonl").read_text().splitlines()}
    code, out = _run(ws, "queue", "--for-calibration", "no-tool-errors", "--size", "25", "--json")
    assert code == 0, out
    queue = json.loads(out)
    assert queue["short_class"] == "fail" and queue["balance"]["fail"] < queue["balance"]["pass"]
    items = queue["items"]
    assert not labelled & set(queue["unit_ids"]) and len(items) == 25
    # every unit the evaluator fails (the class in short supply) comes first, disputed ones before the rest
    says_fail = [i for i in items if i["verdict"] == "fail"]
    assert says_fail and items[:len(says_fail)] == says_fail
    assert all("this evaluator says fail" in i["reasons"][0] for i in says_fail)
    disputed = [i for i in says_fail if any("evaluators disagree" in r for r in i["reasons"])]
    assert disputed and says_fail[:len(disputed)] == disputed
    code, out = _run(ws, "queue", "--for-calibration", "no-tool-errors")
    assert code == 0 and "short of fail" in out and "evaluators disagree" in out


def test_uncertain_and_unscored_units_rank_up() -> None:
    sure = _candidate("a", _Evidence(own=("pass", 1.0)), "fail", 0.5)
    near = _candidate("b", _Evidence(own=("pass", 0.55)), "fail", 0.5)
    unscored = _candidate("c", _Evidence(own=("unscored", None)), "fail", 0.5)
    short = _candidate("d", _Evidence(own=("fail", 0.0)), "fail", 0.5)
    assert sure.priority == 0 and near.priority == pytest.approx(0.9) and unscored.priority == 1.0
    assert short.priority == 2.0 and "near the pass score" in near.reasons[0]


def test_queue_needs_a_signature_or_an_evaluator(ws: Path) -> None:
    assert _run(ws, "queue")[0] == 2
    assert _run(ws, "queue", "1", "--for-calibration", "no-tool-errors")[0] == 2
    code, out = _run(ws, "queue", "--for-calibration", "nope")
    assert code == 2 and "nope" in out
