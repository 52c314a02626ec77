"""Statistics shared across assay: intervals, agreement, tests and bootstrap helpers.

At the bottom of the package graph: plain numbers in, plain numbers out; it imports nothing
from assay. Callers wrap the numbers in their own report models.

Intervals:

- **Wilson score interval** of a proportion (Wilson 1927, *JASA* 22:209-212), without
  continuity correction (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``).
- **Clopper-Pearson ("exact") interval** of a proportion (Clopper & Pearson 1934, *Biometrika*
  26:404-413): inverts two one-sided exact binomial tests, so its coverage is never below nominal.
- :func:`min_successes_to_clear`: the fewest successes of n whose interval's lower bound reaches a
  threshold (Wilson: the score test; Clopper-Pearson: the exact test), for planning sample sizes.
- **Newcombe's intervals** of a difference of proportions, built from Wilson limits:
  square-and-add for paired data (Newcombe 1998, *Stat Med* 17:2635-2650, method 10) and the
  hybrid score interval for independent samples (Newcombe 1998, *Stat Med* 17:873-890, method 10).
- :func:`z_critical`: the standard normal quantile of a two-sided interval.

Agreement:

- **Cohen's kappa** (Cohen 1960, *Educ Psychol Meas* 20:37-46) and **weighted kappa** (Cohen 1968,
  *Psychol Bull* 70:213-220; quadratic weights as in Fleiss & Cohen 1973) from a k x k table of two
  raters, :func:`cohen_kappa` / :func:`kappa_from_table` (vectorised over bootstrap tables).
- **Spearman's rho** (Spearman 1904, midranks for ties) and **Kendall's tau-b** (Kendall 1945,
  *Biometrika* 33:239-251) of two raters' ordered categories, from their k x k table
  (:func:`spearman_from_table`, :func:`kendall_tau_b_from_table`; equal to ``scipy.stats.spearmanr``
  and ``kendalltau`` on the items, vectorised over bootstrap tables).
- **Fleiss' kappa** (Fleiss 1971, *Psychol Bull* 76:378-382) of many raters from per-item category
  counts, with items that have different numbers of raters allowed (:func:`fleiss_kappa`).
- **Krippendorff's alpha** (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability",
  Annenberg School for Communication, departmental paper 43) at the nominal, ordinal and interval
  levels, missing values allowed (:func:`krippendorff_alpha`).

Each is None (never NaN) where it is undefined; the callers say why in words.

Tests: **McNemar's exact test** (McNemar 1947, *Psychometrika* 12:153-157) of paired verdicts.

Bootstrap helpers (Efron 1979; Efron & Tibshirani 1993, ch. 13): the rates of a 2x2 confusion
table for arrays of counts, a vectorised multinomial resampling of its cells (of any k x k table),
resampling weights of items (:func:`bootstrap_weights`: how often each item is drawn in each
resample), and the percentile interval of bootstrap draws.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import permutations
from typing import Literal

import numpy as np
from scipy import stats

DEFAULT_CONFIDENCE = 0.95
AlphaLevel = Literal["nominal", "ordinal", "interval"]
KappaWeights = Literal["linear", "quadratic"]


# --- intervals ----------------------------------------------------------------------------------
def z_critical(confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The standard normal quantile ``z`` with ``P(-z < Z < z) = confidence`` (1.95996... at 0.95).

    Raises:
        ValueError: ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) of a proportion ``k / n``, without continuity correction.

    Returns:
        (low, high), within [0, 1].

    Raises:
        ValueError: ``n < 1`` or ``k`` outside ``[0, n]``.
    """
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def clopper_pearson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval (Clopper & Pearson 1934) of a proportion ``k / n``.

    ``low = Beta^-1(alpha/2; k, n - k + 1)`` (0 when k = 0), ``high = Beta^-1(1 - alpha/2; k + 1, n - k)``
    (1 when k = n), with ``alpha = 1 - confidence``.

    Returns:
        (low, high), within [0, 1].

    Raises:
        ValueError: ``n < 1`` or ``k`` outside ``[0, n]``.
    """
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def proportion_interval(k: int, n: int, method: str = "wilson",
                        confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The ``method`` interval of ``k / n``: ``"wilson"`` (:func:`wilson_interval`) or ``"exact"``
    (:func:`clopper_pearson_interval`).

    Raises:
        ValueError: an unknown method, ``n < 1`` or ``k`` outside ``[0, n]``.
    """
    if method == "wilson":
        return wilson_interval(k, n, confidence)
    if method == "exact":
        return clopper_pearson_interval(k, n, confidence)
    raise ValueError(f"unknown interval method {method!r}: use wilson or exact")


