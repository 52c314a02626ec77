"""Judge-human agreement on the criterion's own scale, with bootstrap 95% CIs, and the position-bias check.

What fits each scale (the judge's values against the human consensus, item-aligned):

* **ordinal**: Spearman's rho and Kendall's tau-b (``scipy.stats.spearmanr``, ``kendalltau``), the
  mean absolute error in levels, quadratic weighted kappa (Cohen 1968), exact agreement and agreement
  within one level (positions on the scale, so levels 1, 2, 5 are one step apart each);
* **categorical**: accuracy, Cohen's kappa (1960), macro-F1 over the classes humans used, per-class
  precision and recall, the confusion matrix (rows human, columns judge);
* **pairwise**: agreement over first / second / tie (a tie agrees only with a tie), agreement on the
  items where both chose a side (ties left out), Cohen's kappa over the three values, how often each
  side said tie, the confusion matrix; and the **position bias** of a judge asked in both orders
  (:func:`position_bias`): how often its verdict flips when the two outputs swap places.

Every statistic is computed from the k x k table of (human, judge) values (:mod:`assay.stats`), so the
percentile bootstrap over items (Efron 1979; ``n_boot`` resamples, seeded) resamples that table's cells
(a multinomial draw), all at once. A resample on which a statistic is undefined (e.g. a constant judge
for a correlation) is left out of its interval. The flip rate's interval is Wilson's
(:func:`assay.stats.wilson_interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import combinations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.annotations.scale import Scale, ScaleKind, ScaleValue
from assay.calibration.stats import Estimate
from assay.stats import (
    KappaWeights,
    bootstrap_tables,
    contingency_table,
    kappa_from_table,
    kendall_tau_b_from_table,
    percentile_interval,
    spearman_from_table,
    wilson_interval,
)


class OrdinalMetrics(BaseModel):
    """Judge levels against human levels."""

    model_config = ConfigDict(frozen=True)

    spearman: Estimate = Field(description="Spearman's rank correlation, -1..1")
    kendall: Estimate = Field(description="Kendall's tau-b, -1..1")
    mae: Estimate = Field(description="mean absolute difference, in levels of the scale")
    weighted_kappa: Estimate = Field(description="quadratic weighted kappa (Cohen 1968)")
    exact: Estimate = Field(description="share of items where judge and human give the same level")
    within_one: Estimate = Field(description="share of items at most one level apart")


class ClassMetrics(BaseModel):
    """One class: how often humans used it, and the judge's precision and recall on it."""

    model_config = ConfigDict(frozen=True)

    name: str
    human: int = Field(description="items humans put in this class")
    judge: int = Field(description="items the judge put in this class")
    precision: float | None = Field(description="P(human says it | judge says it); None when the judge never did")
    recall: float | None = Field(description="P(judge says it | human says it); None when humans never did")
    f1: float | None


class CategoricalMetrics(BaseModel):
    """Judge classes against human classes."""

    model_config = ConfigDict(frozen=True)

    accuracy: Estimate
    kappa: Estimate = Field(description="Cohen's kappa (1960)")
    macro_f1: Estimate = Field(description="mean F1 over the classes humans used (a class never predicted has F1 0)")
    per_class: list[ClassMetrics]
    confusion: list[list[int]] = Field(description="rows: human class, columns: judge class, in scale order")


class PairwiseMetrics(BaseModel):
    """Judge preferences against human preferences (first, second, tie)."""

    model_config = ConfigDict(frozen=True)

    agreement: Estimate = Field(description="share of items with the same value; a tie agrees only with a tie")
    agreement_without_ties: Estimate = Field(description="the same on items where both chose a side")
    n_without_ties: int
    kappa: Estimate = Field(description="Cohen's kappa over first / second / tie")
    human_ties: int
    judge_ties: int
    confusion: list[list[int]] = Field(description="rows: human (first, second, tie), columns: judge")


class ScaleMetrics(BaseModel):
    """Agreement on the scale for one set of items; exactly one of the per-scale blocks is set."""

    model_config = ConfigDict(frozen=True)

    kind: ScaleKind
    n: int = Field(description="items with a human label and a judge value")
    human: dict[str, int] = Field(description="human labels per value, scale order")
    judge: dict[str, int] = Field(description="judge values per value, scale order")
    ordinal: OrdinalMetrics | None = None
    categorical: CategoricalMetrics | None = None
    pairwise: PairwiseMetrics | None = None
    n_boot: int


