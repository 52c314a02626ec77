"""The hybrid kind on real tau-bench units: a code check decides what it can, a judge the rest; one verdict,
one version, and lineage (``decided_by``, the reason's ``[code]`` / ``[judge]``, ``judge_model``) naming the part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from assay._store.store import Store
from assay._store.tables import ScoreRow
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    HybridEvaluatorDef,
    content_version,
    evaluate_many,
    evaluator_json_schema,
    load_evaluator,
    save_evaluator,
)
from assay.evaluators.code import Defer, NotApplicable
from assay.models import JudgeReply
from assay.settings import JudgeSettings, load_settings
from assay.suite.gate import run_gate
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE, RETAIL

REFUND_TOOLS = ["cancel_reservation", "return_delivered_order_items", "cancel_pending_order"]
REFUNDS = {"name": "refunds-follow-policy", "text": "A refund (a cancelled reservation or order, a returned item) "
           "goes only to an eligible user, to the original payment method, after the user confirmed it."}
# tau-airline task-8/trial-1 and task-9/trial-2 cancel a reservation and end on book_reservation errors no
# assistant turn answers; tau-retail task-20/trial-20 ends on an unhandled error too but calls no refund tool.
UNHANDLED = ("tau-airline/task-8/trial-1", "tau-airline/task-9/trial-2")
NO_REFUND_BUT_UNHANDLED = "tau-retail/task-20/trial-20"


def hybrid(**changes: Any) -> EvaluatorDef:
    data: dict[str, Any] = {
        "name": "refund-policy", "kind": "hybrid", "dimension": "policy", "criterion": REFUNDS,
        "code": {"callable": "assay.evaluators.checks:tool_precheck", "args": {"tools": REFUND_TOOLS}}}
    return EvaluatorDef.model_validate({**data, **changes})


class PolicyJudge:
    """A fake judge (a JudgeClient): fails a refund when the timeline shows no explicit 'yes' from the user."""

    model_name = "fake-policy-judge"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        confirmed = "USER: yes" in prompt or "USER: Yes" in prompt
        verdict, reason = ("pass", "the user confirmed") if confirmed else ("fail", "no explicit confirmation")
        return JudgeReply(text=f'{{"reason": "{reason}", "verdict": "{verdict}"}}', model=self.model_name)


@pytest.fixture(scope="module")
def units() -> list[Unit]:
    airline, retail = read_file(AIRLINE).units, read_file(RETAIL).units
    wanted = set(UNHANDLED)
    return airline[:40] + [u for u in airline if u.unit_id in wanted] + retail[:30]


def test_the_code_part_decides_what_it_can_and_the_judge_the_rest(units: list[Unit]) -> None:
    judge = PolicyJudge()
    results = {r.unit_id: r for r in evaluate_many(hybrid(), units, judge)}
    by_code = {u for u, r in results.items() if r.decided_by == "code"}
    by_judge = {u for u, r in results.items() if r.decided_by == "judge"}
    assert by_code | by_judge == set(results) and len(results) == len(units)
    assert len(judge.prompts) == len(by_judge) >= 10  # the judge saw only what the code part deferred
    not_applicable = {u for u, r in results.items() if isinstance(r, EvaluatorFailure)}
    assert not_applicable <= by_code and len(not_applicable) >= 10
    assert all(r.status == "not_applicable" and r.error.startswith("[code] none of ") and r.judge_model is None
               for u, r in results.items() if u in not_applicable)
    assert results[NO_REFUND_BUT_UNHANDLED].status == "not_applicable"  # type: ignore[union-attr]  # n/a first
    for unit_id in UNHANDLED:  # decided by code: fail, without asking the judge
        r = results[unit_id]
        assert isinstance(r, EvaluationResult) and r.verdict == "fail" and r.judge_model is None
        assert r.reason.startswith("[code] tool error left unhandled: book_reservation failed at step")
    judged = [results[u] for u in by_judge]
    assert all(isinstance(r, EvaluationResult) and r.judge_model == "fake-policy-judge"
               and r.reason.startswith("[judge] ") and r.label == r.verdict
               and r.reason.endswith(", no unhandled tool error)") for r in judged)
    assert {r.verdict for r in judged} == {"pass", "fail"}  # type: ignore[union-attr]  # the judge decided both ways
    assert len({r.evaluator_version for r in results.values()}) == 1  # one version for both parts


def test_one_version_covers_both_parts() -> None:
    base = content_version(hybrid())
    assert content_version(hybrid(description="why", threshold=0.9, min_pass_rate=0.3, sample_rate=0.5)) == base
    other_tools = hybrid(code={"callable": "assay.evaluators.checks:tool_precheck", "args": {"tools": ["refund"]}})
    other_prompt = hybrid(judge={"prompt": "Criterion: {{ criterion.text }}\n{{ timeline }}\n"})
    other_labels = hybrid(judge={"labels": {"pass": 1.0, "fail": 0.0, "unsure": 0.5}})
    versions = {content_version(d) for d in (other_tools, other_prompt, other_labels)}
    assert base not in versions and len(versions) == 3
    as_judge = EvaluatorDef.model_validate({**hybrid().model_dump(), "kind": "llm_judge", "code": None})
    assert content_version(as_judge) != base  # the same judge alone is another evaluator


def test_a_hybrid_file_round_trips_and_validates_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "refund-policy.yaml"
    path.write_text(f"""\
