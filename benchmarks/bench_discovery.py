"""Failures found without outcomes: failure-signal detection measured against the reward.

Part ``detection``: the 300 tau-bench runs the demo uses (200 airline, sierra-research/tau-bench
``historical_trajectories/gpt-4o-airline.json``; 100 retail, microsoft/AgentRx
``data/tau_retail/tau_dataset_full.json``), read with ``assay.traces.read_file``. Rewards are
**withheld**: each unit's ``outcome``, ``reward`` and ``attributes`` are cleared before detection
(detectors read only a ``UnitView``: id, source, step timeline), and a leak check runs the detectors
on the units with their outcomes and asserts identical signals apart from the ``outcome`` signal.
Truth: fail = reward 0 (143 of 300).

Measured, each with n and a 95% interval (Wilson for proportions, a 2,000-resample percentile
bootstrap for ROC AUC, seed 0):

* the three naive baseline rules of issue 17 (escalation tool called; a tool result starting
  with ``Error``; frustration words in a user turn) and their union;
* precision and recall of each detector (a unit counts as flagged when the detector emitted any
  signal on it) and of each signal kind;
* all signals combined: flagged = failure score >= ``fail_at`` (default settings), and flagged =
  any signal at all; ROC AUC of the failure score (``sklearn.metrics.roc_auc_score``); the share in
  the ambiguous band (what open coding would send to a model);
* the failure score **paired against the naive baseline** on the same units (``versus_baseline``): its
  precision at the recall of each rule and of their union, its recall at their precision, and its ROC AUC
  minus that of the naive score (the number of rules fired), each difference with a 95% interval from a
  bootstrap resampling whole tasks (trials of one task are not independent), and a plain verdict: the
  score beats the baseline when both differences against the union and the naive score exclude 0;
* the failure score under the strengths set by reasoning before they were derived on the dev half
  (``reasoned_strengths``), paired against the defaults;
* the failure score at cut-offs 0.3 to 0.8, and per family of detectors (conversation, behaviour,
  consequential actions, and all with the hand-off and refusal cues disabled);
* the calibrated combination (``assay.signals.fit_combination``: a logistic regression over the
  per-detector strengths, what a team gets once experts labelled some units), never in sample:
  out of fold over the 300 (``cross_validated_scores``, 5-fold GroupKFold by task so trials of one
  task never sit on both sides), and fitted on the dev half's labels only (also on 20, 40, 80 of
  them, whole tasks drawn at random, 20 draws) and scored on the test half;
* other data with known failures: the 44 Magentic-One runs AgentRx annotated (all failed: the
  share each detector flags), and the annotated failed tau retail runs per human failure category.

Honesty: thresholds were set by reasoning; the strengths of the agent-side cues were **fitted on dev**
(Cheng causal power on the dev half, ``benchmarks/derive_strengths.py``), so the dev half's numbers are in
sample for them, and the test half was never fitted; while designing the detectors only the
``dev`` half of the runs was looked at (a fixed split by sha256 of ``domain/task_id``, even = dev,
136 runs). ``test`` (164 runs) was not looked at while a detector was designed; ``all`` includes
the dev half. docs/signals.md says which detectors came after which held-out run.

Cost: ``--units N`` (default 10,000) units made by repeating the 300 real runs under new ids (spans
shared between copies, step timelines built anew for each), detected in a subprocess: seconds and
peak RSS (``resource.getrusage``), first streaming (norms fitted on the 300, then ``detect`` unit by
unit), then ``detect_many`` (the whole batch's timelines in memory at once).

Part ``clusters``: failure signatures vs the human failure categories of microsoft/AgentRx (29 failed
tau-bench retail runs, 44 Magentic-One runs, and both together): ARI, NMI and purity (sklearn; noise as
one group, and over the clustered units), coverage (share of units in a signature), against TF-IDF of
the whole transcript + k-means with as many groups over 10 seeds (mean and spread), and chance (assay's
groups permuted). Two truths: the run's first failure's category (primary, as issue 17) and the
root-cause failure's category (as ``bench_signatures.py``). Rows: the product build (signal evidence
text, average linkage cut at the best silhouette, default settings), the build before it (failure-local
text, the three density passes), the other two combinations, and key text + HDBSCAN excess-of-mass (the
build before issue 17). Spread: 20 paired random 80% subsets per row.

Protocol for the clustering default (``DESIGN`` in the code and the results): a fixed grid of 48
candidates, picked on tau retail by the mean margin over the baseline (coverage >= 0.7), the pick scored
once on Magentic-One; then the roles swapped. Both directions pick the silhouette cut; only tau decides
the text.

Part ``discovery``: an expert reviewing in assay's order (``assay.signatures.review_order``: round-robin
over the signatures by impact, one representative each in turn, the unclustered units as one more
queue) vs one reviewing the failed units at random: distinct categories seen after k = 5, 10, 20, 40
reviews and reviews until every category with at least two runs was seen. Random: 1,000 orders (and the
exact hypergeometric expectation); assay: 20 seeds breaking ties between signatures of equal impact and
drawing the queues' spread. Also the app's page layout (each signature's whole queue in turn) and the
share of random orders at least as good as assay's (a one-sided permutation p-value).

Part ``discovery`` also measures **when to stop** (``stopping``): after k = 5, 10, 20 reviews in each order,
the Good-Turing estimate of the chance that the next failure shows a category not seen yet (categories as
the modes criteria would cover) against the share of the failures not yet reviewed whose category is
unseen, and how often Esty's 95% interval holds it.

Honesty: the review-order parameters (queue size 10, the unclustered units' turn) were fixed by
reasoning before these labels were scored; the clustering was chosen by the protocol above. With 29 and 44 units every
number here is small-sample: read n and the spreads.

    python benchmarks/bench_discovery.py --part detection
    python benchmarks/bench_discovery.py --part detection --units 1000
    python benchmarks/bench_discovery.py --part clusters
    python benchmarks/bench_discovery.py --part discovery
    python benchmarks/bench_discovery.py --part detection --units 0     # keep the cost measured before

Each part writes its own key of ``benchmarks/results/discovery.json`` (``detection``, ``clusters``,
``discovery``; other keys kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASSAY_BENCH_DATA", ROOT.parent / "shared" / "data"))
FILES = (DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json",
         DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json")
RESULTS = ROOT / "benchmarks" / "results" / "discovery.json"
SEED = 0
BOOTSTRAP = 2000
BASELINE_FRUSTRATION = re.compile(r"\b(frustrat|annoy|ridiculous|unacceptable|angry|upset|disappoint|terrible|"
                                  r"awful|useless|wrong|problem|issue|unfortunately)", re.IGNORECASE)
"""Issue 17 does not give its word list; this one reproduces its numbers (61 runs, 29 failed)."""


# --- data --------------------------------------------------------------------------------


def load_units() -> list[Any]:
    """The 300 tau-bench runs, in file order (outcomes as recorded)."""
    from assay.traces import read_file

    return [u for path in FILES for u in read_file(path).units]


def withhold(unit: Any) -> Any:
    """The unit as production would have it: no outcome, no reward, no source attributes."""
    return unit.model_copy(update={"outcome": "unknown", "reward": None, "attributes": {}})


def task_key(unit: Any) -> str:
    """``tau-airline/task-7``: the task a run belongs to (airline has 4 trials per task)."""
    return unit.unit_id.rsplit("/", 1)[0]


def split_of(unit: Any) -> str:
    """``dev`` or ``test``, fixed by sha256 of ``DOMAIN/TASK_ID`` (e.g. ``airline/7``; even: dev). Read from
    the unit *with* its attributes (the split used while the detectors were designed)."""
    key = f"{unit.attributes.get('domain')}/{unit.attributes.get('task_id')}"
    return "dev" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2 == 0 else "test"


# --- metrics -----------------------------------------------------------------------------


def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of k/n, rounded (None for n = 0)."""
    from assay.stats import wilson_interval

    return [round(v, 3) for v in wilson_interval(k, n)] if n else None


