"""Calibration on every scale, on real data, against independent computations.

* **pairwise, LLMBar** (Zeng et al., ICLR 2024): the GPT-4 and ChatGPT runs hold each judge's verdict in both
  output orders. Replayed through assay (a judge client that answers each prompt with the recorded verdict for
  the order the prompt shows), ``assay.calibrate`` asks both orders and reports the position bias; the figure
  must equal a count straight from the files, and LLMBar's own ``statistics.json``.
* **ordinal**, tau-bench airline runs graded 1..5 by two annotators, and a code check grading them: Spearman,
  Kendall, MAE, weighted kappa, exact and within-one agreement against scipy / scikit-learn.
* **categorical**, AgentRx's human root-cause categories of 29 failed tau-bench retail runs, against a code
  check: per-class precision / recall, macro-F1, kappa and the confusion matrix against scikit-learn.
* **a numeric score against binary labels**: its pass threshold chosen on train + dev, reported on test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, precision_recall_fscore_support

from assay._store import Store
from assay.annotations import (
    Annotation,
    CategoricalClass,
    CategoricalScale,
    OrdinalLevel,
    OrdinalScale,
    PairwiseScale,
    add_annotations,
    add_criterion,
)
from assay.annotations.agentrx import read_ground_truth, root_cause
from assay.calibration import build_dataset, calibrate, load_split
from assay.calibration.scales import position_bias
from assay.evaluators import EvaluatorDef
from assay.models import JudgeReply
from assay.settings import JudgeSettings
from assay.traces import Message, Span, Step, Unit, read_file
from tests.conftest import AGENTRX_GT, AIRLINE, DATA

LLMBAR = DATA / "llmbar" / "Dataset"
RUNS = sorted(LLMBAR.glob("**/evaluators/*/Vanilla_NoRules/result.json"))
NATURAL = LLMBAR / "LLMBar" / "Natural"
WIDE = JudgeSettings.model_validate({"max_prompt_chars": 200_000})  # whole outputs, as LLMBar's judges saw them
LEVELS = OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=a) for v, a in enumerate(
    ("nothing works", "mostly broken", "half done", "done with slips", "done cleanly"), 1)))


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _answer(uid: str, question: str, answer: str) -> Unit:
    span = Span(trace_id=_hex(uid, 32), span_id=_hex(uid + "s", 16), name="chat", kind="llm", start_ns=1, end_ns=2,
                input_messages=(Message(role="user", content=question),),
                output_messages=(Message(role="assistant", content=answer),))
    return Unit(unit_id=uid, kind="trace", source="llmbar", spans=(span,), attributes={"dataset_item_id": uid[:-2]})


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'assay.db'}")


# --- pairwise: LLMBar's position bias ----------------------------------------------------------------
def _flips_from_files(items: list[dict[str, Any]]) -> tuple[int, int]:
    """(pairs whose winner differs between the two orders, pairs with a winner in both), from result.json alone."""
    both = [(i["results"][0]["swap = False"]["winner"], i["results"][0]["swap = True"]["winner"]) for i in items]
    both = [(a, b) for a, b in both if a in ("1", "2") and b in ("1", "2")]
    return sum(a != b for a, b in both), len(both)


@pytest.mark.parametrize("result", RUNS, ids=[str(p.relative_to(LLMBAR).parent.parent) for p in RUNS])
def test_position_bias_of_every_llmbar_run_equals_the_files(result: Path) -> None:
    items = json.loads(result.read_text())
    side = {"1": "first", "2": "second"}
    original = [side.get(i["results"][0]["swap = False"]["winner"]) for i in items]
    swapped = [side.get(i["results"][0]["swap = True"]["winner"]) for i in items]  # already in output order
    bias = position_bias(original, swapped)
    flips, scored = _flips_from_files(items)
    assert (bias.flips, bias.n_scored, bias.n) == (flips, scored, len(items))
    assert bias.flip_rate.value == pytest.approx(flips / scored)
    assert bias.flip_rate.low is not None and bias.flip_rate.low <= flips / scored <= (bias.flip_rate.high or 0)
    equal = json.loads((result.parent / "statistics.json").read_text())["equal"]  # e.g. "97 / 100 = 97.0%"
    same, total = (int(x) for x in equal.split(" = ")[0].split(" / "))
    both_none = sum(a is None and b is None for a, b in zip(original, swapped, strict=True))
    assert (bias.consistent + both_none, len(items)) == (same, total)
    assert bias.first_shown + bias.second_shown == bias.flips  # no ties in LLMBar: every flip favours a position


class ReplayJudge:
    """A recorded LLMBar judge run as a judge client: each prompt gets the verdict the judge gave for the outputs in
    the order the prompt shows them (the recorded responses of a real provider, no model call)."""

    def __init__(self, items: list[dict[str, Any]], name: str) -> None:
        self.items, self.model_name, self.calls = items, f"llmbar-{name}", 0

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.calls += 1
        prompt = messages[-1]["content"]
        shown_first = prompt.split("<first_run>")[1].split("</first_run>")[0]
        shown_second = prompt.split("<second_run>")[1].split("</second_run>")[0]
        for item in self.items:
            if item["input"] not in shown_first:
                continue
            a, b = f"ASSISTANT: {item['output_1']}", f"ASSISTANT: {item['output_2']}"
            if a in shown_first and b in shown_second:
                winner, first_is = item["results"][0]["swap = False"]["winner"], "1"
            elif b in shown_first and a in shown_second:
                winner, first_is = item["results"][0]["swap = True"]["winner"], "2"
            else:
                continue
            if winner not in ("1", "2"):
                return JudgeReply(text="I cannot decide.", model=self.model_name)
            verdict = "first" if winner == first_is else "second"
            return JudgeReply(text=json.dumps({"reason": "recorded", "verdict": verdict}), model=self.model_name)
        raise AssertionError("a prompt for no LLMBar item")


@pytest.fixture(scope="module")
def natural(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[dict[str, Any]]]:
    """LLMBar Natural as 200 units (two answers per question), a pairwise criterion and the gold labels."""
    items = json.loads((NATURAL / "dataset.json").read_text())
    store = _store(tmp_path_factory.mktemp("natural"))
    store.add_units([_answer(f"natural-{n:03d}-{side}", item["input"], item[f"output_{k}"])
                     for n, item in enumerate(items) for side, k in (("a", 1), ("b", 2))])
    add_criterion(store, "Which output follows the instruction better?", name="follows", scale=PairwiseScale())
    add_annotations(store, [Annotation(unit_id=f"natural-{n:03d}-a", second_unit_id=f"natural-{n:03d}-b",
                                       annotator="llmbar-gold", value=str(item["label"]), criterion="follows")
                            for n, item in enumerate(items)])
    return store, items


@pytest.mark.parametrize("judge_name", ["GPT-4", "ChatGPT"])
def test_calibrate_reports_llmbar_position_bias_end_to_end(natural: tuple[Store, list[dict[str, Any]]],
                                                           judge_name: str) -> None:
    store, gold = natural
    run = json.loads((NATURAL / "evaluators" / judge_name / "Vanilla_NoRules" / "result.json").read_text())
    assert [i["label"] for i in run] == [i["label"] for i in gold]
    judge = ReplayJudge(run, judge_name)
    defn = EvaluatorDef(name=f"llmbar-{judge_name.lower()}", kind="llm_judge", dimension="instruction following",
                        criterion={"name": "follows", "text": "Which output follows the instruction better?",
                                   "scale": {"kind": "pairwise"}})
    report = calibrate(store, defn, judge, WIDE, n_boot=500)
    assert judge.calls == 2 * len(run)  # every pair asked in both orders
    scale = report.scale_metrics
    assert scale is not None and scale.kind == "pairwise" and report.scale == "pairwise"
    bias = scale.position_bias_overall
    flips, scored = _flips_from_files(run)
    assert bias is not None and (bias.flips, bias.n_scored) == (flips, scored)
    assert bias.flip_rate.value == pytest.approx(flips / scored)
    stats = json.loads((NATURAL / "evaluators" / judge_name / "Vanilla_NoRules" / "statistics.json").read_text())
    assert f"{bias.consistent} / {len(run)}" in stats["equal"]
    # agreement with gold in the original order is LLMBar's correct_False
    assert scale.overall.pairwise is not None
    correct = sum(i["results"][0]["swap = False"]["winner"] == str(i["label"]) for i in run)
    assert scale.overall.pairwise.agreement.value == pytest.approx(correct / len(run))
    assert f"{correct} / {len(run)}" in stats["correct_False"]
    human = ["first" if i["label"] == 1 else "second" for i in run]
    judged = ["first" if i["results"][0]["swap = False"]["winner"] == "1" else "second" for i in run]
    assert scale.overall.pairwise.kappa.value == pytest.approx(cohen_kappa_score(human, judged))
    split = load_split(store, report.split_id or "")
    assert split is not None and scale.position_bias is not None
    assert scale.position_bias.n == report.split_sizes["test"] == len(split.units("test"))
    assert scale.human_ceiling is None  # one gold label per pair
    assert "NaN" not in report.model_dump_json()
    print(f"\nLLMBar Natural, {judge_name}: the verdict flips with the order in {flips} of {scored} pairs "
          f"({flips / scored:.1%}, 95% CI {bias.flip_rate.low:.1%}-{bias.flip_rate.high:.1%})")


# --- ordinal: graded airline runs -----------------------------------------------------------------------
def error_level(steps: list[Step], unit: Unit) -> tuple[int, str]:
    """The code check graded: 5 without tool errors, one level less per error, at least 1."""
    errors = sum(s.is_error for s in steps)
    return max(1, 5 - errors), f"{errors} tool error(s)"


def _grades(units: list[Unit]) -> dict[str, list[int]]:
    """Two annotators' levels: the task's outcome and the tool errors; the second is a level off on every 7th run."""
    first = []
    for u in units:
        errors = sum(s.status == "error" for s in u.spans)
        first.append(5 if u.reward == 1.0 else max(1, 4 - errors))
    second = [max(1, min(5, v + (1 if v < 3 else -1))) if n % 7 == 0 else v for n, v in enumerate(first)]
    return {"ann-1": first, "ann-2": second}


def _human_and_judge(store: Store, criterion: str, keys: list[str], judge: dict[str, int]
                     ) -> tuple[list[int], list[int]]:
    ds = build_dataset(store, criterion)
    truth = {i.key: int(i.target) for i in ds.items}
    return [truth[k] for k in keys], [judge[k] for k in keys]


def test_ordinal_calibration_matches_scipy_and_sklearn(tmp_path: Path) -> None:
    units = read_file(AIRLINE).units[:120]
    store = _store(tmp_path)
    store.add_units(units)
    add_criterion(store, "How well did the agent complete the booking?", name="grade", scale=LEVELS)
    grades = _grades(units)
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator=who, value=levels[n], criterion="grade")
                            for who, levels in grades.items() for n, u in enumerate(units)])
    defn = EvaluatorDef(name="grade-check", kind="code", dimension="booking",
                        criterion={"name": "grade", "text": "How well did the agent complete the booking?",
                                   "scale": LEVELS.model_dump(mode="json")},
                        code={"callable": "tests.test_calibration_scales:error_level"}, pass_score=0.75)
    report = calibrate(store, defn, None, JudgeSettings(), n_boot=500)
    scale = report.scale_metrics
    assert scale is not None and scale.test.ordinal is not None and scale.human_ceiling is not None
    split = load_split(store, report.split_id or "")
    assert split is not None
    from assay.evaluators import evaluate_many

    judged = {r.unit_id: int(r.value) for r in evaluate_many(defn, units, None)}  # type: ignore[union-attr,arg-type]
    test_ids = split.units("test")
    human, judge = _human_and_judge(store, "grade", test_ids, judged)
    m = scale.test.ordinal
    assert scale.test.n == len(test_ids)
    assert m.spearman.value == pytest.approx(sps.spearmanr(human, judge).statistic)
    assert m.kendall.value == pytest.approx(sps.kendalltau(human, judge).statistic)
    assert m.weighted_kappa.value == pytest.approx(cohen_kappa_score(human, judge, weights="quadratic",
                                                                     labels=[1, 2, 3, 4, 5]))
    assert m.mae.value == pytest.approx(np.mean(np.abs(np.subtract(human, judge))))
    assert m.exact.value == pytest.approx(np.mean(np.equal(human, judge)))
    assert m.within_one.value == pytest.approx(np.mean(np.abs(np.subtract(human, judge)) <= 1))
    for est in (m.spearman, m.kendall, m.weighted_kappa, m.mae, m.exact):
        assert est.low is not None and est.high is not None and est.low <= (est.value or 0) <= est.high
    # the human-human ceiling beside it: ann-1 against ann-2 on the test items
    by_unit = {u.unit_id: n for n, u in enumerate(units)}
    a = [grades["ann-1"][by_unit[k]] for k in test_ids]
    b = [grades["ann-2"][by_unit[k]] for k in test_ids]
    ceiling = scale.human_ceiling.metrics.ordinal
    assert ceiling is not None and scale.human_ceiling.n_items == len(test_ids)
    assert ceiling.weighted_kappa.value == pytest.approx(cohen_kappa_score(a, b, weights="quadratic",
                                                                           labels=[1, 2, 3, 4, 5]))
    assert ceiling.spearman.value == pytest.approx(sps.spearmanr(a, b).statistic)
    assert report.test is not None and report.test.n == len(test_ids)  # pass/fail at pass_score beside it
    assert "pass_score 0.75" in scale.decision
    # certification bounds TPR and TNR of that binarised table: level 4 and up passes, for humans and the check
    c = report.test.confusion
    bounds = {b.name: b for b in report.certification.bounds} if report.certification else {}
    tpr, tnr = bounds["TPR"], bounds["TNR"]
    assert (tpr.k, tpr.n, tnr.k, tnr.n) == (c.tp, c.tp + c.fn, c.tn, c.tn + c.fp)
    assert report.meets_threshold == all(b.clears for b in bounds.values())
    passes = sum(report.dataset_balance.get(str(v), 0) for v in (4, 5))
    assert report.plan is None or {r.of: r.labelled for r in report.plan.rates} == {
        "pass": passes, "fail": report.n_labelled - passes}
    assert report.threshold_choice is None and "NaN" not in report.model_dump_json()


# --- categorical: AgentRx root causes ---------------------------------------------------------------------
CATEGORIES = ("Underspecified User Intent", "Misinterpretation of Tool Output", "Intent Plan Misalignment",
              "Instruction Adherence Failure", "Intent Not Supported", "Invalid Invocation", "System Failure")


def guess_category(steps: list[Step], unit: Unit) -> str:
    """A crude code check: a tool error is an invalid invocation, a transfer is an unsupported intent, else the
    user's intent was underspecified."""
    if any(s.is_error for s in steps):
        return "Invalid Invocation"
    if any(s.kind == "tool_call" and s.tool_name == "transfer_to_human_agents" for s in steps):
        return "Intent Not Supported"
    if sum(s.kind == "tool_call" for s in steps) > 6:
        return "Misinterpretation of Tool Output"
    return "Underspecified User Intent"


