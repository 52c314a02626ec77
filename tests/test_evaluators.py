"""Evaluators: YAML files and versions, verdict parsing, code checks on real tau-bench units, batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import assay.evaluators as evaluators
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    ParsedVerdict,
    Unparsed,
    content_version,
    default_prompt,
    evaluate,
    evaluate_many,
    load_evaluator,
    load_evaluators,
    parse_verdict,
    render_prompt,
    save_evaluator,
)
from assay.evaluators.checks import no_tool_errors
from assay.exceptions import ConfigError, JudgeError, NotFoundError
from assay.models import JudgeClient, JudgeReply
from assay.settings import JudgeSettings
from assay.traces import Step, Unit, read_file
from tests.conftest import AIRLINE

CRITERION_TEXT = "Every tool call the agent makes succeeds."
CRITERION: dict[str, Any] = {"name": "no-tool-errors", "version": 1, "text": CRITERION_TEXT}
PASS_FAIL = {"pass": 1.0, "fail": 0.0}


@pytest.fixture(scope="module")
def airline_units() -> list[Unit]:
    return read_file(AIRLINE).units


def judge_def(**changes: Any) -> EvaluatorDef:
    data: dict[str, Any] = {"name": "resolves", "kind": "llm_judge", "dimension": "task success",
                            "description": "Did the agent resolve the request?", "criterion": CRITERION,
                            "judge": {"prompt": "Timeline:\n{{ timeline }}\n\nCriterion: {{ criterion.text }}\n"
                                                "Answer {{ labels | join(' or ') }} as JSON.\n"}}
    data.update(changes)
    return EvaluatorDef.model_validate(data)


def code_def(callable_path: str = "assay.evaluators.checks:no_tool_errors") -> EvaluatorDef:
    return EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use",
                        criterion=CRITERION, code={"callable": callable_path})  # type: ignore[arg-type]


class CannedJudge:
    """A judge model that answers every prompt with the next canned text (raises JudgeError for None)."""

    model_name = "canned-judge"

    def __init__(self, *replies: str | None) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[list[dict[str, str]], dict[str, Any] | None]] = []

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.requests.append((messages, json_schema))
        text = self.replies[(len(self.requests) - 1) % len(self.replies)]
        if text is None:
            raise JudgeError("connection reset by peer", self.model_name)
        return JudgeReply(text=text, model=self.model_name, latency_s=0.01)


# --- files and versions ---------------------------------------------------------------------------
def test_yaml_round_trip_keeps_definition_and_version(tmp_path: Path) -> None:
    graded = judge_def(judge={"labels": {"good": 1.0, "partial": 0.5, "bad": 0.0}})
    for n, defn in enumerate((judge_def(), code_def(), graded)):
        path = save_evaluator(defn, tmp_path / f"{n}-{defn.name}.yaml")
        loaded = load_evaluator(path)
        assert loaded == defn
        assert content_version(loaded) == content_version(defn)
    text = (tmp_path / "0-resolves.yaml").read_text()
    assert text.startswith("version: 1\nname: resolves\nkind: llm_judge\n")
    assert "prompt: |" in text  # multi-line prompts stay readable in review


def test_version_is_stable_and_follows_behaviour() -> None:
    base = content_version(judge_def())
    assert len(base) == 12 and int(base, 16) >= 0
    assert content_version(judge_def()) == base
    assert content_version(judge_def(description="reworded", threshold=0.9, min_pass_rate=0.7)) == base
    changed_prompt = judge_def(judge={"prompt": "Criterion: {{ criterion.text }}\n{{ timeline }}\n"})
    assert content_version(changed_prompt) != base
    assert content_version(judge_def(pass_score=0.7)) != base
    assert content_version(judge_def(criterion={**CRITERION, "text": "Tools never fail."})) != base
    # the default prompt is versioned by its text: spelling it out changes nothing
    implicit = judge_def(judge={})
    explicit = judge_def(judge={"prompt": default_prompt()})
    assert content_version(implicit) == content_version(explicit) != base


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nkind: [llm_judge\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_evaluator(broken)
    cases = {
        "list.yaml": "- a\n- b\n",
        "kind.yaml": "name: x\nkind: hybrid\ndimension: d\ncriterion: {name: c, text: t}\n",
        "nocode.yaml": "name: x\nkind: code\ndimension: d\ncriterion: {name: c, text: t}\n",
        "template.yaml": "name: x\nkind: llm_judge\ndimension: d\ncriterion: {name: c, text: t}\n"
                         "judge: {prompt: '{{ timeline '}\n",
        "labels.yaml": "name: x\nkind: llm_judge\ndimension: d\ncriterion: {name: c, text: t}\n"
                       "judge: {labels: {pass: 2.0}}\n",
        "extra.yaml": "name: x\nkind: code\ndimension: d\ncriterion: {name: c, text: t}\n"
                      "code: {callable: 'a.b:c'}\ncolour: red\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=name):
            load_evaluator(tmp_path / name)
    with pytest.raises(NotFoundError):
        load_evaluator(tmp_path / "missing.yaml")


def test_load_evaluators_reads_a_folder_and_rejects_duplicate_names(tmp_path: Path) -> None:
    save_evaluator(judge_def(), tmp_path / "b.yaml")
    save_evaluator(code_def(), tmp_path / "a.yml")
    assert [d.name for d in load_evaluators(tmp_path)] == ["no-tool-errors", "resolves"]
    assert load_evaluators(tmp_path / "nowhere") == []
    save_evaluator(judge_def(), tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="resolves"):
        load_evaluators(tmp_path)


def test_public_api_is_pinned() -> None:
    assert sorted(evaluators.__all__) == [
        "BatchReport", "CodeCheck", "CodeEvaluatorDef", "CodeSpec", "CriterionRef", "Defer", "Evaluation",
        "EvaluationResult", "EvaluatorDef", "EvaluatorFailure", "ExternalEvaluatorDef", "ExternalSpec",
        "HybridEvaluatorDef", "JudgeSpec", "KindRunner",
        "LlmJudgeEvaluatorDef", "NotApplicable", "ParsedVerdict", "Progress", "Unparsed", "check_output",
        "check_value", "content_version", "default_prompt", "evaluate", "evaluate_many", "evaluate_pairs",
        "evaluator_json_schema", "evaluator_kind", "load_evaluator", "load_evaluators", "parse_verdict",
        "render_prompt", "resolve_callable",
        "save_evaluator", "verdict_schema",
    ]
    for name in evaluators.__all__:
        assert getattr(evaluators, name) is not None


# --- the judge prompt -------------------------------------------------------------------------------
def test_prompt_and_schema_sent_to_the_judge(airline_units: list[Unit]) -> None:
    unit = airline_units[0]
    judge = CannedJudge('{"reason": "ok", "verdict": "pass"}')
    settings = JudgeSettings.model_validate({"max_prompt_chars": 2000})
    assert isinstance(judge, JudgeClient)
    evaluate(judge_def(judge={}), unit, judge, settings)
    (messages, schema), = judge.requests
    assert schema is not None
    prompt = messages[0]["content"]
    assert CRITERION_TEXT in prompt and '"pass" or "fail"' in prompt
    assert "SYSTEM:" not in prompt  # long policies are left out
    assert "earlier steps omitted" in prompt  # the timeline kept only the newest steps
    assert len(prompt) < 2000 + len(default_prompt()) + len(CRITERION_TEXT) + 200
    assert list(schema["properties"]) == ["reason", "verdict"]  # reason before verdict
    assert schema["properties"]["verdict"]["enum"] == ["pass", "fail"]
    assert schema["properties"]["reason"]["maxLength"] <= 300
    assert render_prompt(judge_def(judge={}), unit, settings) == prompt


def test_undefined_template_name_is_a_config_error(airline_units: list[Unit]) -> None:
    defn = judge_def(judge={"prompt": "{{ timeline }} {{ no_such_name }}"})
    with pytest.raises(ConfigError, match="no_such_name"):
        evaluate(defn, airline_units[0], CannedJudge("{}"))


# --- verdict parsing --------------------------------------------------------------------------------
VERDICT_CASES: list[tuple[str, str, str | None, bool]] = [
    # (case, reply, expected label or None for unscored, repaired)
    ("plain json", '{"reason": "All tools succeeded.", "verdict": "pass"}', "pass", False),
    ("code fence", 'Here is my answer:\n```json\n{"reason": "A refund failed.", "verdict": "fail"}\n```', "fail", True),
    ("trailing text", '{"reason": "Booked as asked.", "verdict": "pass"}\nI hope this helps!', "pass", True),
    ("comments and trailing comma",
     '{\n  "reason": "Payment failed", // step 12\n  /* seen twice */ "verdict": "fail",\n}', "fail", True),
    ("zero-width and case", '{"Reason": "ok", "VERDICT": "\u200bPA\u200dSS\ufeff"}', "pass", False),
    ("verdict words inside the reason",
     '{"reason": "No reason to fail: verdict: fail would be wrong here.", "verdict": "pass"}', "pass", False),
    ("reason word only", "No reason to fail: the agent booked the flight the user asked for.", None, False),
    ("verdict line after reasoning", "Reason: the agent failed to cancel.\nVerdict: FAIL", "fail", True),
    ("markdown verdict line", "The fail branch was never taken.\n**Verdict:** pass", "pass", True),
    ("broken json keeps the final field", '{"reason": "fine, verdict: fail is not right", "verdict": "pass"', "pass",
     True),
    ("echoed template then answer", '{"reason": "...", "verdict": "..."}\n{"reason": "ok", "verdict": "pass"}',
     "pass", True),
    ("label outside the allowed set", '{"reason": "unclear", "verdict": "maybe"}', None, False),
    ("neither verdict nor score", '{"reason": "The agent did well."}', None, False),
    ("truncated reply", '{"reason": "The agent looked up the reservation and then', None, False),
    ("empty reply", "  \u200b ", None, False),
]


@pytest.mark.parametrize(("reply", "label", "repaired"), [c[1:] for c in VERDICT_CASES],
                         ids=[c[0] for c in VERDICT_CASES])
def test_parse_verdict(reply: str, label: str | None, repaired: bool) -> None:
    parsed = parse_verdict(reply, PASS_FAIL)
    if label is None:
        assert isinstance(parsed, Unparsed) and parsed.problem
    else:
        assert isinstance(parsed, ParsedVerdict)
        assert (parsed.label, parsed.score, parsed.repaired) == (label, PASS_FAIL[label], repaired)


@pytest.mark.parametrize(("reply", "label", "repaired"), [c[1:] for c in VERDICT_CASES],
                         ids=[c[0] for c in VERDICT_CASES])
def test_judge_reply_becomes_result_or_unscored(airline_units: list[Unit], reply: str, label: str | None,
                                                repaired: bool) -> None:
    out = evaluate(judge_def(), airline_units[1], CannedJudge(reply))
    if label is None:
        assert isinstance(out, EvaluatorFailure)
        assert (out.status, out.raw, out.judge_model) == ("unscored", reply, "canned-judge")
    else:
        assert isinstance(out, EvaluationResult)
        assert (out.verdict, out.label, out.repaired, out.raw) == (label, label, repaired, reply)
        assert out.score == PASS_FAIL[label] and out.evaluator_version == content_version(judge_def())


def test_scores_and_custom_labels() -> None:
    assert parse_verdict('{"score": 0.8}', PASS_FAIL) == ParsedVerdict(0.8, None, "", False)
    assert isinstance(parse_verdict('{"score": 1.7}', PASS_FAIL), Unparsed)
    assert isinstance(parse_verdict('{"score": true}', PASS_FAIL), Unparsed)
    assert parse_verdict("Score: 0.25", PASS_FAIL) == ParsedVerdict(0.25, None, "", True)
    graded = {"good": 1.0, "partial": 0.5, "bad": 0.0}
    parsed = parse_verdict('{"reason": "half done", "verdict": "Partial"}', graded)
    assert parsed == ParsedVerdict(0.5, "partial", "half done", False)


def test_pass_score_sets_the_verdict(airline_units: list[Unit]) -> None:
    graded = judge_def(judge={"labels": {"good": 1.0, "partial": 0.5, "bad": 0.0}}, pass_score=0.5)
    out = evaluate(graded, airline_units[0], CannedJudge('{"reason": "x", "verdict": "partial"}'))
    assert isinstance(out, EvaluationResult) and (out.score, out.verdict) == (0.5, "pass")
    strict = graded.model_copy(update={"pass_score": 0.75})
    out = evaluate(strict, airline_units[0], CannedJudge('{"reason": "x", "verdict": "partial"}'))
    assert isinstance(out, EvaluationResult) and out.verdict == "fail"


# --- code checks on real units ---------------------------------------------------------------------
def _units_with_error_results() -> set[str]:
    """Independently of assay's readers: runs with a tool message starting with 'Error:'."""
    runs = json.loads(AIRLINE.read_text())
    return {f"tau-airline/task-{r['task_id']}/trial-{r.get('trial', 0)}" for r in runs
            if any(m.get("role") == "tool" and str(m.get("content") or "").startswith("Error:") for m in r["traj"])}