def min_successes_to_clear(n: np.ndarray, threshold: float, method: str = "wilson",
                           confidence: float = DEFAULT_CONFIDENCE) -> np.ndarray:
    """For each sample size in ``n``, the fewest successes ``k`` whose ``method`` interval has ``low >= threshold``.

    The lower bound of the two-sided ``confidence`` interval reaches ``t`` exactly when the one-sided test of
    ``p <= t`` at level ``alpha / 2`` rejects, so:

    - Wilson (score test): ``k / n - t >= z * sqrt(t (1 - t) / n)``, i.e. ``k >= n t + z sqrt(n t (1 - t))``;
    - Clopper-Pearson (exact test): ``P(Bin(n, t) >= k) <= alpha / 2``.

    The closed form is checked against the interval itself and moved by one where rounding put it off.

    Args:
        n: sample sizes (>= 1), any integer array.
        threshold: ``t`` in (0, 1).

    Returns:
        an integer array like ``n``; ``n + 1`` where no k of n clears (``t`` too close to 1 for that n).

    Raises:
        ValueError: an unknown method, or ``threshold`` outside (0, 1).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    n = np.asarray(n, dtype=np.int64)
    alpha = 1.0 - confidence
    if method == "wilson":
        z = z_critical(confidence)
        k = np.ceil(n * threshold + z * np.sqrt(n * threshold * (1.0 - threshold)) - 1e-9).astype(np.int64)
    elif method == "exact":
        k = stats.binom.isf(alpha / 2, n, threshold).astype(np.int64) + 1
    else:
        raise ValueError(f"unknown interval method {method!r}: use wilson or exact")
    k = np.clip(k, 0, n + 1)
    low = _lower_bounds(np.minimum(k, n), n, method, confidence)
    k = np.where((k <= n) & (low < threshold), k + 1, k)  # rounding put the closed form one short
    below = np.clip(k - 1, 0, n)
    low_below = _lower_bounds(below, n, method, confidence)
    k = np.where((k >= 1) & (k - 1 <= n) & (low_below >= threshold), k - 1, k)  # ... or one over
    return np.clip(k, 0, n + 1)


def proportion_bounds(k: np.ndarray, n: np.ndarray, method: str = "wilson",
                      confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """:func:`proportion_interval` for arrays of counts at once (closed forms, no per-value test object).

    Wilson: ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = k / n``;
    Clopper-Pearson: ``Beta^-1(alpha/2; k, n-k+1)`` and ``Beta^-1(1-alpha/2; k+1, n-k)`` (0 and 1 at the ends).

    Returns:
        (lows, highs), arrays like ``k``; NaN where ``n < 1``.

    Raises:
        ValueError: an unknown method.
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "exact":
            alpha = 1.0 - confidence
            low = np.where(k <= 0, 0.0, stats.beta.ppf(alpha / 2, k, n - k + 1))
            high = np.where(k >= n, 1.0, stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
        elif method == "wilson":
            z = z_critical(confidence)
            p = k / n
            centre, spread = p + z * z / (2 * n), z * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0))
            low, high = (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)
        else:
            raise ValueError(f"unknown interval method {method!r}: use wilson or exact")
    bad = n < 1
    return np.where(bad, np.nan, np.clip(low, 0.0, 1.0)), np.where(bad, np.nan, np.clip(high, 0.0, 1.0))


def _lower_bounds(k: np.ndarray, n: np.ndarray, method: str, confidence: float) -> np.ndarray:
    return proportion_bounds(k, n, method, confidence)[0]


