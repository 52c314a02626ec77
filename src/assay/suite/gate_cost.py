"""The gate's optional cost and latency check: a change that makes runs costlier or slower is a regression too.

``assay gate --max-cost-increase 0.2 --max-latency-increase 0.2`` compares the candidate's mean cost
(USD) and mean latency (s) per unit with the baseline's (:mod:`assay.traces.usage`: summed once per
trace, the source's cost else configured prices). The relative increase is
``mean(candidate) / mean(baseline) - 1``; its CI is the percentile bootstrap (Efron & Tibshirani 1993,
ch. 13) at confidence ``1 - alpha``, resampling matched pairs when the gate paired the units (same
unit, content or dataset item), else each side on its own. A check fails

- as a **regression** (exit 1) when the increase is above the allowed one *and* significant (the CI's
  lower bound above 0), as the pass-rate comparison needs both a drop beyond ``gate_margin`` and
  p < alpha;
- as **unknown** (exit 3, like too many evaluator errors) when fewer than 2 units on a side (2 pairs,
  when paired) know the value, or the baseline's mean is 0: the gate cannot tell, so it says so.

Units whose value is unknown are left out and counted (coverage); they never count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay._store.usage import unit_usages
from assay.exceptions import UsageError
from assay.traces.usage import Price, UnitUsage

Metric = Literal["cost", "latency"]
UNITS: dict[Metric, str] = {"cost": "USD", "latency": "s"}
RESAMPLES = 4000


class UsageCheck(BaseModel):
    """One metric compared with the baseline (see the module docstring).

    Attributes:
        increase: ``candidate_mean / baseline_mean - 1`` (0.25: 25% more); None when unknown.
        ci_low, ci_high: its bootstrap CI at ``confidence``.
        n_candidate, n_baseline: units (pairs, when paired) whose value is known and was compared.
        candidate_units, baseline_units: all units of each side (coverage = n / units).
        failure: ``"regression"``, ``"unknown"`` or None when the check passed.
    """

    model_config = ConfigDict(frozen=True)

    metric: Metric
    max_increase: float = Field(description="allowed relative increase, e.g. 0.2 for 20%")
    candidate_mean: float | None = None
    baseline_mean: float | None = None
    increase: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95
    paired: bool = False
    n_candidate: int = 0
    n_baseline: int = 0
    candidate_units: int = 0
    baseline_units: int = 0
    failure: Literal["regression", "unknown"] | None = None
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.failure is None


def _value(usage: UnitUsage | None, metric: Metric) -> float | None:
    if usage is None:
        return None
    return usage.cost_usd if metric == "cost" else usage.latency_s


def bootstrap_ratio(candidate: Sequence[float], baseline: Sequence[float], paired: bool, confidence: float,
                    n_resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(candidate) / mean(baseline) - 1`` (pairs resampled together
    when ``paired``). Resamples whose baseline mean is 0 are dropped."""
    x, y = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, x.size, size=(n_resamples, x.size))
    iy = ix if paired else rng.integers(0, y.size, size=(n_resamples, y.size))
    base = y[iy].mean(axis=1)
    keep = base > 0
    ratios = x[ix].mean(axis=1)[keep] / base[keep] - 1
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def _fmt(metric: Metric, value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:.4f}" if metric == "cost" else f"{value:.2f} s"


def compare_usage(metric: Metric, candidate: Mapping[str, UnitUsage | None], baseline: Mapping[str, UnitUsage | None],
                  pairs: Mapping[str, str] | None, max_increase: float, alpha: float = 0.05) -> UsageCheck:
    """Compare one metric of the two sides' units (unit id -> usage); ``pairs`` maps candidate to
    baseline unit ids when the gate paired them, else None."""
    common = {"metric": metric, "max_increase": max_increase, "confidence": 1 - alpha,
              "candidate_units": len(candidate), "baseline_units": len(baseline)}
    if pairs:
        matched = [(c, b) for c, b in sorted(pairs.items())
                   if _value(candidate.get(c), metric) is not None and _value(baseline.get(b), metric) is not None]
        xs = [_value(candidate[c], metric) or 0.0 for c, _ in matched]
        ys = [_value(baseline[b], metric) or 0.0 for _, b in matched]
    else:
        xs = [v for u in candidate.values() if (v := _value(u, metric)) is not None]
        ys = [v for u in baseline.values() if (v := _value(u, metric)) is not None]
    common |= {"paired": bool(pairs), "n_candidate": len(xs), "n_baseline": len(ys)}
    what = "pairs" if pairs else "units"
    if len(xs) < 2 or len(ys) < 2:
        return UsageCheck(**common, failure="unknown", reason=(
            f"{metric} cannot be compared: known for {len(xs)} candidate and {len(ys)} baseline {what} (at least "
            f"2 each needed; of {len(candidate)} and {len(baseline)} units)"))
    cand, base = float(np.mean(xs)), float(np.mean(ys))
    common |= {"candidate_mean": cand, "baseline_mean": base}
    if base <= 0:
        return UsageCheck(**common, failure="unknown", reason=f"{metric} cannot be compared: the baseline's "
                          f"mean is {_fmt(metric, base)}")
    low, high = bootstrap_ratio(xs, ys, bool(pairs), 1 - alpha)
    increase = cand / base - 1
    common |= {"increase": increase, "ci_low": low, "ci_high": high}
    text = (f"mean {metric} {_fmt(metric, cand)} vs baseline {_fmt(metric, base)}: {increase:+.1%} "
            f"({1 - alpha:.0%} CI {low:+.1%} to {high:+.1%}; {len(xs)} {what}"
            + ("" if pairs else f" vs {len(ys)}") + f" with a known {metric})")
    if increase > max_increase and low > 0:
        return UsageCheck(**common, failure="regression", reason=f"{metric} regression: {text}, above the allowed "
                          f"{max_increase:+.0%} and significant")
    return UsageCheck(**common, reason=f"{text}; allowed {max_increase:+.0%}")


def check_limits(limits: Mapping[Metric, float | None], baseline: str | None) -> None:
    """Refuse limits that cannot apply, before anything is scored.

    Raises:
        UsageError: a negative limit, or a limit without a baseline to compare with.
    """
    for metric, limit in limits.items():
        if limit is None:
            continue
        if limit < 0:
            raise UsageError(f"--max-{metric}-increase must be 0 or more (a share: 0.2 allows 20%), got {limit}")
        if baseline is None:
            raise UsageError(f"--max-{metric}-increase compares with a baseline: give --baseline")


def check_usage(store: Store, candidate: Sequence[str], baseline: Sequence[str], pairs: Mapping[str, str] | None,
                limits: Mapping[Metric, float | None], alpha: float = 0.05,
                prices: Mapping[str, Price] | None = None) -> tuple[UsageCheck, ...]:
    """The checks asked for in ``limits`` (metric -> allowed increase; None: not checked)."""
    wanted = [(m, limit) for m, limit in limits.items() if limit is not None]
    if not wanted:
        return ()
    usages = unit_usages(store, [*candidate, *baseline], prices)
    cand = {u: usages.get(u) for u in candidate}
    base = {u: usages.get(u) for u in baseline}
    return tuple(compare_usage(m, cand, base, pairs, limit, alpha) for m, limit in wanted)