def test_no_tool_errors_on_real_airline_units(airline_units: list[Unit]) -> None:
    results = evaluate_many(code_def(), airline_units)
    assert all(isinstance(r, EvaluationResult) and r.judge_model is None for r in results)
    failed = {r.unit_id for r in results if isinstance(r, EvaluationResult) and r.verdict == "fail"}
    expected = _units_with_error_results()
    assert 0 < len(expected) < len(airline_units)
    assert failed == expected
    for r in results:
        assert isinstance(r, EvaluationResult)
        if r.verdict == "fail":
            assert r.score == 0.0 and r.reason.startswith("tool ") and "failed at step" in r.reason
            assert "Error:" in r.reason
        else:
            assert r.score == 1.0 and "succeeded" in r.reason


def test_no_tool_errors_names_tool_and_message() -> None:
    steps = [Step(index=1, kind="tool_call", tool_name="book_reservation"),
             Step(index=2, kind="tool_result", tool_name="book_reservation", is_error=True,
                  text="Error: payment amount does not add up"),
             Step(index=3, kind="tool_result", tool_name="calculate", text="255.0")]
    unit = Unit(unit_id="u", kind="trace", source="test", spans=())
    score, reason = no_tool_errors(steps, unit)
    assert score == 0.0
    assert reason == "tool book_reservation failed at step 2: Error: payment amount does not add up"


