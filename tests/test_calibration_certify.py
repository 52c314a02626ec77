"""Certification by confidence bounds: the bounds themselves, simulated judges of known TPR/TNR, the plan, and
the demo's own data (a test split with one human fail must not certify any more)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from assay._cli import demo
from assay._cli.main import app
from assay._store import Store
from assay.calibration import build_dataset
from assay.calibration.certify import RequiredRate, certify_binary, clearing_power, plan_rates
from assay.calibration.metrics import Confusion
from assay.calibration.splits import DEFAULT_FRACTIONS, allocate
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.settings import CalibrationSettings
from assay.stats import min_successes_to_clear, proportion_bounds, proportion_interval
from assay.traces.model import Step, Unit

from .conftest import DATA

WILSON = CalibrationSettings()
EXACT = CalibrationSettings(interval="exact")
POINT = CalibrationSettings(policy="point")
SIMS = 1000


# --- the bounds ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_bounds_match_scipy_and_the_clearing_count_matches_brute_force(method: str) -> None:
    for k, n in ((27, 30), (0, 12), (12, 12), (1, 1), (400, 500)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method=method)
        assert proportion_interval(k, n, method) == pytest.approx((ci.low, ci.high))
        low, high = proportion_bounds(np.array([k]), np.array([n]), method)
        assert (low[0], high[0]) == pytest.approx((ci.low, ci.high))
    sizes = np.arange(1, 61)
    for t in (0.8, 0.9):
        fast = min_successes_to_clear(sizes, t, method)
        brute = [next((k for k in range(n + 1) if proportion_interval(k, n, method)[0] >= t), n + 1)
                 for n in sizes]
        assert list(fast) == brute


def _simulate(tpr: float, tnr: float, n: int, settings: CalibrationSettings, rng: np.random.Generator) -> float:
    """Share of SIMS simulated test splits (n human passes, n human fails) that certify the judge."""
    tp, tn = rng.binomial(n, tpr, SIMS), rng.binomial(n, tnr, SIMS)
    return sum(certify_binary(Confusion(tp=int(a), fn=n - int(a), fp=n - int(b), tn=int(b)), 0.8,
                              settings).certified for a, b in zip(tp, tn, strict=True)) / SIMS


@pytest.mark.parametrize("n", [30, 100, 300])
def test_a_judge_below_the_threshold_is_certified_under_5_percent_of_the_time(n: int) -> None:
    rng = np.random.default_rng(n)
    for settings in (WILSON, EXACT):
        assert _simulate(0.78, 0.95, n, settings, rng) < 0.05
        assert _simulate(0.80, 0.95, n, settings, rng) < 0.05  # at the threshold: about the one-sided 2.5%
    # the older point rule certifies the 0.78 judge most of the time (agreement ~0.87, kappa ~0.73)
    assert _simulate(0.78, 0.95, n, POINT, rng) > 0.5


@pytest.mark.parametrize(("tpr", "tnr"), [(0.78, 0.97), (0.80, 0.99), (0.85, 0.90), (0.90, 0.95), (0.95, 0.95)])
def test_the_rule_activates_at_the_rate_its_bounds_promise(tpr: float, tnr: float) -> None:
    """Simulated activation matches P(TPR bound clears) x P(TNR bound clears), computed exactly."""
    n = 100
    rng = np.random.default_rng(int(tpr * 1000 + tnr * 10))
    expected = float(clearing_power(tpr, np.array([n]), 0.8, WILSON)[0] * clearing_power(tnr, np.array([n]), 0.8,
                                                                                          WILSON)[0])
    simulated = _simulate(tpr, tnr, n, WILSON, rng)
    assert abs(simulated - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-4) / SIMS)


# --- the plan -----------------------------------------------------------------------------------
def _test_subset(correct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The correct flags of a stratified test split of one class (as split_dataset cuts it)."""
    return correct[rng.permutation(len(correct))[:allocate(len(correct), DEFAULT_FRACTIONS)[2]]]


def _plan_then_collect(tpr: float, tnr: float, n0: int, rng: np.random.Generator) -> tuple[bool, int]:
    """Label n0 of each class, calibrate, plan, label what the plan asks, calibrate on a fresh split."""
    first = {"pass": rng.random(n0) < tpr, "fail": rng.random(n0) < tnr}
    tests = {c: _test_subset(v, rng) for c, v in first.items()}
    rates = [RequiredRate(name=n, of=c, k=int(tests[c].sum()), n=len(tests[c])) for n, c in (("TPR", "pass"),
                                                                                             ("TNR", "fail"))]
    scored = [RequiredRate(name=r.name, of=r.of, k=int(first[r.of].sum()), n=n0) for r in rates]
    plan = plan_rates(rates, scored, {"pass": n0, "fail": n0}, 0.8, WILSON, DEFAULT_FRACTIONS)
    if any(r.more is None or r.provisional for r in plan.rates):
        return False, 0
    after = {c: np.concatenate([v, rng.random(plan.more[c] or 0) < (tpr if c == "pass" else tnr)])
             for c, v in first.items()}
    # split_dataset shuffles each class on its own (seeded by its ids): a class without new labels keeps its split
    tests = {c: _test_subset(v, rng) if plan.more[c] else tests[c] for c, v in after.items()}
    c = Confusion(tp=int(tests["pass"].sum()), fn=int((~tests["pass"]).sum()), fp=int((~tests["fail"]).sum()),
                  tn=int(tests["fail"].sum()))
    return certify_binary(c, 0.8, WILSON).certified, sum(r.more or 0 for r in plan.rates)