def rates(truth: Sequence[bool], flagged: Sequence[bool]) -> dict[str, Any]:
    """Precision and recall of ``flagged`` against ``truth`` (True = failed), with n and Wilson CIs."""
    tp = sum(t and f for t, f in zip(truth, flagged, strict=True))
    n_flag, n_fail = sum(flagged), sum(truth)
    return {"flagged": n_flag, "true_positives": tp, "failed": n_fail,
            "precision": round(tp / n_flag, 3) if n_flag else None, "precision_ci": wilson(tp, n_flag),
            "recall": round(tp / n_fail, 3) if n_fail else None, "recall_ci": wilson(tp, n_fail)}


def auc(truth: Sequence[bool], score: Sequence[float]) -> dict[str, Any]:
    """ROC AUC with a percentile bootstrap 95% CI (resamples with one class only are skipped)."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(truth, dtype=int), np.asarray(score, dtype=float)
    rng = np.random.default_rng(SEED)
    boots = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            boots.append(roc_auc_score(y[idx], s[idx]))
    return {"auc": round(float(roc_auc_score(y, s)), 3), "auc_ci": [round(float(v), 3) for v in
                                                                   np.percentile(boots, [2.5, 97.5])],
            "n": len(y), "bootstrap": len(boots)}


def paired_gain(truth: Sequence[bool], score: Sequence[float], other: Sequence[float],
                tasks: Sequence[str]) -> dict[str, Any]:
    """ROC AUC of ``score`` minus that of ``other`` on the same units, with a 95% percentile interval from
    a bootstrap that resamples whole tasks (trials of one task are not independent), 2,000 resamples."""
    from sklearn.metrics import roc_auc_score

    y, a, b = (np.asarray(v, dtype=float) for v in (truth, score, other))
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task, []).append(i)
    names = sorted(groups)
    rng = np.random.default_rng(SEED)
    diffs = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([groups[t] for t in rng.choice(names, len(names))])
        if 0 < y[idx].sum() < len(idx):
            diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    return {"gain": round(float(roc_auc_score(y, a) - roc_auc_score(y, b)), 3),
            "gain_ci": [round(float(v), 3) for v in np.percentile(diffs, [2.5, 97.5])],
            "share_of_resamples_without_gain": round(float(np.mean(np.asarray(diffs) <= 0)), 3),
            "tasks": len(names), "units": len(y)}


def pr_points(truth: Sequence[bool], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` for every distinct score ``t``, highest ``t`` first (ties
    flagged together; recall never decreases along the arrays)."""
    y, s = np.asarray(truth, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp, flagged = np.cumsum(ys)[last], np.arange(1, len(ys) + 1)[last]
    return tp / flagged, tp / max(y.sum(), 1.0)


def precision_at_recall(truth: Sequence[bool], score: Sequence[float], recall: float) -> float:
    """Precision of ``score >= t`` at the highest cut-off ``t`` whose recall reaches ``recall`` (the point of
    the precision-recall curve where it first does; no choice among cut-offs by precision)."""
    prec, rec = pr_points(truth, score)
    return float(prec[int(np.argmax(rec >= recall - 1e-12))])


def recall_at_precision(truth: Sequence[bool], score: Sequence[float], precision: float) -> float:
    """The highest recall of ``score >= t`` over the cut-offs whose precision is at least ``precision``
    (0.0 when none is)."""
    prec, rec = pr_points(truth, score)
    ok = prec >= precision - 1e-12
    return float(rec[ok].max()) if ok.any() else 0.0


def task_resamples(tasks: Sequence[str]) -> list[np.ndarray]:
    """:data:`BOOTSTRAP` resamples of whole tasks (unit indices), seed :data:`SEED`."""
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task, []).append(i)
    names = sorted(groups)
    rng = np.random.default_rng(SEED)
    return [np.concatenate([groups[t] for t in rng.choice(names, len(names))]) for _ in range(BOOTSTRAP)]


def _ci(values: Sequence[float]) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(values, [2.5, 97.5])]


def paired_at_rule(truth: Sequence[bool], score: Sequence[float], rule: Sequence[bool],
                   resamples: list[np.ndarray]) -> dict[str, Any]:
    """The failure score against one binary rule on the same units: its precision at the rule's recall minus
    the rule's precision, and its recall at the rule's precision minus the rule's recall, each with a 95%
    percentile interval from a bootstrap resampling whole tasks (the rule's operating point recomputed in
    every resample; resamples where the rule flags no failed unit are skipped)."""
    y, s, f = np.asarray(truth, dtype=bool), np.asarray(score, dtype=float), np.asarray(rule, dtype=bool)

    def diffs(idx: np.ndarray) -> tuple[float, float, float, float] | None:
        yy, ff = y[idx], f[idx]
        tp = int((yy & ff).sum())
        if tp == 0:
            return None
        p_rule, r_rule = tp / int(ff.sum()), tp / int(yy.sum())
        return (p_rule, r_rule, precision_at_recall(yy, s[idx], r_rule) - p_rule,
                recall_at_precision(yy, s[idx], p_rule) - r_rule)

    point = diffs(np.arange(len(y)))
    assert point is not None, "the rule flags no failed unit"
    boots = [d for d in (diffs(idx) for idx in resamples) if d is not None]
    p_gain, r_gain = [d[2] for d in boots], [d[3] for d in boots]
    return {"rule_precision": round(point[0], 3), "rule_recall": round(point[1], 3),
            "score_precision_at_rule_recall": round(point[0] + point[2], 3),
            "precision_gain": round(point[2], 3), "precision_gain_ci": _ci(p_gain),
            "score_recall_at_rule_precision": round(point[1] + point[3], 3),
            "recall_gain": round(point[3], 3), "recall_gain_ci": _ci(r_gain),
            "resamples": len(boots)}


def versus_baseline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The failure score against the naive baseline on the same units (paired, whole tasks resampled):
    precision at each rule's recall and at the union's (``any_rule``), recall at their precision, and ROC AUC
    against the naive score (the number of rules fired on the unit). ``verdict``: the score beats the
    baseline when the intervals of both differences against the union and the naive score exclude 0."""
    truth = [r["fail"] for r in rows]
    score = [r["assessment"].score for r in rows]
    resamples = task_resamples([r["task"] for r in rows])
    rules = {rule: [r["baseline"][rule] for r in rows] for rule in rows[0]["baseline"]}
    rules["any_rule"] = [any(r["baseline"].values()) for r in rows]
    out: dict[str, Any] = {rule: paired_at_rule(truth, score, flags, resamples) for rule, flags in rules.items()}
    out["auc_vs_naive_count"] = {"naive_auc": auc(truth, [sum(r["baseline"].values()) for r in rows])["auc"],
                                 **paired_gain(truth, score, [sum(r["baseline"].values()) for r in rows],
                                               [r["task"] for r in rows])}
    union, gain = out["any_rule"], out["auc_vs_naive_count"]
    beats = union["precision_gain_ci"][0] > 0 and gain["gain_ci"][0] > 0
    out["verdict"] = (f"beats the baseline: {'yes' if beats else 'no'} (precision at the union's recall "
                      f"{union['precision_gain']:+.3f} {union['precision_gain_ci']}, ROC AUC vs the naive count "
                      f"{gain['gain']:+.3f} {gain['gain_ci']}: the CIs of the differences "
                      f"{'exclude 0' if beats else 'do not both exclude 0'})")
    return out


# --- detection ---------------------------------------------------------------------------


def baseline_rules(view: Any) -> dict[str, bool]:
    """The three naive rules of issue 17 on one unit's step timeline."""
    return {
        "escalation_tool": any(s.kind == "tool_call" and s.tool_name == "transfer_to_human_agents" for s in view.steps),
        "tool_result_error": any(s.kind == "tool_result" and s.text.startswith("Error") for s in view.steps),
        "frustration_words": any(s.kind == "user" and BASELINE_FRUSTRATION.search(s.text) for s in view.steps),
    }