class PositionBias(BaseModel):
    """A pairwise judge asked in both orders: how often its verdict (turned back to the same orientation) flips.

    A flip is any change: first <-> second, or a side <-> tie. Among the flips, ``first_shown`` counts
    pairs where the judge preferred whichever output it was shown first both times (primacy), and
    ``second_shown`` whichever it was shown second (recency).
    """

    model_config = ConfigDict(frozen=True)

    n: int = Field(description="pairs asked in both orders")
    n_scored: int = Field(description="pairs with a verdict in both orders (the flip rate's base)")
    consistent: int
    flips: int
    flip_rate: Estimate = Field(description="flips / n_scored, with Wilson's 95% interval")
    first_shown: int = Field(description="flips where the output shown first won both times")
    second_shown: int = Field(description="flips where the output shown second won both times")


class ScaleCeiling(BaseModel):
    """Human-human agreement on the scale: each pair of annotators on an item, pooled."""

    model_config = ConfigDict(frozen=True)

    n_items: int
    n_pairs: int
    annotators: tuple[str, ...]
    metrics: ScaleMetrics = Field(description="first annotator of a pair as 'human', second as 'judge'")


class ScaleReport(BaseModel):
    """What a calibration reports on a non-binary scale, beside the pass/fail numbers at ``pass_score``."""

    model_config = ConfigDict(frozen=True)

    kind: ScaleKind
    test: ScaleMetrics = Field(description="on the held-out test split")
    overall: ScaleMetrics = Field(description="on every scored item")
    human_ceiling: ScaleCeiling | None = Field(None, description="human-human on the test items (>= 2 humans)")
    position_bias: PositionBias | None = Field(None, description="pairwise: the judge in both orders, test items")
    position_bias_overall: PositionBias | None = Field(None, description="pairwise: the same on every item")
    decision: str = Field(description="how the activation decision reads this scale, in words")


Table = np.ndarray
"""k x k tables of (human, judge) positions on the scale: one (``k x k``) or bootstrap resamples (``B x k x k``)."""


def _estimate(statistic: Callable[[Table], np.ndarray], table: Table, draws: Table) -> Estimate:
    """A statistic of the item table with its percentile bootstrap interval (over the resampled tables)."""
    value = float(statistic(table[None])[0]) if table.sum() else float("nan")
    if np.isnan(value):
        return Estimate(value=None)
    bounds = percentile_interval(statistic(draws)) if table.sum() >= 2 else None
    return Estimate(value=value) if bounds is None else Estimate(value=value, low=bounds[0], high=bounds[1])


def _per_item(weights: np.ndarray) -> Callable[[Table], np.ndarray]:
    """The mean over items of a per-cell quantity (``weights[h, j]``), e.g. 1 on the diagonal: agreement."""
    def statistic(t: Table) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray((t * weights).sum(axis=(-2, -1)) / t.sum(axis=(-2, -1)))
    return statistic


def _kappa(weights: KappaWeights | None = None) -> Callable[[Table], np.ndarray]:
    return lambda t: kappa_from_table(t, weights)


def _ordinal(table: Table, draws: Table) -> OrdinalMetrics:
    k = table.shape[-1]
    gap = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    return OrdinalMetrics(spearman=_estimate(spearman_from_table, table, draws),
                          kendall=_estimate(kendall_tau_b_from_table, table, draws),
                          mae=_estimate(_per_item(gap), table, draws),
                          weighted_kappa=_estimate(_kappa("quadratic"), table, draws),
                          exact=_estimate(_per_item(np.eye(k)), table, draws),
                          within_one=_estimate(_per_item((gap <= 1).astype(float)), table, draws))


def _macro_f1(t: Table) -> np.ndarray:
    """Mean F1 over the classes humans used (rows with items), per table."""
    tp = np.diagonal(t, axis1=-2, axis2=-1)
    humans, judged = t.sum(axis=-1), t.sum(axis=-2)
    used = humans > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(humans + judged > 0, 2 * tp / (humans + judged), 0.0)
        return np.asarray((f1 * used).sum(axis=-1) / used.sum(axis=-1))


def _categorical(table: Table, draws: Table, names: Sequence[str]) -> CategoricalMetrics:
    per_class = []
    for c, name in enumerate(names):
        tp, humans, judged = int(table[c, c]), int(table[c].sum()), int(table[:, c].sum())
        per_class.append(ClassMetrics(name=name, human=humans, judge=judged, precision=tp / judged if judged else None,
                                      recall=tp / humans if humans else None,
                                      f1=2 * tp / (humans + judged) if humans + judged else None))
    return CategoricalMetrics(accuracy=_estimate(_per_item(np.eye(len(names))), table, draws),
                              kappa=_estimate(_kappa(), table, draws), macro_f1=_estimate(_macro_f1, table, draws),
                              per_class=per_class, confusion=table.astype(int).tolist())