name: refund-policy
kind: hybrid
dimension: policy
criterion: {{name: {REFUNDS['name']}, text: "{REFUNDS['text']}"}}
code:                                 # decides what it can: n/a without a refund, fail on an unhandled error
  callable: assay.evaluators.checks:tool_precheck
  args: {{tools: [{', '.join(REFUND_TOOLS)}]}}
judge: {{labels: {{pass: 1.0, fail: 0.0}}}}   # the rest
""")
    defn = load_evaluator(path)
    assert isinstance(defn, HybridEvaluatorDef) and content_version(defn) == content_version(hybrid(judge={}))
    assert load_evaluator(save_evaluator(defn, tmp_path / "again.yaml")) == defn
    schema = evaluator_json_schema()
    jsonschema.validate(defn.model_dump(mode="json", exclude_defaults=True) | {"kind": "hybrid"}, schema)
    with pytest.raises(jsonschema.ValidationError):  # a hybrid needs its code part
        jsonschema.validate({"name": "x", "kind": "hybrid", "dimension": "d", "criterion": REFUNDS}, schema)


def check_that_raises(steps: list[Any], unit: Unit) -> None:
    raise RuntimeError("boom")


def defer_with_reason(steps: list[Any], unit: Unit) -> Defer:
    return Defer("always")


def not_applicable(steps: list[Any], unit: Unit) -> NotApplicable:
    return NotApplicable("never applies")


def test_failures_name_the_part_and_a_code_kind_cannot_defer(units: list[Unit]) -> None:
    judge = PolicyJudge()
    broken = evaluate_many(hybrid(code={"callable": f"{__name__}:check_that_raises"}), units[:2], judge)
    assert all(isinstance(r, EvaluatorFailure) and r.status == "error" and r.decided_by == "code"
               and r.error == "[code] RuntimeError: boom" for r in broken) and not judge.prompts
    deferred = evaluate_many(hybrid(code={"callable": f"{__name__}:defer_with_reason"}), units[:2], judge)
    assert [r.decided_by for r in deferred] == ["judge", "judge"] and len(judge.prompts) == 2
    assert all(isinstance(r, EvaluationResult) and r.reason.endswith(" (code part: always)") for r in deferred)
    code_kind: dict[str, Any] = {"name": "c", "kind": "code", "dimension": "d", "criterion": REFUNDS}
    deferring = EvaluatorDef(**code_kind, code={"callable": f"{__name__}:defer_with_reason"})
    (r,) = evaluate_many(deferring, units[:1])
    assert isinstance(r, EvaluatorFailure) and r.status == "error" and "only a hybrid evaluator" in r.error
    (n,) = evaluate_many(EvaluatorDef(**code_kind, code={"callable": f"{__name__}:not_applicable"}), units[:1])
    assert isinstance(n, EvaluatorFailure) and (n.status, n.error, n.decided_by) == (
        "not_applicable", "never applies", "code")


def test_which_part_decided_reaches_the_stored_scores(units: list[Unit], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    settings = load_settings(ws)
    store = Store(settings.resolved_store_url())
    try:
        store.add_units(units)
        defn = hybrid()
        save_evaluator(defn, ws / "evaluators" / "refund-policy.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="hybrid test")
        report = run_gate(store, settings, PolicyJudge())
        (item,) = report.items
        assert item.evaluator_version == content_version(defn) and item.n_not_applicable >= 10
        with store.session() as s:
            rows = list(s.scalars(select(ScoreRow).where(ScoreRow.run_id == report.run_id)))
    finally:
        store.close()
    assert len(rows) == len(units)
    code_rows = [r for r in rows if r.reason.startswith("[code] ")]
    judge_rows = [r for r in rows if r.reason.startswith("[judge] ")]
    assert len(code_rows) + len(judge_rows) == len(rows) and code_rows and judge_rows
    assert all(r.judge_model is None for r in code_rows)
    assert all(r.judge_model == "fake-policy-judge" and r.raw for r in judge_rows)
    assert {r.unit_id for r in code_rows if r.verdict == "fail"} == set(UNHANDLED)


def test_the_real_local_judge_decides_the_deferred_units(units: list[Unit]) -> None:
    sample = units[:27]  # airline tasks 0-26 of trial 0: three of them (15, 25, 26) cancel a reservation
    results = evaluate_many(hybrid(), sample, settings=JudgeSettings(max_prompt_chars=1500, max_tokens=48,
                                                                      n_threads=1))
    by_judge = [r for r in results if r.decided_by == "judge"]
    assert len(by_judge) == 3, [r.decided_by for r in results]  # kept small: the local judge is slow
    for r in by_judge:
        assert r.judge_model == "smollm2-135m-instruct"
        assert r.reason.startswith("[judge] ") if isinstance(r, EvaluationResult) else r.error.startswith("[judge] ")
    assert all(r.judge_model is None for r in results if r.decided_by == "code")