def leak_check(units: list[Any], signals: list[list[Any]]) -> int:
    """Detect on the units *with* their outcomes; assert the same signals apart from ``outcome``.

    Returns:
        the number of outcome signals seen (one per failed unit).
    """
    from assay.signals import detect_many

    with_outcome = detect_many(units)
    for blind, seen in zip(signals, with_outcome, strict=True):
        assert blind == [s for s in seen if s.source != "outcome"], "a detector read the outcome"
    return sum(s.source == "outcome" for seen in with_outcome for s in seen)


CONVERSATION = ("user_frustration", "user_repeat", "escalation", "refusal_loop", "empty_answer",
                "unanswered_complaint")
BEHAVIOUR = ("tool_error", "tool_loop", "retry_after_error", "long_session", "ungrounded_number")
ACTIONS = ("unconfirmed_action", "ungrounded_argument", "action_retry", "many_actions")
FIRST_SET = CONVERSATION + BEHAVIOUR[:4]
FAMILIES = {
    "conversation": CONVERSATION,
    "behaviour": BEHAVIOUR,
    "actions": ACTIONS,
    "behaviour_and_actions": BEHAVIOUR + ACTIONS,
    "first_frozen_set": FIRST_SET,
    "before_actions": CONVERSATION + BEHAVIOUR,
    "handoffs_are_policy": tuple(n for n in CONVERSATION + BEHAVIOUR + ACTIONS
                                 if n not in ("escalation", "refusal_loop")),
}
"""Splits of the detectors, each scored by the noisy-OR of its own signals: what people say vs what the agent
and its tools do vs how consequential actions came about; the ten detectors frozen (commit c643c0d) before
any held-out number was seen; the eleven before the action detectors (``ungrounded_number`` was added after
the first held-out run, designed on the dev half only); and all detectors with ``escalation`` and
``refusal_loop`` disabled, the documented setting for deployments where hand-offs and refusals are what the
policy asks for (chosen on the dev half; since the strengths were derived on the dev half, a hand-off tool call
and a refusal loop weigh 0 by default, so this row differs from the defaults only by a user's unanswered request
for a person)."""


REASONED_STRENGTHS: dict[str, dict[str, float]] = {
    "user_frustration": {"strength": 0.4}, "escalation": {"strength": 0.3, "handoff_strength": 0.3},
    "refusal_loop": {"strength": 0.25, "max_strength": 0.5}, "tool_loop": {"strength": 0.35},
    "retry_after_error": {"strength": 0.2}, "tool_error": {"strength": 0.4}, "ungrounded_number": {"strength": 0.25},
    "unconfirmed_action": {"strength": 0.3}, "ungrounded_argument": {"strength": 0.4},
    "action_retry": {"strength": 0.3},
    "many_actions": {"strength": 0.15, "max_strength": 0.3}, "long_session": {"strength": 0.35},
}
"""The strengths set by reasoning before they were derived on the dev half (detector version 1): the score
they give is the ``reasoned_strengths`` row, paired against the defaults."""


def reasoned_scores(blind: list[Any]) -> list[float]:
    """Failure scores of the units (outcomes withheld) under :data:`REASONED_STRENGTHS`."""
    from assay.signals import SignalSettings, detect_many, failure_score

    return [failure_score(sig) for sig in detect_many(blind, SignalSettings.model_validate(REASONED_STRENGTHS))]


def family(rows: list[dict[str, Any]], fam: str, truth: list[bool]) -> dict[str, Any]:
    """The failure score from one family's signals only (not a tuned variant: a description)."""
    from assay.signals import SignalSettings, failure_score

    fail_at = SignalSettings().fail_at
    scores = [failure_score(s for s in r["signals"] if s.lineage.name in FAMILIES[fam]) for r in rows]
    return {"detectors": list(FAMILIES[fam]), "at_fail_at": rates(truth, [v >= fail_at for v in scores]),
            "roc": auc(truth, scores)}


def evaluate(rows: list[dict[str, Any]], names: list[str], kinds: list[str]) -> dict[str, Any]:
    """All metrics on one subset of units (rows: truth, signals, assessment, baseline, oof)."""
    from assay.signals import SignalSettings, failure_score

    truth = [r["fail"] for r in rows]
    base = {rule: rates(truth, [r["baseline"][rule] for r in rows]) for rule in rows[0]["baseline"]}
    base["any_rule"] = rates(truth, [any(r["baseline"].values()) for r in rows])
    return {
        "units": len(rows), "failed": sum(truth), "base_fail_rate": round(sum(truth) / len(rows), 3),
        "baseline": base,
        "detectors": {n: rates(truth, [any(s.lineage.name == n for s in r["signals"]) for r in rows])
                      for n in names},
        "kinds": {k: rates(truth, [any(s.kind == k for s in r["signals"]) for r in rows]) for k in kinds},
        "families": {fam: family(rows, fam, truth) for fam in FAMILIES},
        "auc_gain_over_before_actions": paired_gain(
            truth, [r["assessment"].score for r in rows],
            [failure_score(s for s in r["signals"] if s.lineage.name in FAMILIES["before_actions"]) for r in rows],
            [r["task"] for r in rows]),
        "combined": {"failure_score_at_fail_at": rates(truth, [r["assessment"].failed for r in rows]),
                     "any_signal": rates(truth, [bool(r["signals"]) for r in rows]),
                     "roc": auc(truth, [r["assessment"].score for r in rows]),
                     "at_thresholds": {f"{t:.1f}": rates(truth, [r["assessment"].score >= t for r in rows])
                                       for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)},
                     "ambiguous_share": round(sum(r["assessment"].ambiguous for r in rows) / len(rows), 3),
                     "ambiguous_ci": wilson(sum(r["assessment"].ambiguous for r in rows), len(rows))},
        "versus_baseline": versus_baseline(rows),
        "reasoned_strengths": {"at_fail_at": rates(truth, [r["reasoned"] >= SignalSettings().fail_at for r in rows]),
                               "roc": auc(truth, [r["reasoned"] for r in rows]),
                               "auc_gain_of_defaults": paired_gain(truth, [r["assessment"].score for r in rows],
                                                                   [r["reasoned"] for r in rows],
                                                                   [r["task"] for r in rows])},
        "logistic_out_of_fold": {"at_0.5": rates(truth, [r["oof"] >= 0.5 for r in rows]),
                                 "roc": auc(truth, [r["oof"] for r in rows])},
    }