def newcombe_paired_ci(both: int, candidate_only: int, baseline_only: int, neither: int,
                       confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Newcombe's square-and-add CI of a paired difference of proportions (Newcombe 1998, method 10).

    Counts of the paired 2x2 table of pass verdicts: ``both`` passed, ``candidate_only`` passed,
    ``baseline_only`` passed, ``neither`` passed. The difference is
    ``(candidate_only - baseline_only) / n``. With Wilson limits (l1, u1) of the candidate rate
    p1 and (l2, u2) of the baseline rate p2, and phi the continuity-corrected correlation of the
    table (0 when a margin is empty or ``0 <= ad - bc <= n/2``; ``(ad - bc - n/2)/sqrt(margins)``
    above; ``(ad - bc)/sqrt(margins)`` below zero)::

        low  = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    Returns:
        (low, high), within [-1, 1].

    Raises:
        ValueError: no pairs, or a negative count.
    """
    a, b, c, d = both, candidate_only, baseline_only, neither
    if min(a, b, c, d) < 0 or a + b + c + d == 0:
        raise ValueError("a paired table needs non-negative counts and at least one pair")
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    diff = p1 - p2
    low = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = diff + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, low), min(1.0, high)


def newcombe_independent_ci(k1: int, n1: int, k2: int, n2: int,
                            confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Newcombe's hybrid score CI of ``k1/n1 - k2/n2`` for independent samples (Newcombe 1998, method 10).

    With Wilson limits (l1, u1) of p1 and (l2, u2) of p2::

        low  = (p1 - p2) - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        high = (p1 - p2) + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    Returns:
        (low, high), within [-1, 1].

    Raises:
        ValueError: an empty sample or a count outside ``[0, n]``.
    """
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    diff = p1 - p2
    return (max(-1.0, diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


# --- agreement ----------------------------------------------------------------------------------
def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa (Cohen 1960) of two raters over the same items, any number of categories.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e`` the
    chance agreement from the raters' marginals.

    Args:
        a, b: the two raters' labels, same length, item-aligned.

    Returns:
        kappa in [-1, 1], or None when undefined (chance agreement is 1, or no items), never NaN.

    Raises:
        ValueError: the sequences differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"rater label lists differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def contingency_table(a: Sequence[Hashable], b: Sequence[Hashable], categories: Sequence[Hashable]) -> np.ndarray:
    """The k x k table of two raters' item-aligned labels: ``table[i, j]`` = items rater a put in
    ``categories[i]`` and rater b in ``categories[j]``.

    Raises:
        ValueError: the sequences differ in length, or a label is not in ``categories``.
    """
    if len(a) != len(b):
        raise ValueError(f"rater label lists differ in length: {len(a)} vs {len(b)}")
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b, strict=True):
        if x not in index or y not in index:
            raise ValueError(f"label {x if x not in index else y!r} is not one of the categories")
        table[index[x], index[y]] += 1
    return table


def kappa_from_table(table: np.ndarray, weights: KappaWeights | None = None) -> np.ndarray:
    """Cohen's kappa of k x k tables (the last two axes; leading axes are, e.g., bootstrap resamples).

    ``kappa = 1 - sum(w * observed) / sum(w * expected)`` with ``expected`` the outer product of the
    marginals over n, and disagreement weights ``w_ij = [i != j]`` (unweighted, Cohen 1960),
    ``|i - j| / (k - 1)`` (linear) or ``((i - j) / (k - 1))**2`` (quadratic, Cohen 1968), ``i, j`` the
    categories' positions. Unweighted, it equals ``(p_o - p_e) / (1 - p_e)``.

    Returns:
        kappa per table; NaN where undefined (no item, or expected disagreement 0: every label in
        one category). Callers turn NaN into None.
    """
    k = table.shape[-1]
    pos = np.arange(k, dtype=float)
    gap = np.abs(pos[:, None] - pos[None, :]) / max(k - 1, 1)
    w = (gap > 0).astype(float) if weights is None else gap if weights == "linear" else gap ** 2
    n = table.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = table.sum(axis=-1)[..., :, None] * table.sum(axis=-2)[..., None, :] / n[..., None, None]
        observed_d = (w * table).sum(axis=(-2, -1))
        expected_d = (w * expected).sum(axis=(-2, -1))
        return np.where(expected_d > 1e-12, 1.0 - observed_d / expected_d, np.nan)


def spearman_from_table(table: np.ndarray) -> np.ndarray:
    """Spearman's rho of a k x k table of ordered categories (last two axes; leading axes broadcast).

    Each category's rank is its midrank among the n items (ties share the mean rank); rho is the
    Pearson correlation of the two ranks over the items, weighted by the cells.

    Returns:
        rho per table; NaN where a rater used one category only (no variance).
    """
    n = table.sum(axis=(-2, -1))[..., None]
    rows, cols = table.sum(axis=-1), table.sum(axis=-2)

    def midranks(marginal: np.ndarray) -> np.ndarray:
        return np.cumsum(marginal, axis=-1) - marginal + (marginal + 1) / 2.0

    r = midranks(rows) - (n + 1) / 2.0
    c = midranks(cols) - (n + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = (table * r[..., :, None] * c[..., None, :]).sum(axis=(-2, -1))
        var = (rows * r ** 2).sum(axis=-1) * (cols * c ** 2).sum(axis=-1)
        return np.where(var > 1e-12, cov / np.sqrt(var), np.nan)


def kendall_tau_b_from_table(table: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of a k x k table of ordered categories (last two axes; leading axes broadcast).

    ``tau_b = (C - D) / sqrt((n0 - T_a) (n0 - T_b))`` with C and D the concordant and discordant pairs
    of items, ``n0 = n (n - 1) / 2`` and ``T_a``, ``T_b`` the pairs tied on each rater.

    Returns:
        tau-b per table; NaN where a rater used one category only.
    """
    # items strictly below and right of each cell (concordant partners), strictly below and left (discordant)
    below = np.flip(np.cumsum(np.flip(table, axis=-2), axis=-2), axis=-2) - table
    below_right = np.flip(np.cumsum(np.flip(below, axis=-1), axis=-1), axis=-1) - below
    below_left = np.cumsum(below, axis=-1) - below
    concordant = (table * below_right).sum(axis=(-2, -1))
    discordant = (table * below_left).sum(axis=(-2, -1))
    n = table.sum(axis=(-2, -1))
    n0 = n * (n - 1) / 2.0
    tied_a = (table.sum(axis=-1) * (table.sum(axis=-1) - 1) / 2.0).sum(axis=-1)
    tied_b = (table.sum(axis=-2) * (table.sum(axis=-2) - 1) / 2.0).sum(axis=-1)
    denom = (n0 - tied_a) * (n0 - tied_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 1e-12, (concordant - discordant) / np.sqrt(denom), np.nan)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa (Fleiss 1971) from per-item category counts (items x categories).

    ``counts[i, j]`` raters put item ``i`` in category ``j``; items with fewer than two ratings are
    left out, and items may have different numbers of raters ``n_i``::

        P_i = (sum_j counts[i, j]**2 - n_i) / (n_i (n_i - 1))      agreement on item i
        p_j = sum_i counts[i, j] / sum_i n_i                        share of category j
        kappa = (mean_i P_i - sum_j p_j**2) / (1 - sum_j p_j**2)

    With the same number of raters on every item this is Fleiss (1971) exactly.

    Returns:
        kappa, or None when undefined: no item with two ratings, or every rating in one category.
    """
    value = _fleiss(np.asarray(counts, dtype=float), None)
    return None if np.isnan(value[0]) else float(value[0])


def _fleiss(counts: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Fleiss' kappa of the items weighted by ``weights`` (resamples x items; None: each item once)."""
    n_i = counts.sum(axis=1)
    rated = counts[n_i >= 2]
    n_r = n_i[n_i >= 2]
    w = np.ones((1, len(n_r))) if weights is None else weights[:, n_i >= 2]
    if len(n_r) == 0:
        return np.full(w.shape[0], np.nan)
    p_item = ((rated ** 2).sum(axis=1) - n_r) / (n_r * (n_r - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_bar = (w @ p_item) / w.sum(axis=1)
        p_cat = (w @ rated) / (w @ n_r)[:, None]
        p_e = (p_cat ** 2).sum(axis=1)
        return np.where(p_e < 1.0 - 1e-12, (p_bar - p_e) / (1.0 - p_e), np.nan)


def bootstrap_fleiss_kappa(counts: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap draws of :func:`fleiss_kappa` (items resampled with replacement; NaN where
    a draw is undefined)."""
    counts = np.asarray(counts, dtype=float)
    return _fleiss(counts, bootstrap_weights(len(counts), n_boot, seed))


def krippendorff_alpha(units: Sequence[Sequence[Hashable | None]], level: AlphaLevel = "nominal") -> float | None:
    """Krippendorff's alpha over reliability data, any number of coders, missing values allowed.

    From the coincidence matrix ``o_ck`` of the pairable values (units with >= 2 values, each
    unit's pairs weighted ``1 / (m_u - 1)``), its marginals ``n_c`` and total ``n`` (Krippendorff 2011)::

        alpha = 1 - (n - 1) * sum_ck o_ck * d2_ck / sum_ck n_c * n_k * d2_ck

    with ``d2_ck = [c != k]`` (nominal), ``(sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2`` over the
    sorted values (ordinal) or ``(c - k) ** 2`` (interval; values must be numbers).

    Args:
        units: one sequence per unit (item) of the values the coders gave it; ``None`` is a missing
            value. Coders need not be aligned across units.
        level: nominal (categories), ordinal (sortable ranks, e.g. levels 1..5) or interval (numbers).

    Returns:
        alpha in (-1, 1] (1 = perfect agreement, 0 = chance), or None when undefined: fewer than two
        pairable values, or one distinct value among them (no expected disagreement).
    """
    values, per_unit = unit_coincidences(units)
    if not len(values):
        return None
    value = alpha_from_coincidences(per_unit.sum(axis=0)[None], values, level)[0]
    return None if np.isnan(value) else float(value)


def unit_coincidences(units: Sequence[Sequence[Hashable | None]]) -> tuple[list[Hashable], np.ndarray]:
    """The pairable values (sorted) and each pairable unit's coincidence matrix (units x V x V)."""
    kept = [[v for v in unit if v is not None] for unit in units]
    kept = [u for u in kept if len(u) >= 2]
    values: list[Hashable] = sorted({v for u in kept for v in u})  # type: ignore[type-var]
    index = {v: i for i, v in enumerate(values)}
    out = np.zeros((len(kept), len(values), len(values)))
    for n, unit in enumerate(kept):
        for c, k in permutations(unit, 2):
            out[n, index[c], index[k]] += 1.0 / (len(unit) - 1)
    return values, out


def alpha_from_coincidences(o: np.ndarray, values: Sequence[Hashable], level: AlphaLevel) -> np.ndarray:
    """Krippendorff's alpha of coincidence matrices ``o`` (resamples x V x V, over the sorted ``values``);
    NaN where undefined (see :func:`krippendorff_alpha`)."""
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    if level == "nominal":
        d2 = np.broadcast_to(1.0 - np.eye(len(values)), o.shape)
    elif level == "interval":
        x = np.asarray(values, dtype=float)
        d2 = np.broadcast_to((x[:, None] - x[None, :]) ** 2, o.shape)
    else:
        cum = np.concatenate([np.zeros((len(o), 1)), np.cumsum(n_c, axis=1)], axis=1)
        lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
        hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        between = cum[:, hi + 1] - cum[:, lo]
        d2 = (between - (n_c[:, :, None] + n_c[:, None, :]) / 2.0) ** 2
    observed = (o * d2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * d2).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((expected > 1e-12) & (n >= 2), 1.0 - (n - 1) * observed / expected, np.nan)


def bootstrap_krippendorff_alpha(units: Sequence[Sequence[Hashable | None]], level: AlphaLevel, n_boot: int,
                                 seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap draws of :func:`krippendorff_alpha`, resampling the pairable units with
    replacement (NaN where a draw is undefined; empty when no unit is pairable)."""
    values, per_unit = unit_coincidences(units)
    if not len(per_unit):
        return np.array([])
    w = bootstrap_weights(len(per_unit), n_boot, seed)
    o = (w @ per_unit.reshape(len(per_unit), -1)).reshape(n_boot, len(values), len(values))
    return alpha_from_coincidences(o, values, level)


# --- tests --------------------------------------------------------------------------------------
def mcnemar_exact(candidate_only_pass: int, baseline_only_pass: int) -> float:
    """Two-sided p-value of McNemar's exact test from the two discordant counts.

    Under H0 each discordant pair is equally likely to favour either side, so the p-value is
    the exact two-sided binomial test of ``candidate_only_pass`` successes in
    ``candidate_only_pass + baseline_only_pass`` trials with p = 0.5 (McNemar 1947).
    No discordant pair gives 1.0.

    Raises:
        ValueError: a negative count.
    """
    if candidate_only_pass < 0 or baseline_only_pass < 0:
        raise ValueError("discordant counts must be >= 0")
    n = candidate_only_pass + baseline_only_pass
    return 1.0 if n == 0 else float(stats.binomtest(candidate_only_pass, n, 0.5).pvalue)


# --- bootstrap ----------------------------------------------------------------------------------
def confusion_rates(tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """All rates of a 2x2 judge-vs-human table (pass = positive) from (arrays of) counts; NaN where undefined.

    Keys: ``agreement`` (accuracy), ``kappa`` (Cohen 1960), ``tpr`` = tp / (tp + fn), ``tnr`` =
    tn / (tn + fp), ``balanced_accuracy`` = (tpr + tnr) / 2, ``precision_fail`` = tn / (tn + fn),
    ``recall_fail`` = tnr. Arrays broadcast, so one call rates every bootstrap resample.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        n = tp + fn + fp + tn
        acc = (tp + tn) / n
        p_e = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / (n * n)
        kappa = np.where(p_e < 1.0, (acc - p_e) / (1.0 - p_e), np.nan)
        tpr = tp / (tp + fn)
        tnr = tn / (tn + fp)
        return {"agreement": acc, "kappa": kappa, "tpr": tpr, "tnr": tnr, "balanced_accuracy": (tpr + tnr) / 2,
                "precision_fail": tn / (tn + fn), "recall_fail": tnr}


def bootstrap_confusion_rates(tp: int, fn: int, fp: int, tn: int, n_boot: int, seed: int = 0
                              ) -> dict[str, np.ndarray]:
    """:func:`confusion_rates` of ``n_boot`` bootstrap resamples of a 2x2 table (``n_boot`` values per key).

    Resampling n items with replacement is, for a 2x2 table, one multinomial draw of the four
    cells with the observed cell shares, so all resamples are drawn at once
    (``numpy.random.default_rng(seed).multinomial``): same counts and seed, same draws.

    Raises:
        ValueError: an empty table (n = 0).
    """
    n = tp + fn + fp + tn
    if n <= 0:
        raise ValueError("a bootstrap of a confusion table needs at least one item")
    cells = np.array([tp, fn, fp, tn], dtype=float)
    counts = np.random.default_rng(seed).multinomial(n, cells / n, size=n_boot).astype(float)
    return confusion_rates(counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3])


def bootstrap_tables(table: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap resamples of a k x k table of n items (``n_boot x k x k``): one multinomial
    draw of n items over the cells with the observed cell shares each (items resampled with replacement).

    Raises:
        ValueError: an empty table.
    """
    n = int(table.sum())
    if n <= 0:
        raise ValueError("a bootstrap of a table needs at least one item")
    cells = np.random.default_rng(seed).multinomial(n, table.ravel() / n, size=n_boot)
    return cells.reshape(n_boot, *table.shape).astype(float)


def bootstrap_weights(n_items: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """How often each of ``n_items`` items is drawn in each of ``n_boot`` resamples with replacement
    (``n_boot x n_items``, rows summing to ``n_items``): a statistic that sums over items is resampled
    as ``weights @ per_item``."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(float)


def percentile_interval(draws: np.ndarray) -> tuple[float, float] | None:
    """The 95% percentile interval (2.5th and 97.5th percentiles) of bootstrap draws.

    Draws on which the statistic was undefined (NaN) are left out.

    Returns:
        (low, high), or None when no draw is finite.
    """
    finite = draws[~np.isnan(draws)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)
