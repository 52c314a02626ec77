"""Verdict parsing, the issue's remaining cases: declared scales, contradictions, numeric strings, n/a."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assay._store.scores import RunParams
from assay._store.store import Store
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.calibration import calibrate
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    ParsedVerdict,
    Unparsed,
    evaluate,
    verdict_schema,
)
from assay.evaluators import parse_verdict as parse
from assay.evaluators.definition import content_version
from assay.models import JudgeReply
from assay.settings import JudgeSettings
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE

PASS_FAIL = {"pass": 1.0, "fail": 0.0}
CRITERION = {"name": "resolves", "version": 1, "text": "The agent resolves the request."}


class CannedJudge:
    """Answers each prompt with the next canned text, in a cycle."""

    model_name = "canned"

    def __init__(self, *replies: str) -> None:
        self.replies = replies
        self.schemas: list[dict[str, Any] | None] = []

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.schemas.append(json_schema)
        return JudgeReply(text=self.replies[(len(self.schemas) - 1) % len(self.replies)], model=self.model_name)


def judge_def(**judge: Any) -> EvaluatorDef:
    return EvaluatorDef.model_validate({"name": "resolves", "kind": "llm_judge", "dimension": "task",
                                        "criterion": CRITERION, "judge": judge})


@pytest.fixture(scope="module")
def unit() -> Unit:
    return read_file(AIRLINE).units[0]


@pytest.mark.parametrize(("reply", "score"), [
    ('{"reason": "mostly", "score": 8}', 7 / 9), ('{"reason": "top", "score": 10}', 1.0),
    ('{"reason": "worst", "score": 1}', 0.0), ("Reason: half way.\nScore: 5.5", 0.5)])
def test_score_on_a_declared_scale_is_normalised(reply: str, score: float) -> None:
    parsed = parse(reply, PASS_FAIL, scale=(1, 10))
    assert isinstance(parsed, ParsedVerdict) and parsed.score == pytest.approx(score) and parsed.warnings == ()


@pytest.mark.parametrize("reply", ['{"score": 11}', '{"score": 0}', '{"score": -3}', "Score: 10.5"])
def test_score_outside_the_declared_scale_is_an_error(reply: str) -> None:
    parsed = parse(reply, PASS_FAIL, scale=(1, 10))
    assert isinstance(parsed, Unparsed) and parsed.status == "error" and "outside the scale [1, 10]" in parsed.problem


def test_score_outside_the_default_unit_scale_is_an_error() -> None:
    parsed = parse('{"score": 1.7}', PASS_FAIL)
    assert isinstance(parsed, Unparsed) and parsed.status == "error"


@pytest.mark.parametrize(("reply", "label"), [
    ('{"reason": "the refund failed", "verdict": "pass", "score": 0.1}', "pass"),
    ('{"reason": "all good", "verdict": "fail", "score": 0.9}', "fail"),
    ("Reason: it went fine.\nScore: 0.2\nVerdict: pass", "pass")])
def test_score_contradicting_the_verdict_is_flagged(reply: str, label: str) -> None:
    parsed = parse(reply, PASS_FAIL)
    assert isinstance(parsed, ParsedVerdict) and parsed.label == label and parsed.score == PASS_FAIL[label]
    assert any("contradicts the verdict" in w for w in parsed.warnings)


def test_agreeing_score_and_verdict_are_not_flagged() -> None:
    parsed = parse('{"reason": "ok", "verdict": "pass", "score": 0.9}', PASS_FAIL)
    assert isinstance(parsed, ParsedVerdict) and parsed.warnings == ()


def test_numeric_string_is_coerced_with_a_warning() -> None:
    parsed = parse('{"reason": "ok", "score": "0.75"}', PASS_FAIL)
    assert isinstance(parsed, ParsedVerdict) and parsed.score == 0.75
    assert parsed.warnings == ("score given as the string '0.75', read as a number",)
    scaled = parse('{"score": "7"}', PASS_FAIL, scale=(1, 10))
    assert isinstance(scaled, ParsedVerdict) and scaled.score == pytest.approx(6 / 9) and scaled.warnings
    assert isinstance(parse('{"score": "seven"}', PASS_FAIL), Unparsed)


@pytest.mark.parametrize("reply", ['{"reason": "no tools were called", "verdict": "N/A"}',
                                   "Reason: nothing to judge.\nVerdict: not_applicable"])
def test_not_applicable_is_its_own_status(reply: str) -> None:
    parsed = parse(reply, PASS_FAIL)
    assert isinstance(parsed, Unparsed) and parsed.status == "not_applicable"
    assert isinstance(parse(reply, {**PASS_FAIL, "n/a": 0.5, "not_applicable": 0.5}), ParsedVerdict)


def test_results_carry_status_and_warnings_through_evaluate(unit: Unit) -> None:
    scaled = judge_def(scale=[1, 10])
    out = evaluate(scaled, unit, CannedJudge('{"reason": "good", "score": "9"}'))
    assert isinstance(out, EvaluationResult) and out.score == pytest.approx(8 / 9) and out.verdict == "pass"
    assert out.warnings and "string" in out.warnings[0]
    judge = CannedJudge('{"reason": "x", "score": 12}')
    err = evaluate(scaled, unit, judge)
    assert isinstance(err, EvaluatorFailure) and err.status == "error" and err.raw == '{"reason": "x", "score": 12}'
    assert judge.schemas[0] == verdict_schema(["pass", "fail"], (1.0, 10.0))
    assert judge.schemas[0]["properties"]["score"] == {"type": "number", "minimum": 1.0, "maximum": 10.0}
    na = evaluate(judge_def(), unit, CannedJudge('{"reason": "no request", "verdict": "n/a"}'))
    assert isinstance(na, EvaluatorFailure) and na.status == "not_applicable"


ISSUE_REPLY = '```json\n{"pass": true, "score": 0.9 // good\n, "reason": "line1\nline2"}\n```'
"""The judge reply of issue 15, finding 6: a fence, a ``//`` comment and a raw newline inside the reason."""