def calibrated_on_dev(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A team labelled the dev half: the combination fitted on dev labels only, scored on the test half; and
    with fewer labels (tasks of the dev half drawn at random until ``n`` units, 20 draws per size)."""
    from assay.signals import fit_combination

    dev = [r for r in rows if r["split"] == "dev"]
    test = [r for r in rows if r["split"] == "test"]
    truth = [r["fail"] for r in test]
    combo = fit_combination([r["signals"] for r in dev], [r["fail"] for r in dev])
    scores = [combo.score(r["signals"]) for r in test]
    rng = np.random.default_rng(SEED)
    curve = {}
    tasks = sorted({r["task"] for r in dev})
    for n in (20, 40, 80):
        aucs = []
        for _ in range(20):
            picked: list[dict[str, Any]] = []
            for task in rng.permutation(tasks):
                picked += [r for r in dev if r["task"] == task]
                if len(picked) >= n:
                    break
            if 0 < sum(r["fail"] for r in picked) < len(picked):
                small = fit_combination([r["signals"] for r in picked], [r["fail"] for r in picked])
                aucs.append(auc(truth, [small.score(r["signals"]) for r in test])["auc"])
        curve[str(n)] = {"draws": len(aucs), "mean_auc": round(float(np.mean(aucs)), 3),
                         "auc_range_2.5_97.5": [round(float(v), 3) for v in np.percentile(aucs, [2.5, 97.5])]}
    return {"fitted_on": f"dev half ({len(dev)} units, {sum(r['fail'] for r in dev)} failed)",
            "scored_on": f"test half ({len(test)} units)", "at_0.5": rates(truth, [v >= 0.5 for v in scores]),
            "roc": auc(truth, scores), "features": list(combo.features),
            "coefficients": list(combo.coefficients), "intercept": combo.intercept, "fewer_labels": curve}


AGENTRX = DATA / "agentrx" / "data"


def magentic_one(settings: Any) -> dict[str, Any]:
    """The detectors on the Magentic-One runs that AgentRx annotated (every one a human-confirmed failure):
    the share each detector flags (its recall; with no passing run, precision cannot be measured)."""
    from assay.signals import assess, detect_many
    from assay.traces import read_file

    truth = json.loads((AGENTRX / "ground_truth" / "magentic_one_ground_truth.json").read_text())
    runs = [read_file(AGENTRX / "magentic_dataset" / f"{g['trajectory_id']}.json").units[0] for g in truth]
    signals = detect_many(runs, settings)
    flagged = [True] * len(runs)
    per = {name: rates(flagged, [any(s.lineage.name == name for s in sig) for sig in signals])["recall"]
           for name in sorted({s.lineage.name for sig in signals for s in sig})}
    return {"data": "agentrx/data/magentic_dataset, the 44 runs in magentic_one_ground_truth.json (all failed)",
            "units": len(runs), "recall_by_detector": per,
            "any_signal": rates(flagged, [bool(sig) for sig in signals]),
            "failure_score_at_fail_at": rates(flagged, [assess(u.unit_id, sig, settings).failed
                                                       for u, sig in zip(runs, signals, strict=True)]),
            "consequential_actions": sum(any(s.lineage.name in ACTIONS for s in sig) for sig in signals)}


def retail_categories(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The failed tau retail runs that AgentRx annotated: per human failure category (a run counts under
    each category among its failures), the share flagged by the action detectors, by any detector, and by
    the failure score at ``fail_at``."""
    truth = json.loads((AGENTRX / "ground_truth" / "tau_ground_truth.json").read_text())
    by_id = {r["id"]: r for r in rows}
    out: dict[str, dict[str, Any]] = {}
    for g in truth:
        row = by_id.get(f"tau-retail/task-{g['trajectory_id']}/trial-{g['trajectory_id']}")
        if row is None or not row["fail"]:
            continue
        for cat in {f["failure_category"].strip() for f in g["failures"]}:
            c = out.setdefault(cat, {"runs": 0, "actions": 0, "any_signal": 0, "failure_score": 0})
            c["runs"] += 1
            c["actions"] += any(s.lineage.name in ACTIONS for s in row["signals"])
            c["any_signal"] += bool(row["signals"])
            c["failure_score"] += row["assessment"].failed
    return {"data": "agentrx/data/ground_truth/tau_ground_truth.json, runs also in tau_dataset_full.json",
            "runs": len({g["trajectory_id"] for g in truth if f"tau-retail/task-{g['trajectory_id']}/trial-"
                         f"{g['trajectory_id']}" in by_id}), "by_category": dict(sorted(out.items()))}


def detection() -> dict[str, Any]:
    """The detection part (see module docstring)."""
    from assay.signals import DETECTORS, SignalSettings, assess, cross_validated_scores, detect_many, unit_view

    settings = SignalSettings()
    units = load_units()
    blind = [withhold(u) for u in units]
    signals = detect_many(blind, settings)
    outcome_signals = leak_check(units, signals)
    names = [n for n in DETECTORS]
    oof, folds = cross_validated_scores(signals, [u.outcome == "fail" for u in units], [task_key(u) for u in units])
    rows = [{"id": u.unit_id, "fail": u.outcome == "fail", "split": split_of(u), "task": task_key(u), "signals": s,
             "oof": float(p), "assessment": assess(b.unit_id, s, settings), "baseline": baseline_rules(unit_view(b)),
             "reasoned": r} for u, b, s, p, r in zip(units, blind, signals, oof, reasoned_scores(blind), strict=True)]
    kinds = sorted({s.kind for sig in signals for s in sig})
    return {
        "data": [str(p.relative_to(DATA)) for p in FILES], "truth": "fail = reward 0 (outcome withheld)",
        "leak_check": f"passed: identical signals with outcomes set, apart from {outcome_signals} outcome signals",
        "settings": "defaults (SignalSettings())", "fail_at": settings.fail_at,
        "strengths": "fitted on dev: the agent-side strengths are Cheng causal powers on the dev half "
                     "(benchmarks/derive_strengths.py), so dev numbers are in sample for them; test never fitted",
        "ambiguous_band": [settings.ambiguous_low, settings.ambiguous_high],
        "split": "dev/test by sha256(domain/task_id) parity; design looked at dev only",
        "detector_versions": {n: d.version for n, d in DETECTORS.items()},
        "logistic_coefficients_per_fold": {"features": list(folds[0].features),
                                           "folds": [list(f.coefficients) for f in folds]},
        **{part: evaluate([r for r in rows if part == "all" or r["split"] == part], names, kinds)
           for part in ("all", "test", "dev")},
        "calibrated_on_dev_labels": calibrated_on_dev(rows),
        "other_data": {"magentic_one": magentic_one(settings), "tau_retail_categories": retail_categories(rows)},
    }


# --- cost --------------------------------------------------------------------------------


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cost_worker(n: int) -> dict[str, Any]:
    """Detect on ``n`` units (the 300 repeated under new ids); time and peak memory."""
    from assay.signals import SignalSettings, assess, detect, detect_many, fit, unit_view

    settings = SignalSettings()
    real = [withhold(u) for u in load_units()]
    units = [real[i % len(real)].model_copy(update={"unit_id": f"{real[i % len(real)].unit_id}#copy-{i}"})
             for i in range(n)]
    loaded = peak_mb()
    fitted = fit([unit_view(u) for u in real], settings)
    t0 = time.perf_counter()
    count = sum(len(detect(u, settings, fitted)) for u in units)
    stream_s = time.perf_counter() - t0
    stream_peak = peak_mb()
    t0 = time.perf_counter()
    signals = detect_many(units, settings)
    batch_s = time.perf_counter() - t0
    ambiguous = sum(assess(u.unit_id, s, settings).ambiguous for u, s in zip(units, signals, strict=True))
    return {"units": n, "batch_seconds": round(batch_s, 2), "batch_units_per_s": round(n / batch_s),
            "stream_seconds": round(stream_s, 2), "stream_units_per_s": round(n / stream_s),
            "signals": count, "ambiguous_share": round(ambiguous / n, 3), "peak_rss_mb_after_loading": loaded,
            "peak_rss_mb_after_stream": stream_peak, "peak_rss_mb_after_detect_many": peak_mb()}


def cost(n: int) -> dict[str, Any]:
    """Run :func:`cost_worker` in a subprocess (its own peak memory)."""
    print(f"cost run: {n} units (subprocess)", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--cost-worker", str(n)], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return {**json.loads(proc.stdout.strip().splitlines()[-1]),
            "note": "the 300 real runs repeated under new ids; spans shared between copies, timelines built "
                    "anew per unit; peak RSS includes the loaded units", "cpu": platform.processor() or None,
            "measured_at": time.strftime("%Y-%m-%d")}


# --- clusters and discovery: the AgentRx human failure categories ----------------------------

AGENTRX = DATA / "agentrx" / "data"
KMEANS_SEEDS = tuple(range(10))
SUBSAMPLES = 20
SUBSAMPLE_SHARE = 0.8
RANDOM_SEEDS = 1000
TIE_SEEDS = 20
REVIEWS = (5, 10, 20, 40)
TRUTHS = ("root_cause", "first")
"""``root_cause``: the category of the failure the annotators named the root cause (as
``bench_signatures.py``); ``first``: the category of a run's first failure (its lowest step)."""


def _category(text: object) -> str:
    return " ".join(str(text).lower().split())


def human_categories(path: Path) -> dict[str, dict[str, str]]:
    """``{trajectory id: {"root_cause": category, "first": category}}`` (lower case, spaces
    collapsed); runs whose root cause names no listed failure are left out."""
    out: dict[str, dict[str, str]] = {}
    for run in json.loads(path.read_text(encoding="utf-8")):
        failures = run["failures"]
        root = str((run.get("root_cause") or {}).get("failure_id"))
        cause = next((f["failure_category"] for f in failures if str(f.get("failure_id")) == root), None)
        first = min(failures, key=lambda f: f["step_number"] if isinstance(f["step_number"], int) else 10**6)
        if cause:
            out[str(run["trajectory_id"])] = {"root_cause": _category(cause),
                                              "first": _category(first["failure_category"])}
    return out


def annotated_sets() -> dict[str, tuple[list[Any], dict[str, dict[str, str]]]]:
    """The AgentRx runs with human failure categories as units (outcome ``fail``: people annotated
    them as failed): ``{"tau": (29 units, {unit id: categories}), "magentic": (44 units, ...)}``."""
    from assay.traces import read_file

    tau_gt = human_categories(AGENTRX / "ground_truth" / "tau_ground_truth.json")
    mag_gt = human_categories(AGENTRX / "ground_truth" / "magentic_one_ground_truth.json")
    failed = read_file(AGENTRX / "tau_retail" / "tau_dataset_failed.json").units
    tau = [u.model_copy(update={"outcome": "fail"}) for u in failed if str(u.attributes["task_id"]) in tau_gt]
    mag = [read_file(AGENTRX / "magentic_dataset" / f"{run}.json").units[0].model_copy(update={"outcome": "fail"})
           for run in sorted(mag_gt)]
    return {"tau": (tau, {u.unit_id: tau_gt[str(u.attributes["task_id"])] for u in tau}),
            "magentic": (mag, {u.unit_id: mag_gt[u.unit_id.split("/", 1)[1]] for u in mag})}


def build_store(units: list[Any], path: Path, settings: Any) -> Any:
    """A fresh SQLite store holding ``units``, signatures built with ``settings``."""
    from assay._store import Store
    from assay.signatures import build_signatures

    store = Store("sqlite:///" + str(path))
    store.add_units(units)
    build_signatures(store, settings)
    return store


def stored_vectors(store: Any, unit_ids: list[str], model: str) -> np.ndarray:
    """The cached embeddings of ``unit_ids`` (written by the build), in order."""
    from sqlalchemy import select

    from assay._store.tables import EmbeddingRow
    from assay.signatures.embeddings import vector_from_bytes

    with store.session() as s:
        rows = {r.unit_id: r.vector for r in s.scalars(select(EmbeddingRow).where(EmbeddingRow.model == model))}
    return np.vstack([vector_from_bytes(rows[u]) for u in unit_ids])


def partition_scores(truth: list[str], groups: list[int]) -> dict[str, Any]:
    """ARI / NMI / purity with noise (-1) as one group, and over the clustered units only."""
    from bench_signatures import scores

    kept = [i for i, g in enumerate(groups) if g != -1]
    return {"noise_as_group": scores(truth, groups),
            "clustered_only": scores([truth[i] for i in kept], [groups[i] for i in kept]) if len(kept) > 1 else None}


def tfidf_matrix(units: list[Any]) -> Any:
    """TF-IDF of each whole rendered transcript, as ``bench_signatures.baseline``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from assay.traces import render_timeline, step_timeline

    docs = [render_timeline(step_timeline(u)) for u in units]
    return TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(docs)


def kmeans_groups(matrix: Any, k: int, seed: int) -> list[int]:
    from sklearn.cluster import KMeans

    return [int(g) for g in KMeans(n_clusters=max(1, min(k, matrix.shape[0])), n_init=10,
                                   random_state=seed).fit_predict(matrix)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof 0), min and max, rounded."""
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 4), "sd": round(float(arr.std()), 4),
            "min": round(float(arr.min()), 4), "max": round(float(arr.max()), 4)}


