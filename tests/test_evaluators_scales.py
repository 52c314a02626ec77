"""Evaluators on every scale, on real tau-bench units: a judge or a code check returns a level, a class or a
preference; the prompt and the verdict schema follow the scale; a pairwise judge can be asked in both orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assay.annotations import CategoricalClass, CategoricalScale, OrdinalLevel, OrdinalScale, PairwiseScale
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    content_version,
    evaluate,
    evaluate_many,
    evaluate_pairs,
    load_evaluator,
    render_prompt,
    save_evaluator,
    verdict_schema,
)
from assay.evaluators.verdict import parse_verdict
from assay.exceptions import ConfigError, UsageError
from assay.models import JudgeReply
from assay.traces import Step, Unit, read_file
from tests.conftest import AIRLINE

LEVELS = OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=a) for v, a in enumerate(
    ("nothing booked right", "several mistakes", "one real mistake", "a slip", "all correct"), 1)))
CLASSES = CategoricalScale(classes=(CategoricalClass(name="ok", description="no failure", score=1.0),
                                    CategoricalClass(name="Tool error", description="a tool call failed"),
                                    CategoricalClass(name="Gave up", description="transferred to a human")))


@pytest.fixture(scope="module")
def units() -> list[Unit]:
    return read_file(AIRLINE).units[:6]


def judge_def(scale: Any, **changes: Any) -> EvaluatorDef:
    data = {"name": "graded", "kind": "llm_judge", "dimension": "booking",
            "criterion": {"name": "graded", "text": "The booking follows the user's request.",
                          "scale": scale.model_dump(mode="json")}}
    return EvaluatorDef.model_validate({**data, **changes})


class ScriptedJudge:
    """A judge (a JudgeClient) that answers each call with the next reply of a script, and keeps the prompts."""

    model_name = "scripted-judge"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts, self.schemas = list(replies), [], []  # type: ignore[var-annotated]

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.prompts.append(messages[-1]["content"])
        self.schemas.append(json_schema)
        return JudgeReply(text=self.replies.pop(0), model=self.model_name)


def error_count_level(steps: list[Step], unit: Unit) -> tuple[int, str]:
    """Ordinal check: 5 without tool errors, one level less per error, at least 1."""
    errors = sum(s.is_error for s in steps)
    return max(1, 5 - errors), f"{errors} tool error(s)"


def category_check(steps: list[Step], unit: Unit, off_scale: bool = False) -> str:
    if off_scale:
        return "Timeout"
    if any(s.is_error for s in steps):
        return "tool error"  # any case
    return "ok"


def longer_wins(steps: list[Step], unit: Unit, second_steps: list[Step], second: Unit) -> tuple[str, str]:
    """Pairwise check: the run with more steps is better (a tie when equal)."""
    a, b = len(steps), len(second_steps)
    return ("tie" if a == b else "first" if a > b else "second"), f"{a} vs {b} steps"


def test_a_binary_scale_changes_no_version(tmp_path: Path) -> None:
    binary = EvaluatorDef(name="x", kind="code", dimension="d", criterion={"name": "c", "text": "t"},
                          code={"callable": "assay.evaluators.checks:no_tool_errors"})
    spelled = EvaluatorDef(name="x", kind="code", dimension="d",
                           criterion={"name": "c", "text": "t", "scale": {"kind": "binary"}},
                           code={"callable": "assay.evaluators.checks:no_tool_errors"})
    assert content_version(binary) == content_version(spelled)
    ordinal = judge_def(LEVELS)
    assert content_version(ordinal) != content_version(judge_def(CLASSES))
    path = save_evaluator(ordinal, tmp_path / "graded.yaml")
    assert "scale:" in path.read_text() and load_evaluator(path) == ordinal
    with pytest.raises(ConfigError, match="come from the criterion's ordinal scale"):
        (tmp_path / "bad.yaml").write_text(path.read_text() + "judge: {labels: {good: 1.0, bad: 0.0}}\n")
        load_evaluator(tmp_path / "bad.yaml")


def test_an_ordinal_judge_sees_the_anchors_and_returns_a_level(units: list[Unit]) -> None:
    defn = judge_def(LEVELS)
    judge = ScriptedJudge(['{"reason": "one wrong date", "verdict": "3"}', '{"reason": "fine", "verdict": 5}',
                           "The booking is right apart from a slip.\nVerdict: 4", '{"verdict": "6"}'])
    results = evaluate_many(defn, units[:4], judge)
    assert all(f"{lv.value}: {lv.anchor}" in judge.prompts[0] for lv in LEVELS.levels)
    assert judge.schemas[0]["properties"]["verdict"]["enum"] == ["1", "2", "3", "4", "5"]
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    assert [(r.value, r.score) for r in scored] == [(3, 0.5), (5, 1.0), (4, 0.75)]
    assert scored[2].repaired  # "Verdict: 4" read from a line
    assert isinstance(results[3], EvaluatorFailure) and results[3].status == "unscored"
    assert "'6' is not one of 1, 2, 3, 4, 5" in results[3].error


def test_a_categorical_judge_names_a_class(units: list[Unit]) -> None:
    defn = judge_def(CLASSES)
    judge = ScriptedJudge(['{"reason": "the search failed", "verdict": "Tool Error"}',
                           '{"reason": "-", "verdict": "ok"}'])
    results = evaluate_many(defn, units[:2], judge)
    assert "- Gave up: transferred to a human" in judge.prompts[0]
    assert [(r.value, r.score, r.verdict) for r in results if isinstance(r, EvaluationResult)] == [
        ("Tool error", 0.0, "fail"), ("ok", 1.0, "pass")]


def test_code_checks_return_levels_and_classes(units: list[Unit]) -> None:
    ordinal = EvaluatorDef(name="levels", kind="code", dimension="d",
                           criterion={"name": "c", "text": "t", "scale": LEVELS.model_dump(mode="json")},
                           code={"callable": "tests.test_evaluators_scales:error_count_level"})
    results = evaluate_many(ordinal, units, None)
    assert all(isinstance(r, EvaluationResult) and r.value in (1, 2, 3, 4, 5) for r in results)
    assert {r.value for r in results if isinstance(r, EvaluationResult)} != {5}  # some airline runs hit errors
    category = EvaluatorDef(name="classes", kind="code", dimension="d",
                            criterion={"name": "c", "text": "t", "scale": CLASSES.model_dump(mode="json")},
                            code={"callable": "tests.test_evaluators_scales:category_check"})
    assert {r.value for r in evaluate_many(category, units, None) if isinstance(r, EvaluationResult)} <= {
        "ok", "Tool error"}
    off = category.model_copy(update={"code": category.code.model_copy(update={"args": {"off_scale": True}})})
    failed = evaluate(off, units[0], None)
    assert isinstance(failed, EvaluatorFailure) and failed.status == "error"
    assert "'Timeout' is not a value of this categorical scale (ok, Tool error, Gave up)" in failed.error


def test_a_pairwise_judge_compares_two_units_in_either_order(units: list[Unit]) -> None:
    defn = judge_def(PairwiseScale())
    a, b = units[0], units[1]
    judge = ScriptedJudge(['{"reason": "r", "verdict": "first"}', '{"reason": "r", "verdict": "first"}',
                           '{"reason": "r", "verdict": "tie"}'])
    original = evaluate_pairs(defn, [(a, b)], judge)[0]
    swapped = evaluate_pairs(defn, [(a, b)], judge, swapped=True)[0]
    assert isinstance(original, EvaluationResult) and isinstance(swapped, EvaluationResult)
    assert (original.value, original.second_unit_id, original.swapped) == ("first", b.unit_id, False)
    assert (swapped.value, swapped.swapped, swapped.score) == ("second", True, 0.0)  # b shown first won: flipped back
    assert original.score == 1.0 and judge.prompts[0] != judge.prompts[1]
    assert render_prompt(defn, a, second=b) == judge.prompts[0]
    assert render_prompt(defn, b, second=a) == judge.prompts[1]
    tie = evaluate_pairs(defn, [(a, b)], judge, swapped=True)[0]
    assert isinstance(tie, EvaluationResult) and tie.value == "tie" and tie.score == 0.5
    alone = evaluate(defn, a, judge)
    assert isinstance(alone, EvaluatorFailure) and "compares two units" in alone.error
    with pytest.raises(UsageError, match="needs a pairwise one"):
        evaluate_pairs(judge_def(LEVELS), [(a, b)], judge)


def test_a_pairwise_code_check_gets_both_units(units: list[Unit]) -> None:
    defn = EvaluatorDef(name="longer", kind="code", dimension="d",
                        criterion={"name": "c", "text": "t", "scale": {"kind": "pairwise"}},
                        code={"callable": "tests.test_evaluators_scales:longer_wins"})
    pairs = [(units[0], units[1]), (units[2], units[2])]
    results = evaluate_pairs(defn, pairs, None)
    assert all(isinstance(r, EvaluationResult) for r in results)
    assert results[1].value == "tie"  # type: ignore[union-attr]
    assert results[0].reason.endswith("steps")  # type: ignore[union-attr]


def test_verdict_schema_and_fallback_read_levels() -> None:
    labels = {str(v): (v - 1) / 4 for v in range(1, 6)}
    parsed = parse_verdict("The booking has several mistakes.\n**Verdict:** 2", labels)
    assert getattr(parsed, "label", None) == "2" and getattr(parsed, "repaired", None) is True
    assert verdict_schema(["first", "second", "tie"])["properties"]["verdict"]["enum"] == ["first", "second", "tie"]