def out_of_range_check(steps: list[Step], unit: Unit) -> float:
    return 1.5


def raising_check(steps: list[Step], unit: Unit) -> float:
    raise RuntimeError(f"cannot read {unit.unit_id}")


def wrong_shape_check(steps: list[Step], unit: Unit) -> object:
    return "pass"


def test_code_check_errors_are_failures(airline_units: list[Unit]) -> None:
    for name, message in [("out_of_range_check", "outside [0, 1]"), ("raising_check", "RuntimeError: cannot read"),
                          ("wrong_shape_check", "got str")]:
        out = evaluate(code_def(f"{__name__}:{name}"), airline_units[0])
        assert isinstance(out, EvaluatorFailure) and out.status == "error" and message in out.error
    with pytest.raises(ConfigError, match="no_such_check"):
        evaluate(code_def("assay.evaluators.checks:no_such_check"), airline_units[0])


# --- batches ----------------------------------------------------------------------------------------
def test_one_failing_call_does_not_stop_a_batch_of_20(airline_units: list[Unit]) -> None:
    ok = '{"reason": "fine", "verdict": "pass"}'
    replies: list[str | None] = [ok] * 20
    replies[6] = None  # the 7th call fails in transport
    replies[13] = "I cannot judge this."  # the 14th reply holds no verdict
    judge = CannedJudge(*replies)
    done: list[int] = []
    units = airline_units[:20]
    out = evaluate_many(judge_def(), units, judge, progress=done.append)
    assert [r.unit_id for r in out] == [u.unit_id for u in units]
    assert len(judge.requests) == 20 and sum(done) == 20
    failures = {i: r for i, r in enumerate(out) if isinstance(r, EvaluatorFailure)}
    assert sorted(failures) == [6, 13]
    assert failures[6].status == "error" and "connection reset" in failures[6].error and failures[6].raw is None
    assert failures[13].status == "unscored" and failures[13].raw == "I cannot judge this."
    assert sum(isinstance(r, EvaluationResult) and r.verdict == "pass" for r in out) == 18
