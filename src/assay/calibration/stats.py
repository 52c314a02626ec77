"""Calibration metrics with bootstrap 95% confidence intervals.

Judge verdicts are compared with human labels (``"pass"``/``"fail"``; pass is the positive
class). Each rate is reported with a percentile bootstrap interval (Efron 1979; Efron &
Tibshirani 1993, ch. 13): items are resampled with replacement, which for a 2x2 table is
a multinomial draw of the four confusion cells with the observed cell shares, so the
resampling is vectorised. A resample on which a rate is undefined (e.g. no human fail
drawn) is left out of that rate's interval. Cohen's kappa follows Cohen (1960). The rates and the
resampling are :mod:`assay.stats`'s bootstrap helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.calibration.metrics import Confusion, agreement
from assay.stats import bootstrap_confusion_rates, confusion_rates, percentile_interval

MIN_PER_CLASS = 30
"""Below this many human labels of a class, the rates of that class are too noisy to trust."""

N_BOOT = 2000
"""Bootstrap resamples per interval (percentile method)."""


class Estimate(BaseModel):
    """A point estimate with its bootstrap 95% interval; all None when the rate is undefined."""

    model_config = ConfigDict(frozen=True)

    value: float | None = Field(description="point estimate on the observed items")
    low: float | None = Field(default=None, description="2.5th percentile of the bootstrap distribution")
    high: float | None = Field(default=None, description="97.5th percentile of the bootstrap distribution")


class CalibrationMetrics(BaseModel):
    """Judge-human agreement on one set of items (a split), each rate with a bootstrap 95% CI.

    Rates are in [0, 1] (kappa in [-1, 1]); TPR = P(judge pass | human pass), TNR =
    P(judge fail | human fail); balanced accuracy = (TPR + TNR) / 2; precision and recall
    on *fail* treat fail as the class to find (recall on fail equals TNR).
    """

    model_config = ConfigDict(frozen=True)

    n: int = Field(description="items with both a human label and a judge verdict")
    human_pass: int
    human_fail: int
    agreement: Estimate = Field(description="share of items where judge and human agree (accuracy)")
    kappa: Estimate = Field(description="Cohen's kappa (1960); None when undefined")
    tpr: Estimate
    tnr: Estimate
    balanced_accuracy: Estimate
    precision_fail: Estimate = Field(description="P(human fail | judge fail)")
    recall_fail: Estimate = Field(description="P(judge fail | human fail)")
    confusion: Confusion
    n_boot: int = Field(description="bootstrap resamples behind each interval")
    warnings: tuple[str, ...] = Field(default=(), description="e.g. fewer than min_per_class labels of a class")


def _estimate(point: float, draws: np.ndarray) -> Estimate:
    if np.isnan(point):
        return Estimate(value=None)
    bounds = percentile_interval(draws)
    if bounds is None:
        return Estimate(value=float(point))
    return Estimate(value=float(point), low=bounds[0], high=bounds[1])


def metrics_with_ci(human: Sequence[str], judge: Sequence[str], n_boot: int = N_BOOT, seed: int = 0,
                    min_per_class: int = MIN_PER_CLASS) -> CalibrationMetrics:
    """Agreement, kappa, TPR, TNR, balanced accuracy, precision/recall on fail, each with a 95% CI.

    Args:
        human: human labels, ``"pass"``/``"fail"``.
        judge: judge verdicts, item-aligned with ``human``.
        n_boot: bootstrap resamples (>= 1).
        seed: seed of the resampling (same inputs and seed, same intervals).
        min_per_class: warn when a human class has fewer labels than this.

    Raises:
        ValueError: lengths differ or a label is not pass/fail.
    """
    base = agreement(human, judge)
    c = base.confusion
    point = {k: float(v) for k, v in confusion_rates(*(np.array(float(x)) for x in (c.tp, c.fn, c.fp, c.tn))).items()}
    draws: dict[str, np.ndarray] = {k: np.array([]) for k in point}
    if base.n > 0:
        draws = bootstrap_confusion_rates(c.tp, c.fn, c.fp, c.tn, n_boot, seed)
    warnings = [f"only {count} human-{label} label{'s' if count != 1 else ''} (< {min_per_class}): "
                f"its rates and their intervals are unreliable"
                for label, count in (("pass", base.human_pass), ("fail", base.human_fail)) if count < min_per_class]
    return CalibrationMetrics(n=base.n, human_pass=base.human_pass, human_fail=base.human_fail,
                              confusion=c, n_boot=n_boot, warnings=tuple(warnings),
                              **{k: _estimate(point[k], draws[k]) for k in point})