def baseline_seeds(matrix: Any, truth: list[str], k: int) -> dict[str, Any]:
    """TF-IDF + k-means with ``k`` groups over :data:`KMEANS_SEEDS`: each metric's spread."""
    from bench_signatures import scores

    runs = [scores(truth, kmeans_groups(matrix, k, seed)) for seed in KMEANS_SEEDS]
    return {"k": k, "seeds": len(KMEANS_SEEDS), **{m: spread([r[m] for r in runs]) for m in ("ari", "nmi", "purity")}}


def subsampled(vectors: np.ndarray, keys: list[Any], units: list[Any], truth: list[str], settings: Any,
               method: str) -> dict[str, Any]:
    """Paired comparison on :data:`SUBSAMPLES` random subsets of :data:`SUBSAMPLE_SHARE` of the units:
    assay's clustering (``signature_labels`` with ``method``, without the label merge of a build) vs
    TF-IDF + k-means with as many groups, same subset. Per metric: the share of subsets where assay
    scores higher, and the mean difference (assay - baseline), noise as one group."""
    from bench_signatures import scores

    from assay.signatures.cluster import signature_labels

    rng = np.random.default_rng(SEED)
    diffs: dict[str, list[float]] = {m: [] for m in ("ari", "nmi", "purity")}
    coverage = []
    for n in range(SUBSAMPLES):
        idx = np.sort(rng.choice(len(units), size=round(SUBSAMPLE_SHARE * len(units)), replace=False))
        groups = [int(g) for g in signature_labels(vectors[idx], [keys[i] for i in idx], settings.min_cluster_size,
                                                   method)]
        sub_truth = [truth[i] for i in idx]
        ours = scores(sub_truth, groups)
        theirs = scores(sub_truth, kmeans_groups(tfidf_matrix([units[i] for i in idx]), len(set(groups)), n))
        coverage.append(sum(g != -1 for g in groups) / len(groups))
        for m in diffs:
            diffs[m].append(ours[m] - theirs[m])
    return {"subsets": SUBSAMPLES, "share": SUBSAMPLE_SHARE, "coverage": spread(coverage),
            **{m: {"assay_higher_share": round(sum(d > 0 for d in v) / len(v), 3), "mean_difference": spread(v)}
               for m, v in diffs.items()}}


METHODS = ("silhouette", "density")
"""``settings.signature_clustering`` values scored on each text (``silhouette`` is the default)."""
PRODUCT = "evidence_text/silhouette"
"""The product build (default settings); ``failure_text/density`` is the build before it."""


def variants(store: Any, units: list[Any], settings: Any) -> dict[str, list[int]]:
    """Groups per unit (-1 noise) of a build's clustering on the vectors in ``store`` (built with
    ``settings``), for each of :data:`METHODS` (label merge included, exactly as a build), and of
    HDBSCAN alone with excess-of-mass clusters (the build before issue 17, on key text)."""
    from sklearn.cluster import HDBSCAN

    from assay.signatures.build import _cluster, prepare
    from assay.signatures.cluster import clustering_space

    ids = [u.unit_id for u in units]
    prepared = prepare(store, settings, ids)
    out = {}
    for method in METHODS:
        clusters, _ = _cluster(prepared, settings.model_copy(update={"signature_clustering": method}))
        where = {i: n for n, c in enumerate(clusters) for i in c.members}
        out[method] = [where.get(i, -1) for i in range(len(ids))]
    space = clustering_space(prepared.vectors, prepared.keys)
    out["hdbscan_eom_only"] = [int(g) for g in HDBSCAN(min_cluster_size=settings.min_cluster_size,
                                                       copy=True).fit_predict(space)]
    return out