def _pairwise(table: Table, draws: Table) -> PairwiseMetrics:
    """Positions 0 first, 1 second, 2 tie."""
    return PairwiseMetrics(agreement=_estimate(_per_item(np.eye(3)), table, draws),
                           agreement_without_ties=_estimate(lambda t: _per_item(np.eye(2))(t[..., :2, :2]), table,
                                                            draws),
                           n_without_ties=int(table[:2, :2].sum()), kappa=_estimate(_kappa(), table, draws),
                           human_ties=int(table[2].sum()), judge_ties=int(table[:, 2].sum()),
                           confusion=table.astype(int).tolist())


def scale_metrics(scale: Scale, human: Sequence[ScaleValue], judge: Sequence[ScaleValue], n_boot: int = 2000,
                  seed: int = 0) -> ScaleMetrics:
    """The agreement of ``judge`` with ``human`` (item-aligned values on ``scale``) that fits the scale.

    Raises:
        ValueError: lengths differ, or a value is not on the scale.
    """
    if len(human) != len(judge):
        raise ValueError(f"value lists differ in length: {len(human)} vs {len(judge)}")
    choices = list(scale.choices())
    if scale.kind == "pairwise":
        choices = ["first", "second", "tie"]
    table = contingency_table([scale.parse(v) for v in human], [scale.parse(v) for v in judge], choices)
    draws = bootstrap_tables(table, n_boot, seed) if table.sum() else np.zeros((0, len(choices), len(choices)))
    blocks: dict[str, object] = {}
    if scale.kind == "ordinal":
        blocks["ordinal"] = _ordinal(table, draws)
    elif scale.kind == "pairwise":
        blocks["pairwise"] = _pairwise(table, draws)
    else:
        blocks["categorical"] = _categorical(table, draws, [str(c) for c in choices])
    names = [str(c) for c in choices]
    return ScaleMetrics(kind=scale.kind, n=len(human), human=dict(zip(names, table.sum(axis=1).astype(int).tolist(),
                                                                      strict=True)),
                        judge=dict(zip(names, table.sum(axis=0).astype(int).tolist(), strict=True)), n_boot=n_boot,
                        **blocks)


def position_bias(original: Sequence[ScaleValue | None], swapped: Sequence[ScaleValue | None]) -> PositionBias:
    """How often a pairwise judge's verdict flips when the outputs swap places.

    Args:
        original: per pair, the verdict with the first output shown first (first / second / tie, None:
            no verdict).
        swapped: per pair, the verdict with the second output shown first, already turned back to the
            same orientation (so an unbiased judge gives the same value).

    Raises:
        ValueError: the lists differ in length.
    """
    if len(original) != len(swapped):
        raise ValueError(f"verdict lists differ in length: {len(original)} vs {len(swapped)}")
    both = [(a, b) for a, b in zip(original, swapped, strict=True) if a is not None and b is not None]
    flips = [(a, b) for a, b in both if a != b]
    # shown first: original "first" is the first-shown output; swapped (turned back) "second" was shown first
    first_shown = sum(a == "first" and b == "second" for a, b in flips)
    second_shown = sum(a == "second" and b == "first" for a, b in flips)
    rate = Estimate(value=None)
    if both:
        low, high = wilson_interval(len(flips), len(both))
        rate = Estimate(value=len(flips) / len(both), low=low, high=high)
    return PositionBias(n=len(original), n_scored=len(both), consistent=len(both) - len(flips), flips=len(flips),
                        flip_rate=rate, first_shown=first_shown, second_shown=second_shown)



def scale_ceiling(scale: Scale, by_item: Mapping[str, Mapping[str, str]], items: Collection[str], n_boot: int,
                  seed: int) -> ScaleCeiling | None:
    """Human-human agreement on the scale over ``items``: every pair of annotators (names sorted) on an item
    gives one (first, second) value pair, pooled; None when no item has two annotators.

    Args:
        by_item: item key -> {annotator -> value as text} (:func:`assay.calibration.ceiling.human_labels`).
    """
    first: list[ScaleValue] = []
    second: list[ScaleValue] = []
    names: set[str] = set()
    n_items = 0
    for key in sorted(set(items)):
        labels = by_item.get(key, {})
        if len(labels) < 2:
            continue
        n_items += 1
        names.update(labels)
        for a, b in combinations(sorted(labels), 2):
            first.append(labels[a])
            second.append(labels[b])
    if not n_items:
        return None
    return ScaleCeiling(n_items=n_items, n_pairs=len(first), annotators=tuple(sorted(names)),
                        metrics=scale_metrics(scale, first, second, n_boot, seed))
