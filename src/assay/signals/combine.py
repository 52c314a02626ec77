"""A failure score learned from expert labels: the calibrated combination of a unit's signals.

The noisy-OR score (:mod:`assay.signals.score`) needs no labels and treats every signal as
independent evidence *for* a failure. Once experts have labelled some units pass/fail, a team can
learn how much each detector's signals really say in its deployment, including cues that point the
other way (a hand-off that the policy asks for). :func:`fit_combination` fits a logistic regression
(``sklearn.linear_model.LogisticRegression``, L2, ``C`` = 1) whose features are, per detector, how often
it fired on the unit, as ``1 - 2**-n`` for its ``n`` signals (0 when it did not fire, 0.5 for one, 0.75
for two); signals of other sources (feedback, evaluator fails, labels) are one feature per source. The
features ignore the configured strengths, so the labels alone set each detector's weight, also for a
cue whose strength is 0 in the unlabelled score. The recorded outcome is what is
predicted, so ``outcome`` signals are never a feature.

Measure it only out of sample: :func:`cross_validated_scores` gives out-of-fold probabilities with
folds grouped (``GroupKFold``) so that units of one group (a task, a user, a session family) never
sit on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.exceptions import UsageError
from assay.signals.model import FailureSignal

MIN_LABELS = 10
"""Fewer labelled units than this (or only one class among them) cannot be fitted."""


def feature_of(signal: FailureSignal) -> str | None:
    """The feature a signal feeds: its detector's name, else its source; None for ``outcome`` signals."""
    if signal.source == "outcome":
        return None
    lineage = signal.lineage
    return lineage.name if lineage.type == "detector" else signal.source


def features(signals: Iterable[FailureSignal], names: Sequence[str]) -> list[float]:
    """Per feature name, ``1 - 2**-n`` for the ``n`` signals of the unit feeding it (0.0 when none did)."""
    product = dict.fromkeys(names, 1.0)
    for signal in signals:
        key = feature_of(signal)
        if key in product:
            product[key] *= 0.5
    return [1.0 - product[name] for name in names]


class SignalCombination(BaseModel):
    """A logistic regression over per-detector signal counts, fitted on labelled units (stored format,
    version 2; version 1 read the signals' strengths). ``score(signals)`` is the estimated probability that
    the unit failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[2] = 2
    features: tuple[str, ...] = Field(description="detector names (or sources), in coefficient order")
    coefficients: tuple[float, ...] = Field(description="one per feature; negative: the cue points to a pass")
    intercept: float
    units: int = Field(ge=1, description="labelled units it was fitted on")
    failed: int = Field(ge=1, description="of which labelled fail")
    regularization: float = Field(gt=0, description="inverse L2 strength C of the logistic regression")

    def score(self, signals: Iterable[FailureSignal]) -> float:
        """Estimated probability in (0, 1) that the unit failed, from its signals."""
        z = self.intercept + sum(c * x for c, x in zip(self.coefficients, features(signals, self.features),
                                                        strict=True))
        return 1.0 / (1.0 + math.exp(-z))


def _check(signals: Sequence[Sequence[FailureSignal]], failed: Sequence[bool]) -> None:
    if len(signals) != len(failed):
        raise UsageError(f"{len(signals)} units of signals but {len(failed)} labels")
    if len(failed) < MIN_LABELS or all(failed) or not any(failed):
        raise UsageError(f"fitting a combination needs at least {MIN_LABELS} labelled units of both classes, got "
                         f"{len(failed)} ({sum(failed)} failed)")


def feature_names(signals: Sequence[Sequence[FailureSignal]]) -> list[str]:
    """Every feature seen in ``signals``, sorted."""
    return sorted({k for unit in signals for s in unit if (k := feature_of(s)) is not None})


def fit_combination(signals: Sequence[Sequence[FailureSignal]], failed: Sequence[bool],
                    names: Sequence[str] | None = None, regularization: float = 1.0) -> SignalCombination:
    """Fit the combination on labelled units.

    Args:
        signals: each unit's signals (any sources; ``outcome`` signals are ignored).
        failed: the expert label per unit (True = fail).
        names: the features to use (default: every detector or source seen in ``signals``).
        regularization: inverse L2 strength ``C``.

    Raises:
        UsageError: lengths differ, fewer than ``MIN_LABELS`` units, or only one class.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    _check(signals, failed)
    cols = list(names) if names is not None else feature_names(signals)
    x = np.array([features(unit, cols) for unit in signals], dtype=float).reshape(len(signals), len(cols))
    model = LogisticRegression(C=regularization, max_iter=1000).fit(x, np.asarray(failed, dtype=int))
    return SignalCombination(features=tuple(cols), coefficients=tuple(round(float(c), 6) for c in model.coef_[0]),
                             intercept=round(float(model.intercept_[0]), 6), units=len(failed),
                             failed=int(sum(failed)), regularization=regularization)


def cross_validated_scores(signals: Sequence[Sequence[FailureSignal]], failed: Sequence[bool],
                           groups: Sequence[str], folds: int = 5,
                           regularization: float = 1.0) -> tuple[list[float], list[SignalCombination]]:
    """Out-of-fold failure probabilities: each unit scored by a combination fitted on the other folds
    (``sklearn.model_selection.GroupKFold``; a group never spans two folds).

    Returns:
        ``(scores in input order, the fitted combination of each fold)``.

    Raises:
        UsageError: fewer distinct groups than ``folds``, or a training fold that cannot be fitted.
    """
    from sklearn.model_selection import GroupKFold

    if len(set(groups)) < folds or len(groups) != len(failed):
        raise UsageError(f"need {len(failed)} group names with at least {folds} distinct groups")
    _check(signals, failed)
    names = feature_names(signals)
    out = [0.0] * len(failed)
    fitted = []
    for train, test in GroupKFold(n_splits=folds).split(list(range(len(failed))), groups=list(groups)):
        combo = fit_combination([signals[i] for i in train], [failed[i] for i in train], names, regularization)
        for i in test:
            out[i] = combo.score(signals[i])
        fitted.append(combo)
    return out, fitted