@pytest.mark.parametrize(("reply", "reason"), [
    (ISSUE_REPLY, "line1\nline2"),
    ('{"reason": "two\nlines", "verdict": "pass"}', "two\nlines"),
    ('{"reason": "kept", // why\n "verdict": "pass"}', "kept"),
    ('Here it is:\n{"reason": "kept", "verdict": "pass"}\nHope that helps.', "kept"),
])
def test_a_repaired_reply_keeps_its_reason(reply: str, reason: str) -> None:
    parsed = parse(reply, PASS_FAIL)
    assert isinstance(parsed, ParsedVerdict) and parsed.repaired and parsed.reason == reason


def test_every_score_stores_how_its_verdict_was_read_and_export_carries_it(unit: Unit, tmp_path: Path) -> None:
    import io
    import json

    from assay._store.scores import new_run, run_scores
    from assay.evaluators.lineage import lineage_for, write_results
    from assay.suite.score_export import event_attributes, score_records, write_jsonl

    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    store.add_units([unit])
    defn = judge_def()
    results = [evaluate(defn, unit, CannedJudge(reply))
               for reply in (ISSUE_REPLY, '{"reason": "fine", "verdict": "pass"}', "no idea")]
    assert isinstance(results[0], EvaluationResult) and results[0].score == 0.9 and results[0].reason == "line1\nline2"
    for i, result in enumerate(results):
        run = new_run(store, "score", RunParams(), run_id=f"score-{i}")
        write_results(store, lineage_for(defn, run, "score", None, "canned"), [result])
    rows = [row for i in range(3) for row in run_scores(store, f"score-{i}")]
    assert [(r.status, r.parse_status, r.reason) for r in rows] == [
        ("scored", "repaired", "line1\nline2"), ("scored", "ok", "fine"),
        ("unscored", "failed", "no verdict or score field in the reply")]
    out = io.StringIO()
    write_jsonl(score_records(store), out)
    assert [json.loads(line)["parse_status"] for line in out.getvalue().splitlines()] == ["repaired", "ok", "failed"]
    assert event_attributes(score_records(store, "score-0")[0])["assay.score.parse_status"] == "repaired"


def test_scale_is_versioned_only_when_set() -> None:
    assert content_version(judge_def()) == content_version(judge_def(scale=None))
    assert content_version(judge_def(scale=[1, 10])) != content_version(judge_def(scale=[1, 5]))
    with pytest.raises(ValueError, match="low < high"):
        judge_def(scale=[5, 1])


def test_unscored_and_not_applicable_are_left_out_of_calibration_rates(tmp_path: Path) -> None:
    units = read_file(AIRLINE).units[:40]
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_units(units)
    add_criterion(store, CRITERION["text"], name="resolves")
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator="ann", criterion="resolves",
                                       label="pass" if i % 2 else "fail") for i, u in enumerate(units)])
    replies = ['{"reason": "a", "verdict": "pass"}', '{"reason": "b", "verdict": "n/a"}',
               '{"reason": "c"}', '{"reason": "d", "verdict": "fail"}']
    report = calibrate(store, judge_def(), CannedJudge(*replies), JudgeSettings(), n_boot=200)
    assert (report.n_labelled, report.n_not_applicable, report.n_unscored, report.n_errors) == (40, 10, 10, 0)
    assert report.agreement.n == 20 and report.overall is not None and report.overall.n == 20