def cluster_rows(name: str, units: list[Any], cats: dict[str, dict[str, str]], workdir: Path) -> dict[str, Any]:
    """Every clustering of one set against both truths (see :func:`clusters`)."""
    from bench_signatures import chance

    from assay.settings import Settings
    from assay.signatures import list_signatures
    from assay.signatures.keys import unit_key

    matrix = tfidf_matrix(units)
    out: dict[str, Any] = {"units": len(units), "categories": {t: dict(Counter(c[t] for c in cats.values())
                                                                      .most_common()) for t in TRUTHS}, "rows": {},
                           "subsampled": {}}
    for text in ("evidence", "failure", "key"):
        settings = Settings.model_validate({"signature_text": text})
        store = build_store(units, workdir / f"{name}-{text}.db", settings)
        for method, groups in variants(store, units, settings).items():
            if (text == "key") != (method == "hdbscan_eom_only"):
                continue
            row: dict[str, Any] = {"signatures": len(set(groups) - {-1}), "noise": groups.count(-1),
                                   "coverage": round(1 - groups.count(-1) / len(groups), 4),
                                   "groups_scored": len(set(groups))}
            for truth_name in TRUTHS:
                truth = [cats[u.unit_id][truth_name] for u in units]
                row[truth_name] = {"assay": partition_scores(truth, groups),
                                   "baseline_tfidf_kmeans": baseline_seeds(matrix, truth, len(set(groups))),
                                   "chance_same_group_sizes": chance(truth, groups)}
            out["rows"][f"{text}_text/{method}"] = row
            if text != "key":
                vectors = stored_vectors(store, [u.unit_id for u in units], settings.embedding_model)
                keys = [unit_key(u) for u in units]
                out["subsampled"][f"{text}_text/{method}"] = {
                    t: subsampled(vectors, keys, units, [cats[u.unit_id][t] for u in units], settings, method)
                    for t in TRUTHS}
        if text == "evidence":
            out["signature_table"] = [{"id": s.id, "size": s.size, "label": s.label, "key": s.structural_key,
                                       **{t: dict(Counter(cats[u][t] for u in s.unit_ids).most_common())
                                          for t in TRUTHS}} for s in list_signatures(store)]
        store.close()
    out["goal"] = cluster_goal(out["rows"][PRODUCT])
    out["goal_before"] = cluster_goal(out["rows"]["failure_text/density"])
    return out


def cluster_goal(row: dict[str, Any]) -> dict[str, Any]:
    """Issue 17's goal per truth: ARI, NMI and purity (noise as one group) above the baseline's mean
    over seeds, with coverage >= 0.7."""
    out: dict[str, Any] = {"coverage_at_least_0.7": row["coverage"] >= 0.7}
    for truth in TRUTHS:
        ours, base = row[truth]["assay"]["noise_as_group"], row[truth]["baseline_tfidf_kmeans"]
        beats = {m: ours[m] > base[m]["mean"] for m in ("ari", "nmi", "purity")}
        out[truth] = {**beats, "met": all(beats.values()) and row["coverage"] >= 0.7}
    return out


DESIGN = {
    "protocol": "The clustering was chosen on one annotated set and checked on the other, then the roles were "
                "swapped. A fixed grid of 48 candidates was written before any was scored: text (failure-local "
                "text as before; the same with signals ordered earliest step first; the signal evidence lines "
                "alone) x representation (MiniLM embedding; embedding mixed 50/50 with a TF-IDF + SVD of the "
                "same text) x clustering (the density passes as before; the same plus noise joining the nearest "
                "signature within GROUP_DISTANCE; average linkage over all units cut at the k of best silhouette; "
                "k-means at the k of best silhouette) x key weight (0.5 as before, 1.0). Design score J: mean over "
                "both truths and ARI/NMI/purity of (assay - baseline mean), coverage >= 0.7 required. The "
                "candidate with the highest J on the design set was then scored once on the held-out set.",
    "direction_a": {"design": "tau (29)", "held_out": "magentic (44)",
                    "picked": "evidence text, MiniLM, average linkage cut at best silhouette, key weight 0.5",
                    "design_J": 0.0407, "design_wins": "6/6", "held_out_J": 0.0377,
                    "held_out_wins": "5/6 (first: 3/3; root cause: purity 0.409 vs 0.473 lost)"},
    "direction_b": {"design": "magentic (44)", "held_out": "tau (29)",
                    "picked": "a four-way tie at J 0.0377 (identical partitions: on Magentic-One the key codes "
                              "decide the silhouette cut whatever the text): average linkage at best silhouette, "
                              "key weight 0.5, with the failure-local text, the earliest-first text (plain or "
                              "mixed) or the evidence text",
                    "held_out_J_of_tied": {"failure_text": -0.025, "earliest_first": 0.0112,
                                           "earliest_first_mixed": -0.0072, "evidence_text": 0.0407},
                    "reading": "the clustering (silhouette cut) is picked in both directions; the text is decided "
                               "by tau alone, so the evidence text's share of the win is not confirmed on a "
                               "held-out set"},
    "adopted": "direction A's pick as the default (signature_text 'evidence', signature_clustering 'silhouette'); "
               "the rows and subsampled numbers below are the product measured on both sets",
    "grid_run": "2026-12-06, scripts outside the repo (the grid's numbers above are its output)",
    "discovery_trade_off": "discovery part with the build before this change (same bench, the previous src) vs "
                           "after, round-robin, first truth: tau k=5 3.50 -> 2.60, k=10 6.00 -> 5.45, reviews to "
                           "cover 8.15 -> 8.00 (random 3.54, 5.07, 12.43); magentic k=5 3.80 -> 4.00, k=10 5.20 -> "
                           "6.00, reviews to cover 12.25 -> 8.00 (random 2.96, 4.26, 21.55)",
}
"""How the default clustering was chosen (see :func:`clusters`)."""


def clusters() -> dict[str, Any]:
    """Signatures vs the human failure categories of AgentRx (tau retail, Magentic-One, both).

    Rows (``TEXT_text/METHOD``): the product build (:data:`PRODUCT`, ``evidence_text/silhouette``: the
    signal evidence, average linkage cut at the best silhouette; default settings), the build before it
    (``failure_text/density``: failure-local text, HDBSCAN + close noise joins + leftover groups), the
    two other combinations, and HDBSCAN alone with excess-of-mass clusters on key text (the build
    before issue 17). Each scored against both truths: ARI, NMI, purity with noise as one group
    (every unit counted) and over the clustered units; the baseline is TF-IDF + k-means with as many
    groups over 10 seeds (mean, sd, min, max); chance is assay's groups permuted. ``subsampled``:
    paired assay vs baseline on 20 random 80% subsets, per row.

    Protocol (:data:`DESIGN`, written into the results): the default was picked on tau retail from a
    fixed grid and checked once on Magentic-One; with the roles swapped, Magentic-One picks the same
    clustering but cannot tell the texts apart. With 29 and 44 units a difference inside the
    baseline's spread or the subsets' is a tie.
    """
    import tempfile

    sets = annotated_sets()
    sets["combined"] = (sets["tau"][0] + sets["magentic"][0], {**sets["tau"][1], **sets["magentic"][1]})
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: cluster_rows(name, units, cats, Path(tmp)) for name, (units, cats) in sets.items()}
    return {"data": "microsoft/AgentRx ground truth (tau retail 29 failed runs, Magentic-One 44)",
            "truths": {"first": "category of the run's first failure (lowest step; primary, as issue 17)",
                       "root_cause": "category of the root-cause failure (as bench_signatures.py)"},
            "settings": "defaults (signature_text evidence, signature_clustering silhouette, key weight 0.5); "
                        "failure_text/density with min_cluster_size 5 and GROUP_DISTANCE 0.5",
            "design": DESIGN, "sets": out}