@pytest.mark.parametrize(("tpr", "tnr", "n0"), [(0.95, 0.95, 50), (0.92, 0.97, 100)])
def test_the_planned_labels_certify_at_least_90_percent_of_the_time(tpr: float, tnr: float, n0: int) -> None:
    rng = np.random.default_rng(7)
    outcomes = [_plan_then_collect(tpr, tnr, n0, rng) for _ in range(SIMS)]
    share = sum(ok for ok, _ in outcomes) / SIMS
    assert share >= 0.90, share
    assert np.median([more for _, more in outcomes]) < 2000  # a plan, not "label everything"


def test_plan_explains_what_it_cannot_promise() -> None:
    rate = [RequiredRate(name="TPR", of="pass", k=29, n=29), RequiredRate(name="TNR", of="fail", k=1, n=1)]
    scored = [RequiredRate(name="TPR", of="pass", k=98, n=98), RequiredRate(name="TNR", of="fail", k=2, n=2)]
    plan = plan_rates(rate, scored, {"pass": 98, "fail": 2}, 0.8, WILSON, DEFAULT_FRACTIONS)
    tpr, tnr = plan.rates
    assert tpr.clears_now and tpr.more == 0
    # two fails known: too few to plan on, so the first step is the floor any judge needs (16 on test, 52 labels)
    assert tnr.provisional and tnr.labels_needed == 52 and tnr.more == 50 and "too few to plan on" in tnr.note
    below = [RequiredRate(name="TPR", of="pass", k=150, n=200), RequiredRate(name="TNR", of="fail", k=60, n=60)]
    plan = plan_rates(below, below, {"pass": 200, "fail": 60}, 0.8, WILSON, DEFAULT_FRACTIONS)
    assert plan.rates[0].more is None and "Improve the evaluator" in plan.rates[0].note
    # half the fail labels were not applicable to the judge: the plan needs twice the labels, and says why
    rate = [RequiredRate(name="TPR", of="pass", k=60, n=60), RequiredRate(name="TNR", of="fail", k=9, n=10)]
    scored = [RequiredRate(name="TPR", of="pass", k=200, n=200), RequiredRate(name="TNR", of="fail", k=29, n=30)]
    full, half = (plan_rates(rate, scored, {"pass": 200, "fail": n}, 0.8, WILSON, DEFAULT_FRACTIONS).rates[1]
                  for n in (30, 60))
    assert full.labels_needed is not None and half.labels_needed is not None
    assert half.labels_needed >= 2 * full.labels_needed - 2 and "scaled up" not in full.note
    assert "the judge scored 30 of the 60 labelled fail items" in half.note and "scaled up by 1/0.50" in half.note


# --- the demo's own data ------------------------------------------------------------------------
def human_labels(steps: list[Step], unit: Unit, fail: list[str]) -> tuple[float, str]:
    """A check that reproduces the human labels (it fails exactly the units in ``fail``)."""
    return (0.0, "labelled fail") if unit.unit_id in fail else (1.0, "labelled pass")


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's workspace up to its labels: 300 tau-bench runs, the AgentRx annotations, its evaluators."""
    ws = tmp_path_factory.mktemp("demo")
    settings = demo._fresh_workspace(ws)
    store = Store(settings.resolved_store_url())
    demo._ingest(store, DATA)
    demo._labels(store, DATA, [])
    demo._evaluators(settings)
    fails = [i.unit_id for i in build_dataset(store, "tool-calls-valid").items if i.label == "fail"]
    save_evaluator(EvaluatorDef(name="labels-check", kind="code", dimension="tool use",
                                criterion={"name": "tool-calls-valid", "version": 1, "text": demo.TOOLS},
                                code={"callable": "tests.test_calibration_certify:human_labels",
                                      "args": {"fail": fails}}), ws / "evaluators" / "labels-check.yaml")
    store.close()
    return ws


def _cli(ws: Path, *args: str) -> tuple[int, str]:
    """Exit code and stdout (with --json), else stdout and stderr with whitespace collapsed."""
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout if "--json" in args else " ".join(result.output.split())


def test_one_human_fail_on_test_no_longer_certifies(demo_ws: Path) -> None:
    code, out = _cli(demo_ws, "calibrate", "labels-check", "--plan")
    assert code == 2 and "no stored calibration" in out, out
    code, out = _cli(demo_ws, "calibrate", "labels-check", "--json")
    assert code == 0, out
    report = json.loads(out)
    test = report["test"]
    assert (test["human_pass"], test["human_fail"]) == (29, 1)  # the demo data's test split
    assert test["agreement"]["value"] == 1.0 and test["kappa"]["value"] == 1.0
    assert report["status"] == "draft" and report["certification"]["policy"] == "lower_bound"
    tnr = report["certification"]["bounds"][1]
    assert tnr["name"] == "TNR" and (tnr["k"], tnr["n"]) == (1, 1) and tnr["low"] == pytest.approx(0.2065, abs=1e-4)
    assert any("TNR 1.000 (1 of 1 human-fail items)" in n for n in report["notes"])
    code, out = _cli(demo_ws, "calibrate", "labels-check", "--plan", "--json")
    assert code == 0, out
    plan = json.loads(out)
    assert [r["more"] for r in plan["rates"]] == [0, 50] and plan["rates"][1]["provisional"]
    # the older point rule, named in assay.toml, certifies the same measurement
    (demo_ws / "assay.toml").write_text((demo_ws / "assay.toml").read_text() + '\n[calibration]\npolicy = "point"\n')
    code, out = _cli(demo_ws, "calibrate", "labels-check", "--json")
    assert code == 0 and json.loads(out)["status"] == "active", out
