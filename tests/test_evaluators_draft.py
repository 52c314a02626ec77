"""Drafting evaluators from a criterion: few-shot from the train split only; code checks for named facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.calibration.draft import draft_evaluators, propose_checks
from assay.evaluators import EvaluationResult, evaluate_many, load_evaluators, render_prompt
from assay.settings import load_settings
from assay.traces import read_file
from tests.conftest import AIRLINE

CRITERION = ('The agent never calls cancel_reservation for a basic-economy booking, and tells the user '
             '"anything else" it can help with.')


def _has_call(run: dict[str, object], tool: str) -> bool:
    return any(c["function"]["name"] == tool for m in run["traj"]  # type: ignore[attr-defined]
               for c in (m.get("tool_calls") or []))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    store = Store(load_settings(ws).resolved_store_url())
    units = read_file(AIRLINE).units
    store.add_units(units)
    add_criterion(store, CRITERION, name="no-basic-cancel")
    runs = json.loads(AIRLINE.read_text())
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator="ann", criterion="no-basic-cancel",
                                       label="fail" if _has_call(r, "cancel_reservation") else "pass",
                                       rationale="looked at the cancellations")  # type: ignore[arg-type]
                            for u, r in zip(units, runs, strict=True)])
    store.close()
    return ws


def test_draft_uses_train_examples_and_proposes_checks(ws: Path) -> None:
    store = Store(load_settings(ws).resolved_store_url())
    draft = draft_evaluators(store, "no-basic-cancel", shots_per_label=2)
    assert len(draft.examples) == 4
    assert all(draft.split.assignment[u] == "train" for u in draft.examples)
    prompt = render_prompt(draft.judge, read_file(AIRLINE).units[0])
    assert prompt.count("Example ") == 4 and "verdict: fail; looked at the cancellations" in prompt
    assert draft.judge.kind == "llm_judge" and draft.judge.criterion.text == CRITERION
    by_name = {c.name: c for c in draft.checks}
    assert set(by_name) == {"no-basic-cancel-no-cancel-reservation", "no-basic-cancel-phrase-1"}
    tool_check = by_name["no-basic-cancel-no-cancel-reservation"]
    assert tool_check.code is not None and tool_check.code.args == {"tool": "cancel_reservation", "expected": False}
    assert by_name["no-basic-cancel-phrase-1"].code.args == {"phrase": "anything else"}  # type: ignore[union-attr]
    # the proposed check agrees with an independent reading of the raw runs
    units = read_file(AIRLINE).units
    results = evaluate_many(tool_check, units)
    runs = json.loads(AIRLINE.read_text())
    expected = {u.unit_id: "fail" if _has_call(r, "cancel_reservation") else "pass"
                for u, r in zip(units, runs, strict=True)}
    assert {r.unit_id: r.verdict for r in results if isinstance(r, EvaluationResult)} == expected
    assert 0 < list(expected.values()).count("fail") < 200


def test_required_tools_and_no_facts() -> None:
    required = propose_checks("c", 1, "The agent calls get_user_details before any change.", ["get_user_details"])
    assert required[0].code is not None and required[0].code.args == {"tool": "get_user_details", "expected": True}
    assert propose_checks("c", 1, "The agent is polite.", ["get_user_details"]) == []


def test_cli_writes_the_drafts(ws: Path) -> None:
    result = CliRunner().invoke(app, ["--workspace", str(ws), "evaluators", "draft", "--criterion", "no-basic-cancel"])
    assert result.exit_code == 0, result.output
    names = {d.name for d in load_evaluators(ws / "evaluators")}
    assert names == {"no-basic-cancel-judge", "no-basic-cancel-no-cancel-reservation", "no-basic-cancel-phrase-1"}
    again = CliRunner().invoke(app, ["--workspace", str(ws), "evaluators", "draft", "--criterion", "no-basic-cancel"])
    assert again.exit_code == 0 and again.output.count("kept") == 3
