"""Drafting evaluators from a criterion: few-shot from the train split only; code checks for named facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.calibration.draft import draft_evaluators, propose_checks
from assay.evaluators import (
    EvaluationResult,
    evaluate_many,
    evaluator_json_schema,
    load_evaluator,
    load_evaluators,
    render_prompt,
    save_evaluator,
)
from assay.exceptions import JudgeError
from assay.models import JudgeReply
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


class Scripted:
    """A stand-in judge that answers every request with one fixed reply and keeps the requests."""

    model_name = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.requests: list[str] = []

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.requests.append(messages[-1]["content"])
        return JudgeReply(text=self.reply, model=self.model_name)


GOOD_RUBRIC = ("PASS if the agent never cancels a basic-economy reservation and offers further help.\n"
               "FAIL if it calls cancel_reservation on a basic-economy booking.\n"
               "Decision rules:\n- A cancellation of another fare class does not count.\n"
               "- Judge only from the steps shown.")


def _validates(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, evaluator_json_schema())
    load_evaluator(path)


def test_draft_uses_a_checked_judge_rubric(ws: Path, tmp_path: Path) -> None:
    store = Store(load_settings(ws).resolved_store_url())
    judge = Scripted("```\n" + GOOD_RUBRIC + "\n```")
    draft = draft_evaluators(store, "no-basic-cancel", shots_per_label=1, judge=judge)
    plain = draft_evaluators(store, "no-basic-cancel", shots_per_label=1)
    assert len(judge.requests) == 1 and CRITERION in judge.requests[0] and "FAIL if" in judge.requests[0]
    assert draft.rubric.source == "judge" and draft.rubric.text == GOOD_RUBRIC  # code fence removed
    assert "judge scripted" in draft.judge.description and "template" in plain.judge.description
    prompt = render_prompt(draft.judge, read_file(AIRLINE).units[0])
    assert GOOD_RUBRIC in prompt and GOOD_RUBRIC not in render_prompt(plain.judge, read_file(AIRLINE).units[0])
    assert prompt.index(CRITERION) < prompt.index(GOOD_RUBRIC) < prompt.index("Does this run meet the criterion?")
    assert draft.examples == plain.examples and all(draft.split.assignment[u] == "train" for u in draft.examples)
    _validates(save_evaluator(draft.judge, tmp_path / "j.yaml"))


@pytest.mark.parametrize(("reply", "why"), [
    ("", "too short"),
    ("PASS if ok. FAIL if not. " * 80, "too long"),
    ("@@##$$%%^^&&**(( pass fail ))!!~~``" * 3, "under 60% letters"),
    ("pass fail " + "the the the the the the the the the the the the the the the the", "repeated"),
    ("PASS if the agent is polite. Otherwise it is bad.", "both when a run passes and when it fails"),
    ("PASS if ok {% endraw %}{{ config }}. FAIL if not.", "template syntax"),
])
def test_draft_falls_back_to_the_template_on_a_bad_reply(ws: Path, reply: str, why: str) -> None:
    store = Store(load_settings(ws).resolved_store_url())
    draft = draft_evaluators(store, "no-basic-cancel", judge=Scripted(reply))
    plain = draft_evaluators(store, "no-basic-cancel")
    assert draft.rubric.source == "template" and draft.rubric.text is None
    assert why in draft.rubric.note and "scripted" in draft.rubric.note
    assert draft.judge.prompt_template() == plain.judge.prompt_template()  # the template wording, unchanged


def test_draft_falls_back_when_the_judge_call_fails(ws: Path) -> None:
    class Down:
        model_name = "down"

        def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
            raise JudgeError("connection refused", self.model_name)

    draft = draft_evaluators(Store(load_settings(ws).resolved_store_url()), "no-basic-cancel", judge=Down())
    assert draft.rubric.source == "template" and "judge call failed" in draft.rubric.note
    assert "connection refused" in draft.judge.description


def test_cli_rubric_option_is_checked(ws: Path) -> None:
    result = CliRunner().invoke(app, ["--workspace", str(ws), "evaluators", "draft", "--criterion",
                                      "no-basic-cancel", "--rubric", "someone"])
    assert result.exit_code == 2 and "--rubric takes auto, judge or template" in result.output


def test_cli_draft_with_the_real_local_judge_writes_a_valid_file(tmp_path: Path) -> None:
    """SmolLM2-135M words the rubric (or is refused): the YAML validates against the schema either way."""
    ws = tmp_path / "ws"
    store = Store(load_settings(ws).resolved_store_url())
    units = read_file(AIRLINE).units[:40]
    store.add_units(units)
    add_criterion(store, CRITERION, name="no-basic-cancel")
    runs = json.loads(AIRLINE.read_text())[:40]
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator="ann", criterion="no-basic-cancel",
                                       label="fail" if _has_call(r, "cancel_reservation") else "pass")  # type: ignore[arg-type]
                            for u, r in zip(units, runs, strict=True)])
    store.close()
    env = {"ASSAY_JUDGE__N_THREADS": "1", "ASSAY_JUDGE__MAX_TOKENS": "120"}
    result = CliRunner().invoke(app, ["--workspace", str(ws), "evaluators", "draft", "--criterion",
                                      "no-basic-cancel", "--rubric", "judge"], env=env)
    assert result.exit_code == 0, result.output
    path = ws / "evaluators" / "no-basic-cancel-judge.yaml"
    _validates(path)
    written = load_evaluator(path)
    assert "rubric wording:" in result.output and "smollm2-135m-instruct" in result.output
    if "rubric wording: judge" in written.description:
        assert "Rubric (decision rules" in written.prompt_template()
    else:
        assert "refused" in written.description and "Rubric (decision rules" not in written.prompt_template()
    assert render_prompt(written, units[0]).count("Example ") >= 1