def distinct_after(order: Sequence[str], truth: dict[str, str], ks: Sequence[int]) -> dict[int, int]:
    """Distinct categories among the first k reviewed units, for each k."""
    return {k: len({truth[u] for u in order[:k]}) for k in ks}


def reviews_to_cover(order: Sequence[str], truth: dict[str, str], minimum: int = 2) -> int:
    """Reviews until every category with at least ``minimum`` units has been seen."""
    wanted = {c for c, n in Counter(truth.values()).items() if n >= minimum}
    seen: set[str] = set()
    for n, unit in enumerate(order, 1):
        seen.add(truth[unit])
        if wanted <= seen:
            return n
    return len(order)


def expected_distinct(truth: dict[str, str], k: int) -> float:
    """Exact expected number of distinct categories among k units drawn at random without
    replacement: sum over categories of 1 - C(n - n_c, k) / C(n, k)."""
    n = len(truth)
    return sum(1 - math.comb(n - m, k) / math.comb(n, k) for m in Counter(truth.values()).values())


def curve(orders: list[list[str]], truth: dict[str, str]) -> dict[str, Any]:
    """Distinct categories after each k of :data:`REVIEWS` (k <= units) and reviews to cover every
    category with >= 2 units, over several orders."""
    ks = [k for k in REVIEWS if k <= len(truth)]
    seen = [distinct_after(o, truth, ks) for o in orders]
    return {"orders": len(orders), "distinct_after": {str(k): spread([s[k] for s in seen]) for k in ks},
            "reviews_to_cover_categories_with_2_plus": spread([reviews_to_cover(o, truth) for o in orders])}


def tie_shuffled(signatures: list[Any], seed: int) -> list[Any]:
    """Signatures by impact, those with the same impact (to 3 decimals) in an order the seed draws."""
    rng = np.random.default_rng(seed)
    keys = {s.id: (-round(s.impact, 3), float(rng.random())) for s in signatures}
    return sorted(signatures, key=lambda s: keys[s.id])


def assay_orders(store: Any, seed: int) -> dict[str, list[str]]:
    """The review orders of one tie-breaking seed: ``round_robin`` (``review_order``, the product's),
    ``round_robin_noise_last`` (unclustered units only after every queue) and ``queue_by_signature``
    (each signature's whole queue in turn, as the app's pages are laid out today)."""
    from sqlalchemy import select

    from assay._store.tables import MemberRow
    from assay.signatures import list_signatures, review_order, sample_queue
    from assay.signatures.sample import REVIEW_QUEUE_SIZE, round_robin

    ranking = tie_shuffled(list_signatures(store), seed)
    queues = [sample_queue(store, s.id, REVIEW_QUEUE_SIZE, seed) for s in ranking]
    with store.session() as s:
        loose = sorted(s.scalars(select(MemberRow.unit_id).where(MemberRow.signature_id.is_(None))))
    loose = [loose[i] for i in np.random.default_rng(seed).permutation(len(loose))]
    rest = [[u for u in sig.unit_ids if u not in set(q)] for sig, q in zip(ranking, queues, strict=True)]
    return {"round_robin": review_order(store, REVIEW_QUEUE_SIZE, seed, ranking),
            "round_robin_noise_last": round_robin(queues) + loose + round_robin(rest),
            "queue_by_signature": [u for q in queues for u in q] + loose + [u for r in rest for u in r]}


STOP_AT = (5, 10, 20)
"""Reviews after which the stopping estimate is measured."""


def stopping(orders: list[list[str]], truth: dict[str, str]) -> dict[str, Any]:
    """The Good-Turing estimate (``assay.signatures.unseen.good_turing``, categories as modes) after k reviews
    in each order, against the truth: ``missing_mass``, the share of the failures not yet reviewed whose
    category was not seen (the chance for a next failure drawn at random from them), and ``next_is_new``,
    whether the order's own next review showed an unseen category; ``covered``: the share of orders whose
    95% interval (when defined) holds the missing mass."""
    from assay.signatures.unseen import good_turing

    out: dict[str, Any] = {}
    for k in (k for k in STOP_AT if k < len(truth)):
        est, mass, new, hits, tested = [], [], [], 0, 0
        for order in orders:
            seen = Counter(truth[u] for u in order[:k])
            rest = order[k:]
            gt = good_turing(seen)
            missing = sum(truth[u] not in seen for u in rest) / len(rest)
            est.append(gt.estimate or 0.0)
            mass.append(missing)
            new.append(float(truth[rest[0]] not in seen))
            if gt.low is not None and gt.high is not None:
                tested += 1
                hits += gt.low <= missing <= gt.high
        out[str(k)] = {"estimate": round(float(np.mean(est)), 3), "missing_mass": round(float(np.mean(mass)), 3),
                       "next_is_new": round(float(np.mean(new)), 3),
                       "covered": round(hits / tested, 3) if tested else None, "orders_with_interval": tested}
    return out


def discovery_set(units: list[Any], cats: dict[str, dict[str, str]], workdir: Path) -> dict[str, Any]:
    """Random review vs assay's review orders on one set, for both truths."""
    from assay.settings import Settings

    store = build_store(units, workdir / "discovery.db", Settings.model_validate({}))
    seeds = [assay_orders(store, seed) for seed in range(TIE_SEEDS)]
    store.close()
    ids = [u.unit_id for u in units]
    rng = np.random.default_rng(SEED)
    randoms = [[ids[i] for i in rng.permutation(len(ids))] for _ in range(RANDOM_SEEDS)]
    out: dict[str, Any] = {"units": len(ids)}
    for truth_name in TRUTHS:
        truth = {u: cats[u][truth_name] for u in ids}
        counts = Counter(truth.values())
        ks = [k for k in REVIEWS if k <= len(ids)]
        out[truth_name] = {
            "categories": dict(counts.most_common()), "with_2_plus": sum(n >= 2 for n in counts.values()),
            "best_possible": {"distinct_after": {str(k): min(k, len(counts)) for k in ks},
                              "reviews_to_cover_categories_with_2_plus": sum(n >= 2 for n in counts.values())},
            "random": {"expected_distinct_after": {str(k): round(expected_distinct(truth, k), 3) for k in ks},
                       **curve(randoms, truth)},
            **{name: curve([s[name] for s in seeds], truth) for name in seeds[0]},
        }
        out[truth_name]["goal"] = discovery_goal(out[truth_name])
        out[truth_name]["random_at_least_as_good"] = luck(seeds, randoms, truth)
        out[truth_name]["stopping"] = {"random": stopping(randoms, truth),
                                       **{name: stopping([s[name] for s in seeds], truth)
                                          for name in ("round_robin", "queue_by_signature")}}
    return out


def luck(seeds: list[dict[str, list[str]]], randoms: list[list[str]], truth: dict[str, str]) -> dict[str, float]:
    """How often a random order does at least as well as the product order (``round_robin``): the share
    of random orders with as many distinct categories or more after k = 5 and 10, and with as few reviews
    to cover or fewer, averaged over assay's seeds. A one-sided permutation p-value of "the signatures
    help": the build is one clustering, so a small set can beat random by luck."""
    ks = (5, 10)
    rand_seen = [distinct_after(o, truth, ks) for o in randoms]
    rand_cover = [reviews_to_cover(o, truth) for o in randoms]
    ours = [s["round_robin"] for s in seeds]
    out = {f"distinct_after_{k}": float(np.mean([np.mean([r[k] >= distinct_after(o, truth, ks)[k] for r in rand_seen])
                                                 for o in ours])) for k in ks}
    out["reviews_to_cover"] = float(np.mean([np.mean([c <= reviews_to_cover(o, truth) for c in rand_cover])
                                             for o in ours]))
    return {k: round(v, 3) for k, v in out.items()}


