"""Statistics of the CI gate: candidate vs baseline, paired or not, and evaluator redundancy.

Pass/fail (verdicts):

- **paired** (both sides scored the same inputs): McNemar's exact test (McNemar 1947,
  *Psychometrika* 12:153-157) -- under H0 the discordant pairs split 50/50, so the p-value is
  the two-sided exact binomial test of one discordant count out of all discordant pairs
  (``scipy.stats.binomtest``). The 95% CI of the difference in pass rates is Newcombe's
  square-and-add interval for paired data (Newcombe 1998, *Stat Med* 17:2635-2650, method 10).
- **independent**: Fisher's exact test of the 2x2 table (``scipy.stats.fisher_exact``,
  two-sided), and Newcombe's hybrid score interval for the difference of independent
  proportions (Newcombe 1998, *Stat Med* 17:873-890, method 10). Both Newcombe intervals are
  built from Wilson score intervals of each rate (Wilson 1927). The intervals and McNemar's test
  are :mod:`assay.stats`'s.

Mean scores: the bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*):
percentile CI of the difference of means (ch. 13), and the p-value of H0 "equal means" from
resampling data shifted to satisfy H0 (ch. 16: Algorithm 16.2 for two samples; the one-sample
version on the per-pair differences when paired).

Redundancy: Pearson's r between two evaluators' scores on the units both scored
(``scipy.stats.pearsonr``); |r| above 0.8 flags a pair as probably measuring one dimension.

Every difference is **candidate minus baseline**: negative means the candidate is worse.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict
from scipy import stats

from assay.stats import DEFAULT_CONFIDENCE, mcnemar_exact, newcombe_independent_ci, newcombe_paired_ci

DEFAULT_RESAMPLES = 4000
MIN_COMMON_UNITS = 10
"""Fewest units two evaluators must both have scored before their correlation is computed."""


class RateComparison(BaseModel):
    """Candidate vs baseline pass rate.

    Attributes:
        method: ``"mcnemar-exact"`` (paired) or ``"fisher-exact"`` (independent samples).
        paired: whether the two sides were matched unit by unit.
        n_candidate, n_baseline: scored units on each side (equal to ``n_pairs`` when paired).
        candidate_rate, baseline_rate: pass rates in [0, 1].
        diff: ``candidate_rate - baseline_rate`` in [-1, 1] (negative: the candidate is worse).
        ci_low, ci_high: the CI of ``diff`` at ``confidence`` (Newcombe, see module docstring).
        p_value: two-sided p-value of "no difference" in [0, 1].
        n_pairs: matched pairs (paired only).
        candidate_only_pass: pairs where only the candidate passed (paired only).
        baseline_only_pass: pairs where only the baseline passed (paired only).
    """

    model_config = ConfigDict(frozen=True)

    method: Literal["mcnemar-exact", "fisher-exact"]
    paired: bool
    n_candidate: int
    n_baseline: int
    candidate_rate: float
    baseline_rate: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    n_pairs: int | None = None
    candidate_only_pass: int | None = None
    baseline_only_pass: int | None = None


class ScoreComparison(BaseModel):
    """Candidate vs baseline mean score (scores in [0, 1]) by the bootstrap.

    Attributes:
        method: ``"paired-bootstrap"`` or ``"bootstrap"`` (independent samples).
        candidate_mean, baseline_mean: mean scores in [0, 1].
        diff: ``candidate_mean - baseline_mean``.
        ci_low, ci_high: percentile bootstrap CI of ``diff`` at ``confidence``.
        p_value: bootstrap p-value of "equal means", ``(1 + hits) / (1 + n_resamples)``.
        n_resamples, seed: the resampling, for reproducibility.
    """

    model_config = ConfigDict(frozen=True)

    method: Literal["paired-bootstrap", "bootstrap"]
    n_candidate: int
    n_baseline: int
    candidate_mean: float
    baseline_mean: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    n_resamples: int
    seed: int


class RedundantPair(BaseModel):
    """Two evaluators whose scores correlate on the units both scored.

    Attributes:
        evaluator_a, evaluator_b: the evaluator names (``a < b``).
        r: Pearson's correlation coefficient in [-1, 1].
        p_value: two-sided p-value of r = 0 (``scipy.stats.pearsonr``).
        n_units: units both evaluators scored.
    """

    model_config = ConfigDict(frozen=True)

    evaluator_a: str
    evaluator_b: str
    r: float
    p_value: float
    n_units: int


def compare_paired_verdicts(pairs: Sequence[tuple[bool, bool]],
                            confidence: float = DEFAULT_CONFIDENCE) -> RateComparison:
    """Compare pass rates on matched units: McNemar's exact test and Newcombe's paired CI.

    Args:
        pairs: ``(candidate passed, baseline passed)`` per matched unit.

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("no pairs to compare")
    both = sum(c and b for c, b in pairs)
    cand_only = sum(c and not b for c, b in pairs)
    base_only = sum(b and not c for c, b in pairs)
    neither = len(pairs) - both - cand_only - base_only
    low, high = newcombe_paired_ci(both, cand_only, base_only, neither, confidence)
    n = len(pairs)
    return RateComparison(method="mcnemar-exact", paired=True, n_candidate=n, n_baseline=n,
                          candidate_rate=(both + cand_only) / n, baseline_rate=(both + base_only) / n,
                          diff=(cand_only - base_only) / n, ci_low=low, ci_high=high, confidence=confidence,
                          p_value=mcnemar_exact(cand_only, base_only), n_pairs=n,
                          candidate_only_pass=cand_only, baseline_only_pass=base_only)


