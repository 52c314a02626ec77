"""Judge-error-corrected pass rates: formulas against hand values, and 95% CI coverage on
simulated production data where the true pass rate is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from assay.calibration import CalibrationReport, agreement, metrics_with_ci
from assay.calibration.calibrate import read_calibration
from assay.calibration.estimates import (
    confusion_counts,
    pass_rate_estimates,
    ppi_mean,
    raw_pass_rate,
    rogan_gladen,
)

Z95 = 1.959963984540054
TRUE_RATE, TPR, TNR = 0.70, 0.95, 0.60  # a lenient judge: it passes 40% of true failures
N_SIMS = 500


def test_rogan_gladen_matches_hand_computation() -> None:
    # 60 judge passes of 100; calibration: 90 of 100 human passes judged pass, 80 of 100 fails judged fail.
    est = rogan_gladen(60, 100, tp=90, fn=10, tn=80, fp=20)
    pi = (0.6 + 0.8 - 1) / (0.9 + 0.8 - 1)  # 0.5714...
    s_tpr, s_tnr = 90.5 / 101, 80.5 / 101
    var = (0.6 * 0.4 / 100 + pi**2 * s_tpr * (1 - s_tpr) / 100 + (1 - pi) ** 2 * s_tnr * (1 - s_tnr) / 100) / 0.7**2
    assert est.value == pytest.approx(pi)
    assert est.low == pytest.approx(pi - Z95 * math.sqrt(var))
    assert est.high == pytest.approx(pi + Z95 * math.sqrt(var))
    assert (est.n, est.n_labelled) == (100, 200)


def test_rogan_gladen_clips_and_refuses_a_chance_judge() -> None:
    low = rogan_gladen(5, 100, tp=90, fn=10, tn=80, fp=20)  # p_obs below 1 - TNR: negative before clipping
    assert low.value == 0.0 and low.low == 0.0 and "outside [0, 1]" in low.note
    chance = rogan_gladen(50, 100, tp=50, fn=50, tn=50, fp=50)
    assert chance.value is None and "no better than chance" in chance.note
    assert rogan_gladen(50, 100, tp=0, fn=0, tn=5, fp=5).value is None
    with pytest.raises(ValueError, match="0 <= count <= total"):
        rogan_gladen(101, 100, tp=1, fn=1, tn=1, fp=1)


def test_ppi_matches_hand_computation() -> None:
    f_u = [1.0] * 70 + [0.0] * 30
    f_l, y_l = [1, 1, 1, 0, 0, 1, 0, 1], [1, 0, 1, 0, 0, 1, 1, 1]
    est = ppi_mean(f_u, f_l, y_l)
    rect = [f - y for f, y in zip(f_l, y_l, strict=True)]  # [0, 1, 0, 0, 0, 0, -1, 0]: mean 0
    theta = 0.7 - sum(rect) / 8
    var_u = 0.7 * 0.3 * 100 / 99 / 100
    var_r = sum((r - sum(rect) / 8) ** 2 for r in rect) / 7 / 8
    assert est.value == pytest.approx(theta)
    assert est.low == pytest.approx(theta - Z95 * math.sqrt(var_u + var_r))
    assert est.high == 1.0  # theta + half-width is 1.08: clipped
    assert (est.n, est.n_labelled) == (100, 8)
    assert ppi_mean(f_u, [1], [1]).value is None
    with pytest.raises(ValueError, match="differ in length"):
        ppi_mean(f_u, [1, 0], [1])


def test_raw_rate_has_a_wilson_interval() -> None:
    est = raw_pass_rate(30, 40)
    p, n = 0.75, 40
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    assert (est.value, est.low, est.high) == (pytest.approx(p), pytest.approx(centre - half),
                                              pytest.approx(centre + half))
    assert raw_pass_rate(0, 0).value is None


def _covered(est_low: float | None, est_high: float | None) -> bool:
    assert est_low is not None and est_high is not None
    return est_low <= TRUE_RATE <= est_high


def test_rogan_gladen_ci_covers_the_true_rate_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    n_prod, n_pos, n_neg = 2000, 150, 150
    p_obs = TRUE_RATE * TPR + (1 - TRUE_RATE) * (1 - TNR)  # what the raw rate converges to: 0.785
    hits_rg = hits_raw = 0
    values_rg: list[float] = []
    values_raw: list[float] = []
    for _ in range(N_SIMS):
        k = int(rng.binomial(n_prod, p_obs))
        tp, tn = int(rng.binomial(n_pos, TPR)), int(rng.binomial(n_neg, TNR))
        rg = rogan_gladen(k, n_prod, tp=tp, fn=n_pos - tp, tn=tn, fp=n_neg - tn)
        raw = raw_pass_rate(k, n_prod)
        hits_rg += _covered(rg.low, rg.high)
        hits_raw += _covered(raw.low, raw.high)
        assert rg.value is not None and raw.value is not None
        values_rg.append(rg.value)
        values_raw.append(raw.value)
    coverage = hits_rg / N_SIMS
    bias_raw, bias_rg = np.mean(values_raw) - TRUE_RATE, np.mean(values_rg) - TRUE_RATE
    print(f"Rogan-Gladen coverage {coverage:.3f}, bias {bias_rg:+.4f}; raw coverage {hits_raw / N_SIMS:.3f}, "
          f"bias {bias_raw:+.4f}")
    assert 0.92 <= coverage <= 0.98
    assert bias_raw > 0.07  # the raw judge rate overstates the true rate by ~0.085
    assert abs(bias_rg) < 0.01
    assert hits_raw / N_SIMS < 0.05  # the raw interval is tight around the wrong value


def test_ppi_ci_covers_the_true_rate_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    n_unlab, n_lab = 3000, 300
    hits = 0
    values, raws, widths = [], [], []
    for _ in range(N_SIMS):
        y = rng.random(n_unlab + n_lab) < TRUE_RATE
        judge = np.where(y, rng.random(y.size) < TPR, rng.random(y.size) >= TNR)
        est = ppi_mean(judge[n_lab:], judge[:n_lab], y[:n_lab])
        assert est.value is not None and est.low is not None and est.high is not None
        hits += _covered(est.low, est.high)
        values.append(est.value)
        raws.append(judge.mean())
        widths.append(est.high - est.low)
    coverage = hits / N_SIMS
    print(f"PPI coverage {coverage:.3f}, bias {np.mean(values) - TRUE_RATE:+.4f}, mean width {np.mean(widths):.3f}; "
          f"raw bias {np.mean(raws) - TRUE_RATE:+.4f}")
    assert 0.92 <= coverage <= 0.98
    assert abs(np.mean(values) - TRUE_RATE) < 0.01
    assert np.mean(raws) - TRUE_RATE > 0.07


def test_estimates_from_a_stored_calibration_and_an_audit_sample() -> None:
    rng = np.random.default_rng(3)
    human = ["pass"] * 100 + ["fail"] * 100
    judge = ["pass" if rng.random() < (TPR if h == "pass" else 1 - TNR) else "fail" for h in human]
    report = CalibrationReport(evaluator="e", evaluator_version="v", judge_model="j", dataset_version=1,
                               dataset_balance={"pass": 100, "fail": 100}, n_labelled=200, n_unscored=0, n_errors=0,
                               agreement=agreement(human, judge), threshold=0.8, min_kappa=0.0, meets_threshold=True,
                               status="active", run_id="calibration-x", test=metrics_with_ci(human, judge, n_boot=50))
    stored = report.model_dump(mode="json")
    del stored["version"]  # as stored before reports had a version
    cm = confusion_counts(read_calibration(stored))
    assert cm is not None and sum(cm.values()) == 200
    assert cm["tp"] == sum(h == j == "pass" for h, j in zip(human, judge, strict=True))
    truth = {f"u{i}": bool(rng.random() < TRUE_RATE) for i in range(4000)}
    verdicts = {u: bool(rng.random() < (TPR if t else 1 - TNR)) for u, t in truth.items()}
    audit = {u: truth[u] for u in list(truth)[:400]}
    out = pass_rate_estimates(verdicts, cm, audit)
    assert out.raw.n == 4000 and out.ppi.n == 3600 and out.ppi.n_labelled == 400
    true_share = sum(truth.values()) / len(truth)
    for est in (out.rogan_gladen, out.ppi):
        assert est.low is not None and est.high is not None
        assert est.low <= true_share <= est.high
    assert out.raw.low is not None and out.raw.low > true_share  # raw is biased upwards
    none = pass_rate_estimates(verdicts)
    assert none.rogan_gladen.value is None and "no calibration" in none.rogan_gladen.note
    assert none.ppi.value is None and "no audited" in none.ppi.note
    assert read_calibration({}) is None and confusion_counts(None) is None
    with pytest.raises(ValidationError):  # a stored report that is not one is an error, not "no calibration"
        read_calibration({"test": {"confusion": {"tp": 1}}})