def discovery_goal(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 17's goal for the product order: more categories than random at k = 5 and 10 (means),
    and fewer reviews than random to cover every category with >= 2 runs (means)."""
    ours, rand = result["round_robin"], result["random"]
    more = {k: ours["distinct_after"][k]["mean"] > rand["distinct_after"][k]["mean"] for k in ("5", "10")}
    key = "reviews_to_cover_categories_with_2_plus"
    fewer = ours[key]["mean"] < rand[key]["mean"]
    return {"more_at_5": more["5"], "more_at_10": more["10"], "fewer_reviews_to_cover": fewer,
            "met": all(more.values()) and fewer}


def discovery() -> dict[str, Any]:
    """The discovery curve (see :func:`discovery_set`) on AgentRx tau retail and Magentic-One."""
    import tempfile

    sets = annotated_sets()
    out = {}
    for name, (units, cats) in sets.items():
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = discovery_set(units, cats, Path(tmp))
    return {"data": "microsoft/AgentRx ground truth (tau retail 29 failed runs, Magentic-One 44)",
            "truths": {"first": "category of the run's first failure (primary, as issue 17)",
                       "root_cause": "category of the root-cause failure"},
            "random": f"{RANDOM_SEEDS} random orders (numpy seed {SEED}); expected_distinct_after is exact "
                      "(hypergeometric)",
            "assay": f"{TIE_SEEDS} seeds: signatures of equal impact shuffled, sample_queue's spread and the "
                     "unclustered units' order drawn; the build itself is deterministic",
            "queue_size": 10, "sets": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["detection", "clusters", "discovery", "all"], default="all")
    parser.add_argument("--units", type=int, default=10_000, help="units in the cost run (default 10000; 0 keeps "
                        "the cost already in the results file)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cost-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cost_worker:
        print(json.dumps(cost_worker(args.cost_worker)))
        return 0
    parts = ["detection", "clusters", "discovery"] if args.part == "all" else [args.part]
    for part in parts:
        result, text = _run_part(part, args, parser)
        # read the file only now: a run of another part meanwhile keeps its numbers
        results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "platform": platform.platform()}
        results[part] = result
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(text)
    print(f"wrote {args.out}")
    return 0


def _run_part(part: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict[str, Any], str]:
    if part == "clusters":
        result = {**clusters(), "measured_at": time.strftime("%Y-%m-%d")}
        return result, cluster_summary(result)
    if part == "discovery":
        result = {**discovery(), "measured_at": time.strftime("%Y-%m-%d")}
        return result, discovery_summary(result)
    before: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = before.get("detection", {}).get("cost")
    if args.units == 0 and kept is None:
        parser.error("--units 0 keeps the cost measured before, but the results file has none")
    result = {**detection(), "cost": cost(args.units) if args.units else kept}
    return result, summary(result)


def cluster_summary(result: dict[str, Any]) -> str:
    """One line per set and row: coverage and ARI / NMI / purity (root cause, noise as one group) vs
    the baseline's mean."""
    lines = []
    for name, r in result["sets"].items():
        for row_name, row in r["rows"].items():
            for truth in TRUTHS:
                a, b = row[truth]["assay"]["noise_as_group"], row[truth]["baseline_tfidf_kmeans"]
                lines.append(f"{name:9s} n={r['units']:2d} {row_name:30s} {truth:10s} sigs {row['signatures']:2d} "
                             f"cov {row['coverage']:.2f} | ARI {a['ari']:+.3f} NMI {a['nmi']:.3f} pur {a['purity']:.3f}"
                             f" | k-means ARI {b['ari']['mean']:+.3f}±{b['ari']['sd']:.3f} NMI {b['nmi']['mean']:.3f}"
                             f"±{b['nmi']['sd']:.3f} pur {b['purity']['mean']:.3f}±{b['purity']['sd']:.3f}")
        for row_name, sub in r["subsampled"].items():
            for truth in TRUTHS:
                lines.append(f"{name:9s} subsets {row_name:24s} {truth:10s} cov {sub[truth]['coverage']['mean']:.2f} "
                             + " ".join(f"{m} higher {sub[truth][m]['assay_higher_share']:.2f} "
                                        f"diff {sub[truth][m]['mean_difference']['mean']:+.3f}"
                                        for m in ("ari", "nmi", "purity")))
        lines.append(f"{name:9s} goal {r['goal']}")
        lines.append(f"{name:9s} goal before {r['goal_before']}")
    return "\n".join(lines)


def discovery_summary(result: dict[str, Any]) -> str:
    """Distinct categories after k reviews and reviews to cover, per order."""
    lines = []
    for name, r in result["sets"].items():
        for truth in TRUTHS:
            t = r[truth]
            lines.append(f"{name} n={r['units']} truth={truth} categories={len(t['categories'])} "
                         f"(>=2 runs: {t['with_2_plus']}) expected random {t['random']['expected_distinct_after']}")
            for order in ("random", "round_robin", "round_robin_noise_last", "queue_by_signature"):
                c = t[order]
                seen = " ".join(f"k={k}: {v['mean']:.2f}±{v['sd']:.2f}" for k, v in c["distinct_after"].items())
                cover = c["reviews_to_cover_categories_with_2_plus"]
                lines.append(f"   {order:24s} {seen} | cover {cover['mean']:.2f}±{cover['sd']:.2f}")
            lines.append(f"   goal {t['goal']}  random at least as good: {t['random_at_least_as_good']}")
            for order, by_k in t["stopping"].items():
                stop = " ".join(f"k={k}: est {v['estimate']:.2f} vs {v['missing_mass']:.2f} (next new "
                                f"{v['next_is_new']:.2f}, CI holds {v['covered']})" for k, v in by_k.items())
                lines.append(f"   stopping {order:18s} {stop}")
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"strengths {result['strengths']}"]
    for part in ("all", "test"):
        r = result[part]
        c = r["combined"]
        lines.append(f"[{part}] n={r['units']} failed={r['failed']} base={r['base_fail_rate']}")
        for name, m in {**r["baseline"], **r["detectors"], "COMBINED score>=fail_at": c["failure_score_at_fail_at"],
                        "any signal": c["any_signal"], "logistic (out of fold)": r["logistic_out_of_fold"]["at_0.5"]
                        }.items():
            lines.append(f"  {name:28s} flagged {m['flagged']:3d}  P {m['precision']}  R {m['recall']}")
        lines.append(f"  AUC {c['roc']['auc']} {c['roc']['auc_ci']}  logistic AUC "
                     f"{r['logistic_out_of_fold']['roc']['auc']}  ambiguous {c['ambiguous_share']}")
        vs = r["versus_baseline"]
        for rule in ("any_rule", *(k for k in r["baseline"] if k != "any_rule")):
            v = vs[rule]
            lines.append(f"  vs {rule:18s} rule P {v['rule_precision']} R {v['rule_recall']} | score P at its R "
                         f"{v['score_precision_at_rule_recall']} ({v['precision_gain']:+.3f} {v['precision_gain_ci']})"
                         f", R at its P {v['score_recall_at_rule_precision']} ({v['recall_gain']:+.3f} "
                         f"{v['recall_gain_ci']})")
        g = vs["auc_vs_naive_count"]
        lines.append(f"  AUC vs naive count ({g['naive_auc']}): {g['gain']:+.3f} {g['gain_ci']} (tasks resampled)")
        old = r["reasoned_strengths"]
        lines.append(f"  reasoned strengths (before): P {old['at_fail_at']['precision']} "
                     f"R {old['at_fail_at']['recall']}"
                     f" AUC {old['roc']['auc']}; defaults' AUC gain {old['auc_gain_of_defaults']['gain']:+.3f} "
                     f"{old['auc_gain_of_defaults']['gain_ci']}")
        lines.append(f"  {vs['verdict']}")
    cost_r = result["cost"]
    lines.append(f"cost: {cost_r['units']} units, batch {cost_r['batch_seconds']} s, stream {cost_r['stream_seconds']}"
                 f" s, peak RSS {cost_r['peak_rss_mb_after_detect_many']} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