def compare_independent_verdicts(candidate: Sequence[bool], baseline: Sequence[bool],
                                 confidence: float = DEFAULT_CONFIDENCE) -> RateComparison:
    """Compare pass rates of two independent samples: Fisher's exact test and Newcombe's hybrid score CI.

    Raises:
        ValueError: an empty side.
    """
    if not candidate or not baseline:
        raise ValueError("both sides need at least one scored unit")
    k1, n1, k2, n2 = sum(candidate), len(candidate), sum(baseline), len(baseline)
    low, high = newcombe_independent_ci(k1, n1, k2, n2, confidence)
    p_value = float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    return RateComparison(method="fisher-exact", paired=False, n_candidate=n1, n_baseline=n2,
                          candidate_rate=k1 / n1, baseline_rate=k2 / n2, diff=k1 / n1 - k2 / n2,
                          ci_low=low, ci_high=high, confidence=confidence, p_value=min(1.0, p_value))


def bootstrap_mean_difference(candidate: npt.ArrayLike, baseline: npt.ArrayLike, paired: bool,
                              confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                              seed: int = 0) -> ScoreComparison:
    """Bootstrap CI and p-value of ``mean(candidate) - mean(baseline)`` (Efron & Tibshirani 1993).

    Paired (``candidate[i]`` and ``baseline[i]`` scored the same input): resample the per-pair
    differences z; the CI is the percentile interval of mean(z*), the p-value resamples
    ``z - mean(z)`` (H0 made true) and counts ``|mean| >= |mean(z)|`` (ch. 16.4, one-sample).
    Independent: resample each side on its own; the p-value resamples both sides shifted to
    the pooled mean (Algorithm 16.2). p = (1 + hits) / (1 + n_resamples), never 0.

    Raises:
        ValueError: an empty side, or paired samples of different lengths.
    """
    x, y = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("both sides need at least one score")
    if paired and x.size != y.size:
        raise ValueError("paired samples must have the same length")
    rng = np.random.default_rng(seed)
    observed = float(x.mean() - y.mean())
    if paired:
        z = x - y
        idx = rng.integers(0, z.size, size=(n_resamples, z.size))
        boot = z[idx].mean(axis=1)
        null = (z - z.mean())[idx].mean(axis=1)
    else:
        ix = rng.integers(0, x.size, size=(n_resamples, x.size))
        iy = rng.integers(0, y.size, size=(n_resamples, y.size))
        boot = x[ix].mean(axis=1) - y[iy].mean(axis=1)
        pooled = float(np.concatenate([x, y]).mean())
        null = (x - x.mean() + pooled)[ix].mean(axis=1) - (y - y.mean() + pooled)[iy].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    hits = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return ScoreComparison(method="paired-bootstrap" if paired else "bootstrap", n_candidate=int(x.size),
                           n_baseline=int(y.size), candidate_mean=float(x.mean()), baseline_mean=float(y.mean()),
                           diff=observed, ci_low=float(low), ci_high=float(high), confidence=confidence,
                           p_value=(1 + hits) / (1 + n_resamples), n_resamples=n_resamples, seed=seed)


def correlations(scores: Mapping[str, Mapping[str, float]],
                 min_units: int = MIN_COMMON_UNITS) -> list[RedundantPair]:
    """Pearson's r for every pair of evaluators on the units both scored.

    Args:
        scores: evaluator name -> unit id -> score.
        min_units: fewest common units for a pair to be computed.

    Returns:
        one entry per pair with at least ``min_units`` common units and non-constant scores on
        both sides (r is undefined otherwise), ordered by |r| descending.
    """
    out: list[RedundantPair] = []
    for a, b in itertools.combinations(sorted(scores), 2):
        common = sorted(set(scores[a]) & set(scores[b]))
        if len(common) < max(min_units, 3):
            continue
        xa = np.array([scores[a][u] for u in common], dtype=float)
        xb = np.array([scores[b][u] for u in common], dtype=float)
        if np.ptp(xa) == 0 or np.ptp(xb) == 0:
            continue
        res = stats.pearsonr(xa, xb)
        out.append(RedundantPair(evaluator_a=a, evaluator_b=b, r=float(res.statistic),
                                 p_value=float(res.pvalue), n_units=len(common)))
    return sorted(out, key=lambda p: -abs(p.r))


def redundant_pairs(scores: Mapping[str, Mapping[str, float]], threshold: float = 0.8) -> list[RedundantPair]:
    """Pairs of evaluators whose scores correlate with |r| > ``threshold`` on their common units.

    Such a pair probably measures one dimension. Pairs with fewer than
    :data:`MIN_COMMON_UNITS` common units, or constant scores, are not judged.

    Args:
        scores: evaluator name -> unit id -> score in [0, 1].
        threshold: |r| above which a pair is flagged, in [0, 1].

    Returns:
        the flagged pairs, strongest first.
    """
    return [p for p in correlations(scores) if abs(p.r) > threshold]