def test_categorical_calibration_on_agentrx_root_causes_matches_sklearn(tmp_path: Path) -> None:
    units = read_file(DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_failed.json").units
    runs = {f"tau-retail/task-{r['trajectory_id']}": root_cause(r) for r in read_ground_truth(AGENTRX_GT)}
    labelled = {u.unit_id: runs[u.unit_id.rsplit("/", 1)[0]] for u in units if u.unit_id.rsplit("/", 1)[0] in runs}
    assert len(labelled) == 29
    store = _store(tmp_path)
    store.add_units(units)
    scale = CategoricalScale(classes=tuple(CategoricalClass(name=c) for c in CATEGORIES))
    add_criterion(store, "What is the root cause of the failure?", name="root-cause", scale=scale)
    add_annotations(store, [Annotation(unit_id=u, annotator="agentrx-annotators", value=c, criterion="root-cause")
                            for u, c in labelled.items()])
    defn = EvaluatorDef(name="root-cause-check", kind="code", dimension="diagnosis",
                        criterion={"name": "root-cause", "text": "What is the root cause of the failure?",
                                   "scale": scale.model_dump(mode="json")},
                        code={"callable": "tests.test_calibration_scales:guess_category"})
    report = calibrate(store, defn, None, JudgeSettings(), n_boot=500)
    assert report.scale_metrics is not None
    overall = report.scale_metrics.overall
    from assay.evaluators import evaluate_many

    judged = {r.unit_id: str(r.value) for r in evaluate_many(defn, store.units(sorted(labelled)), None)}  # type: ignore[union-attr]
    keys = sorted(labelled)
    human, judge = [labelled[k] for k in keys], [judged[k] for k in keys]
    m = overall.categorical
    assert m is not None and overall.n == 29
    assert m.accuracy.value == pytest.approx(np.mean(np.equal(human, judge)))
    assert m.kappa.value == pytest.approx(cohen_kappa_score(human, judge))
    used = sorted(set(human))
    assert m.macro_f1.value == pytest.approx(f1_score(human, judge, labels=used, average="macro", zero_division=0))
    precision, recall, _, support = precision_recall_fscore_support(human, judge, labels=list(CATEGORIES),
                                                                    zero_division=np.nan)  # type: ignore[arg-type]
    for c, p, r, n in zip(m.per_class, precision, recall, support, strict=True):
        assert c.human == n
        assert (c.precision is None and np.isnan(p)) or c.precision == pytest.approx(p)
        assert (c.recall is None and np.isnan(r)) or c.recall == pytest.approx(r)
    assert m.confusion == confusion_matrix(human, judge, labels=list(CATEGORIES)).tolist()
    assert report.scale_metrics.human_ceiling is None and "NaN" not in report.model_dump_json()


# --- a numeric score against binary labels -----------------------------------------------------------------
def tool_success_share(steps: list[Step], unit: Unit) -> tuple[float, str]:
    results = [s for s in steps if s.kind == "tool_result"]
    ok = sum(not s.is_error for s in results)
    return (ok / len(results) if results else 1.0), f"{ok} of {len(results)} tool calls succeeded"


def test_a_numeric_score_gets_its_threshold_chosen_on_train_and_dev(tmp_path: Path) -> None:
    units = read_file(AIRLINE).units
    store = _store(tmp_path)
    store.add_units(units)
    add_criterion(store, "The agent completed the task.", name="done")
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator="env", label="pass" if u.reward == 1.0 else "fail",
                                       criterion="done") for u in units])
    defn = EvaluatorDef(name="tool-share", kind="code", dimension="outcome",
                        criterion={"name": "done", "text": "The agent completed the task."},
                        code={"callable": "tests.test_calibration_scales:tool_success_share"}, pass_score=0.5)
    report = calibrate(store, defn, None, JudgeSettings(), n_boot=300)
    choice = report.threshold_choice
    assert choice is not None and choice.current_pass_score == 0.5
    split = load_split(store, report.split_id or "")
    assert split is not None
    from assay.evaluators import evaluate_many

    scores = {r.unit_id: r.score for r in evaluate_many(defn, units, None)}  # type: ignore[union-attr]
    label = {u.unit_id: "pass" if u.reward == 1.0 else "fail" for u in units}

    def balanced(ids: list[str], cut: float) -> float:
        pos = [scores[u] >= cut for u in ids if label[u] == "pass"]
        neg = [scores[u] < cut for u in ids if label[u] == "fail"]
        return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2

    fit = split.units("train") + split.units("dev")
    values = sorted(set(scores.values()))
    best = max(balanced(fit, (a + b) / 2) for a, b in zip(values, values[1:], strict=False))
    assert choice.n_fit == len(fit) and choice.fit_value == pytest.approx(best)
    assert balanced(fit, choice.threshold) == pytest.approx(best)
    test = split.units("test")
    agree = np.mean([(scores[u] >= choice.threshold) == (label[u] == "pass") for u in test])
    assert choice.test.n == len(test) and choice.test.agreement.value == pytest.approx(agree)
    assert report.test is not None and report.test.n == len(test)  # the current pass_score's, beside it
