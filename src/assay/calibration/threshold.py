"""The decision threshold of a numeric score against binary labels: chosen on train + dev, reported once on test.

An evaluator whose scores take more than two values (a judge on a 1..10 scale, a code check returning
a fraction, an external judge's probability) turns a score into pass/fail at its ``pass_score``. The
``pass_score`` that best separates the human labels is chosen on the train and dev items only —
maximising balanced accuracy ``(TPR + TNR) / 2`` over the cut points between observed scores, ties to
the cut nearest the current ``pass_score`` — and the test split's metrics at that cut are reported
once, beside the metrics at the current ``pass_score``. Adopting it is an edit of the evaluator file
(``pass_score`` is part of the version), so the next calibration measures it afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from assay.calibration.stats import CalibrationMetrics, metrics_with_ci


class ThresholdChoice(BaseModel):
    """The pass threshold chosen on train + dev and its metrics on test (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    threshold: float = Field(description="the chosen pass_score: a score >= it is a pass")
    current_pass_score: float = Field(description="the evaluator's pass_score now")
    objective: str = Field("balanced accuracy", description="what the choice maximised on train + dev")
    n_fit: int = Field(description="train + dev items the choice was made on")
    fit_value: float = Field(description="balanced accuracy on train + dev at the chosen threshold")
    test: CalibrationMetrics = Field(description="test-split metrics at the chosen threshold, with 95% CIs")


def _balanced_accuracy(labels: Sequence[str], scores: Sequence[float], cut: float) -> float:
    pos = [s for lab, s in zip(labels, scores, strict=True) if lab == "pass"]
    neg = [s for lab, s in zip(labels, scores, strict=True) if lab == "fail"]
    return (sum(s >= cut for s in pos) / len(pos) + sum(s < cut for s in neg) / len(neg)) / 2


def choose_threshold(fit: Sequence[tuple[str, float]], test: Sequence[tuple[str, float]], pass_score: float,
                     n_boot: int, seed: int, min_per_class: int) -> ThresholdChoice | None:
    """Choose the pass threshold on ``fit`` (train + dev ``(label, score)`` pairs) and measure it on ``test``.

    Returns:
        the choice, or None when the scores are not numeric (two distinct values or fewer) or ``fit``
        lacks a class (nothing to separate).
    """
    scores = sorted({s for _, s in (*fit, *test)})
    labels = [lab for lab, _ in fit]
    if len(scores) <= 2 or "pass" not in labels or "fail" not in labels:
        return None
    cuts = [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)]
    fit_scores = [s for _, s in fit]
    best = max(cuts, key=lambda c: (_balanced_accuracy(labels, fit_scores, c), -abs(c - pass_score), -c))
    on_test = metrics_with_ci([lab for lab, _ in test], ["pass" if s >= best else "fail" for _, s in test], n_boot,
                              seed, min_per_class)
    return ThresholdChoice(threshold=best, current_pass_score=pass_score, n_fit=len(fit),
                           fit_value=_balanced_accuracy(labels, fit_scores, best), test=on_test)
