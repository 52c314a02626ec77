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
* the failure score at cut-offs 0.3 to 0.8, and per family of detectors (conversation, behaviour,
  consequential actions, and all with the hand-off and refusal cues disabled);
* the calibrated combination (``assay.signals.fit_combination``: a logistic regression over the
  per-detector strengths, what a team gets once experts labelled some units), never in sample:
  out of fold over the 300 (``cross_validated_scores``, 5-fold GroupKFold by task so trials of one
  task never sit on both sides), and fitted on the dev half's labels only (also on 20, 40, 80 of
  them, whole tasks drawn at random, 20 draws) and scored on the test half;
* other data with known failures: the 44 Magentic-One runs AgentRx annotated (all failed: the
  share each detector flags), and the annotated failed tau retail runs per human failure category.

Honesty: thresholds and strengths were set by reasoning; while designing the detectors only the
``dev`` half of the runs was looked at (a fixed split by sha256 of ``domain/task_id``, even = dev,
136 runs). ``test`` (164 runs) was not looked at while a detector was designed; ``all`` includes
the dev half. docs/signals.md says which detectors came after which held-out run.

Cost: ``--units N`` (default 10,000) units made by repeating the 300 real runs under new ids (spans
shared between copies, step timelines built anew for each), detected in a subprocess: seconds and
peak RSS (``resource.getrusage``), first streaming (norms fitted on the 300, then ``detect`` unit by
unit), then ``detect_many`` (the whole batch's timelines in memory at once).

    python benchmarks/bench_discovery.py --part detection
    python benchmarks/bench_discovery.py --part detection --units 1000
    python benchmarks/bench_discovery.py --part detection --units 0     # keep the cost measured before

Writes the ``detection`` key of ``benchmarks/results/discovery.json`` (other keys kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
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
    from assay.suite.compare import wilson_interval

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
policy asks for (chosen on the dev half)."""


def family(rows: list[dict[str, Any]], fam: str, truth: list[bool]) -> dict[str, Any]:
    """The failure score from one family's signals only (not a tuned variant: a description)."""
    from assay.signals import SignalSettings, failure_score

    fail_at = SignalSettings().fail_at
    scores = [failure_score(s for s in r["signals"] if s.lineage.name in FAMILIES[fam]) for r in rows]
    return {"detectors": list(FAMILIES[fam]), "at_fail_at": rates(truth, [v >= fail_at for v in scores]),
            "roc": auc(truth, scores)}


def evaluate(rows: list[dict[str, Any]], names: list[str], kinds: list[str]) -> dict[str, Any]:
    """All metrics on one subset of units (rows: truth, signals, assessment, baseline, oof)."""
    from assay.signals import failure_score

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
             "oof": float(p), "assessment": assess(b.unit_id, s, settings), "baseline": baseline_rules(unit_view(b))}
            for u, b, s, p in zip(units, blind, signals, oof, strict=True)]
    kinds = sorted({s.kind for sig in signals for s in sig})
    return {
        "data": [str(p.relative_to(DATA)) for p in FILES], "truth": "fail = reward 0 (outcome withheld)",
        "leak_check": f"passed: identical signals with outcomes set, apart from {outcome_signals} outcome signals",
        "settings": "defaults (SignalSettings())", "fail_at": settings.fail_at,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["detection"], default="detection")
    parser.add_argument("--units", type=int, default=10_000, help="units in the cost run (default 10000; 0 keeps "
                        "the cost already in the results file)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cost-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cost_worker:
        print(json.dumps(cost_worker(args.cost_worker)))
        return 0
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = results.get(args.part, {}).get("cost")
    if args.units == 0 and kept is None:
        parser.error("--units 0 keeps the cost measured before, but the results file has none")
    result = {**detection(), "cost": cost(args.units) if args.units else kept}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}
    results[args.part] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(summary(result))
    print(f"wrote {args.out}")
    return 0


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = []
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
    cost_r = result["cost"]
    lines.append(f"cost: {cost_r['units']} units, batch {cost_r['batch_seconds']} s, stream {cost_r['stream_seconds']}"
                 f" s, peak RSS {cost_r['peak_rss_mb_after_detect_many']} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
