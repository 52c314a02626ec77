"""Certification: when calibration activates an evaluator, and how many labels that takes.

**The rule (policy ``lower_bound``, the default).** An evaluator is *certified* (activated) when,
on the held-out test split, the lower bound of the ``confidence`` interval (default 95%, two-sided)
of *each required rate* reaches the evaluator's ``threshold`` (default 0.80). For a binary criterion
the required rates are TPR = P(judge pass | human pass) and TNR = P(judge fail | human fail): the
judge must recognise passes *and* fails. Each lower bound is a one-sided (1 + confidence) / 2 =
97.5% bound, so a judge whose true rate sits at the threshold clears it in about 2.5% of
calibrations; requiring every bound is an intersection-union test (Berger 1982, *Technometrics*
24:295-300), whose error stays at that of one bound however many rates are required. This is the
rule of awslabs' calibrated-agent-evaluation (certified when the 95% Wilson lower bounds of TPR and
TNR both reach 0.80); ``tests/test_calibration_certify.py`` measures it on simulated judges.

**Which interval: Wilson by default, Clopper-Pearson on request** (``[calibration] interval``).
The Wilson (1927) score interval is the default because (1) its coverage stays close to nominal
across rates and sizes, where the Clopper-Pearson (1934) "exact" interval is conservative
(coverage above nominal by construction, Brown, Cai & DasGupta 2001, *Stat Sci* 16:101-133), and
conservatism is paid in expert labels: a judge right on 90% of a class clears 0.80 from 74 test items
of that class on with Wilson, from 82 with Clopper-Pearson (a perfect judge: 16 and 17); (2) the
error that matters here, certifying a judge whose true rate is below the threshold, stays near the
2.5% it promises: computed exactly for 16 to 300 test items of a class, at a true rate of exactly
0.80 it is at most 2.9% (mean 2.1%; Clopper-Pearson at most 2.5%), at 0.78 at most 1.9%;
(3) assay's other proportion intervals (drift, pass-rate estimates) and awslabs' use it.
``exact`` is there for a team that needs the guarantee in writing (coverage never below nominal).

**The older rule (policy ``point``)**: test agreement at the threshold and Cohen's kappa above
``min_kappa``. Weaker: it looks at point estimates only, so a test split with one human fail, judged
right, passes it (agreement 1.0, kappa 1.0) although nothing is known about the judge's TNR.

**Other scales** (ordinal, categorical, pairwise). Calibration certifies them on the *binarised*
pass/fail: a human value and the evaluator's value each pass when their score on the scale reaches the
evaluator's ``pass_score``, and TPR and TNR of that table are bounded as above. That is what the gate
and the failure signals count, and it asks labels of two classes only; per-class bounds (each class's
recall) would need enough labels of every class, rare ones included, before any judge could be
certified. The scale's own agreement is reported beside the decision
(:mod:`assay.calibration.scales`). The decision reads a list of :class:`RequiredRate` (successes ``k``
of ``n`` on the test split), so a stricter rule for a scale plugs in by giving its own rates (for
example each class's recall, or within-one agreement), and :func:`certify` and :func:`plan_rate` work
on them unchanged.

**The plan** (:func:`plan_rate`, ``assay calibrate NAME --plan``) says how many more labels of each
class make every bound clear, at the current rates. See :func:`plan_rate` for the computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from assay.calibration.metrics import Confusion
from assay.calibration.splits import allocate
from assay.settings import CalibrationSettings
from assay.stats import cohen_kappa, min_successes_to_clear, proportion_bounds

PLAN_CAP = 20_000
"""The largest test-split size of one class a plan considers; beyond it a bound is called out of reach."""
PLAN_QUANTILE = 0.30
"""The plan assumes the rate at this quantile of its posterior: one the judge beats with 70% probability."""
_CHUNK = 1024


class RequiredRate(BaseModel):
    """One rate certification requires: ``k`` successes of ``n`` items (binary TPR: judge pass of human pass)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="e.g. TPR, TNR")
    of: str = Field(description="the human label class the rate is measured on, e.g. pass")
    k: int = Field(ge=0)
    n: int = Field(ge=0)


class RateBound(RequiredRate):
    """A required rate with its interval on the test split and whether its lower bound clears the threshold."""

    value: float | None = Field(description="k / n; None when n = 0")
    low: float | None = Field(description="lower bound of the interval; None when n = 0")
    high: float | None = Field(description="upper bound of the interval; None when n = 0")
    threshold: float
    clears: bool = Field(description="low >= threshold")


class Certification(BaseModel):
    """The activation decision of one calibration: the policy, each required rate's bound, and the verdict.

    ``bounds`` are computed under either policy (a ``point`` decision still shows them); ``notes``
    say in words what fell short.
    """

    model_config = ConfigDict(frozen=True)

    policy: str = Field(description="lower_bound or point")
    interval: str = Field(description="wilson or exact")
    confidence: float = Field(description="two-sided confidence of each interval")
    threshold: float
    bounds: tuple[RateBound, ...]
    certified: bool
    notes: tuple[str, ...] = ()


class RatePlan(BaseModel):
    """How many labels of one class a required rate's bound needs to clear (see :func:`plan_rate`).

    ``more`` is None when no size up to :data:`PLAN_CAP` gets there (``note`` says why).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    of: str
    rate: float | None = Field(description="the current rate on every scored labelled item of the class")
    scored: int = Field(description="scored labelled items of the class, all splits (the evidence of the rate)")
    labelled: int = Field(description="labelled items of the class now, all splits")
    test_now: int = Field(description="scored test items of the class now")
    clears_now: bool
    test_needed: int | None = Field(description="scored test items of the class the bound needs")
    labels_needed: int | None = Field(description="labelled items of the class that give that many test items")
    more: int | None = Field(description="labels of the class to add (0: enough)")
    planned_rate: float | None = Field(description="the rate the plan assumes (PLAN_QUANTILE of its posterior)")
    provisional: bool = Field(default=False, description="too few labels to plan on: ``more`` is a first step "
                                                         "(the floor any judge needs), then plan again")
    at_least: int = Field(description="labels of the class needed even by a judge right on every item")
    note: str = ""


class CalibrationPlan(BaseModel):
    """More labels per class for every required bound to clear (``assay calibrate NAME --plan``)."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    interval: str
    confidence: float
    power: float = Field(description="the chance aimed at that every bound clears at the planned rates")
    test_fraction: float = Field(description="share of each class's labels that goes to the test split")
    rates: tuple[RatePlan, ...]

    @property
    def more(self) -> dict[str, int | None]:
        """``{class: labels to add}`` (None: out of reach)."""
        return {r.of: r.more for r in self.rates}


def binary_rates(confusion: Confusion) -> list[RequiredRate]:
    """TPR (judge pass of human pass) and TNR (judge fail of human fail) of a binary confusion matrix."""
    c = confusion
    return [RequiredRate(name="TPR", of="pass", k=c.tp, n=c.tp + c.fn),
            RequiredRate(name="TNR", of="fail", k=c.tn, n=c.tn + c.fp)]


def bound(rate: RequiredRate, threshold: float, settings: CalibrationSettings) -> RateBound:
    """The interval of one required rate and whether its lower bound reaches ``threshold``."""
    if rate.n == 0:
        return RateBound(**rate.model_dump(), value=None, low=None, high=None, threshold=threshold, clears=False)
    low, high = proportion_bounds(np.array([rate.k]), np.array([rate.n]), settings.interval, settings.confidence)
    return RateBound(**rate.model_dump(), value=rate.k / rate.n, low=float(low[0]), high=float(high[0]),
                     threshold=threshold, clears=bool(low[0] >= threshold))


def certify(rates: Sequence[RequiredRate], threshold: float, settings: CalibrationSettings,
            agreement: float | None = None, kappa: float | None = None, min_kappa: float = 0.0) -> Certification:
    """Decide activation from the test split's required rates (module docstring).

    Args:
        rates: the required rates on the test split (binary: :func:`binary_rates`).
        threshold: the evaluator's threshold in [0, 1].
        settings: policy, interval and confidence.
        agreement, kappa: test-split agreement and Cohen's kappa (the ``point`` policy decides on them;
            under ``lower_bound`` a kappa given must still be above ``min_kappa``, which bounds that clear
            at a threshold above 0.5 imply for the default 0).
    """
    bounds = tuple(bound(r, threshold, settings) for r in rates)
    if settings.policy == "point":
        notes = _point_shortfalls(agreement, kappa, threshold, min_kappa)
    else:
        notes = [_bound_shortfall(b, settings) for b in bounds if not b.clears]
        if not notes and kappa is not None and kappa <= min_kappa:
            notes.append(_kappa_note(kappa, min_kappa))
    return Certification(policy=settings.policy, interval=settings.interval, confidence=settings.confidence,
                         threshold=threshold, bounds=bounds, certified=not notes, notes=tuple(notes))


def certify_binary(confusion: Confusion, threshold: float, settings: CalibrationSettings,
                   min_kappa: float = 0.0) -> Certification:
    """:func:`certify` of a binary test split: TPR and TNR required, agreement and Cohen's kappa from the same table."""
    c = confusion
    n = c.tp + c.fn + c.fp + c.tn
    kappa = cohen_kappa(["pass"] * (c.tp + c.fn) + ["fail"] * (c.fp + c.tn),
                        ["pass"] * c.tp + ["fail"] * c.fn + ["pass"] * c.fp + ["fail"] * c.tn)
    return certify(binary_rates(c), threshold, settings, (c.tp + c.tn) / n if n else None, kappa, min_kappa)


def interval_name(settings: CalibrationSettings) -> str:
    """``95% Wilson`` / ``95% Clopper-Pearson``: the interval, for people."""
    return f"{settings.confidence:.0%} {'Wilson' if settings.interval == 'wilson' else 'Clopper-Pearson'}"


def _bound_shortfall(b: RateBound, settings: CalibrationSettings) -> str:
    if b.n == 0 or b.low is None:
        return f"{b.name} cannot be bounded: no human-{b.of} item of the test split was scored"
    return (f"{b.name} {b.value:.3f} ({b.k} of {b.n} human-{b.of} items): its {interval_name(settings)} lower "
            f"bound {b.low:.3f} is below the threshold {b.threshold:.2f}")


def _kappa_note(kappa: float | None, min_kappa: float) -> str:
    if kappa is None:
        return "Cohen's kappa is undefined (one class only): agreement cannot be told from chance"
    return f"Cohen's kappa {kappa:.3f} is at or below {min_kappa:.2f}: no better than chance"


def _point_shortfalls(acc: float | None, kappa: float | None, threshold: float, min_kappa: float) -> list[str]:
    """The older rule: test agreement at the threshold and kappa above ``min_kappa``."""
    if acc is None:
        return ["no labelled unit of the test split could be scored"]
    notes = [f"test agreement {acc:.3f} is below the threshold {threshold:.2f}"] if acc < threshold else []
    if kappa is None or kappa <= min_kappa:
        notes.append(_kappa_note(kappa, min_kappa))
    return notes


# --- the plan ---------------------------------------------------------------------------------
def plan_rate(test: RequiredRate, scored: RequiredRate, labelled: int, threshold: float,
              settings: CalibrationSettings, fractions: tuple[float, float, float], power: float) -> RatePlan:
    """How many labels of ``test.of`` the bound of one required rate needs to clear, at the current rate.

    The computation:

    1. With ``N`` scored test items of the class, the bound clears exactly when the judge is right on at
       least ``k_min(N)`` of them (:func:`assay.stats.min_successes_to_clear`; Wilson:
       ``k_min = ceil(N t + z sqrt(N t (1 - t)))``).
    2. For a true rate ``p`` the chance of that is the power ``P(Bin(N, p) >= k_min(N))``.
    3. The current rate is taken from the judge being right on ``k`` of the ``n`` scored labelled items of
       the class (``scored``: every split, the most evidence there is; a judge tuned on train/dev looks a
       little better there than it is), read conservatively: the plan assumes the rate
       ``p* = q_{0.3}`` of its Jeffreys posterior ``Beta(k + 1/2, n - k + 1/2)``, a rate the judge beats with
       70% probability given the labels so far (:data:`PLAN_QUANTILE`). Planned at the point estimate
       ``k / n`` instead, a plan made after a small first sample cleared in as few as 80% of simulated
       collections (a lucky sample promises too much); at ``p*`` in at least 90%
       (``tests/test_calibration_certify.py``).
    4. ``test_needed`` is the smallest ``N`` whose power at ``p*`` reaches ``power`` (also at ``N + 1``: power
       saw-tooths with ``N``); ``labels_needed`` the fewest labels of the class whose test share
       (``fractions``, stratified as :func:`~assay.calibration.splits.split_dataset` cuts it), scaled by the
       share of the class's labels the judge scored, gives ``test_needed``; ``more`` what is missing.
    5. ``at_least`` is the floor any judge needs: the labels giving the smallest ``N`` with ``k_min(N) <= N``
       (16 test items at 0.80 with Wilson, 52 labels at a 30% test share). With no scored label of the
       class, or a point estimate above the threshold whose ``p*`` is not (a handful of labels), the plan
       is *provisional*: label up to ``at_least``, then plan again.
    6. Out of reach (``more`` None) when the rate itself is at or below the threshold, or no ``N`` up to
       :data:`PLAN_CAP` gets there: more labels would mostly confirm a rate too close to the threshold;
       the evaluator needs to improve.

    Args:
        test: the rate on the test split now (``clears_now`` is decided on it).
        scored: the rate on every scored labelled item of the class.
        labelled: labelled items of the class now (all splits, scored or not).
        power: the chance aimed at that this rate's bound clears, in (0, 1).
    """
    clears_now = bound(test, threshold, settings).clears if test.n else False
    share = scored.n / labelled if labelled and scored.n else 1.0
    at_least = _labels_for(_first_clearing_size(threshold, settings), fractions, 1.0)
    p_plan = float(stats.beta.ppf(PLAN_QUANTILE, scored.k + 0.5, scored.n - scored.k + 0.5)) if scored.n else None
    rate = scored.k / scored.n if scored.n else None
    base: dict[str, Any] = {"name": test.name, "of": test.of, "rate": rate, "scored": scored.n,
            "labelled": labelled, "test_now": test.n, "clears_now": clears_now, "at_least": at_least,
            "planned_rate": p_plan}
    if clears_now:
        return RatePlan(**base, test_needed=test.n, labels_needed=labelled, more=0, note="clears now")
    if rate is None or (p_plan is not None and p_plan <= threshold < rate):
        # too little evidence to plan on: the first step is the floor any judge needs
        return RatePlan(**base, test_needed=_first_clearing_size(threshold, settings), labels_needed=at_least,
                        more=max(0, at_least - labelled), provisional=True,
                        note=_first_step(test.of, scored, threshold, at_least))
    needed = None if p_plan is None or p_plan <= threshold else _test_size(p_plan, threshold, settings, power)
    if needed is None:
        return RatePlan(**base, test_needed=None, labels_needed=None, more=None,
                        note=_out_of_reach(scored, threshold, labelled))
    labels = _labels_for(needed, fractions, share)
    notes = [] if labels > labelled else ["enough labels at the current rate: the test split fell short by chance; "
                                          "a fresh split (new labels) settles it"]
    if share < 1.0:
        notes.append(f"the judge scored {scored.n} of the {labelled} labelled {test.of} items (the others were not "
                     f"applicable, unscored or errors), so the labels needed are scaled up by 1/{share:.2f}")
    return RatePlan(**base, test_needed=needed, labels_needed=labels, more=max(0, labels - labelled),
                    note="; ".join(notes))


def plan_rates(test_rates: Sequence[RequiredRate], scored_rates: Sequence[RequiredRate], labelled: dict[str, int],
               threshold: float, settings: CalibrationSettings,
               fractions: tuple[float, float, float]) -> CalibrationPlan:
    """:func:`plan_rate` for every required rate, each at power ``plan_power ** (1 / m)`` (``m`` the rates that
    do not clear now), so that all of them clear together with about ``settings.plan_power``.

    Args:
        test_rates, scored_rates: the same required rates on the test split and on all scored items, in order.
        labelled: labelled items per class now (all splits).
    """
    open_ = sum(1 for t in test_rates if not (t.n and bound(t, threshold, settings).clears))
    per_rate = settings.plan_power ** (1.0 / max(open_, 1))
    plans = tuple(plan_rate(t, s, labelled.get(t.of, 0), threshold, settings, fractions, per_rate)
                  for t, s in zip(test_rates, scored_rates, strict=True))
    return CalibrationPlan(threshold=threshold, interval=settings.interval, confidence=settings.confidence,
                           power=settings.plan_power, test_fraction=fractions[2], rates=plans)


def clearing_power(p: float, sizes: np.ndarray, threshold: float, settings: CalibrationSettings) -> np.ndarray:
    """``P(Bin(N, p) >= k_min(N))`` for each test size ``N`` in ``sizes``: the chance the lower bound clears
    ``threshold`` when the true rate is ``p`` (:func:`plan_rate`, steps 1-2)."""
    k_min = min_successes_to_clear(sizes, threshold, settings.interval, settings.confidence)
    return np.asarray(stats.binom.sf(k_min - 1, sizes, p))


def _test_size(p: float, threshold: float, settings: CalibrationSettings, power: float) -> int | None:
    """Smallest test size whose clearing power at ``p`` reaches ``power`` (at it and the next size)."""
    for start in range(1, PLAN_CAP + 1, _CHUNK):
        sizes = np.arange(start, min(start + _CHUNK + 1, PLAN_CAP + 2))
        a = clearing_power(p, sizes, threshold, settings)
        ok = (a[:-1] >= power) & (a[1:] >= power)
        if ok.any():
            return int(sizes[int(np.argmax(ok))])
    return None


def _first_clearing_size(threshold: float, settings: CalibrationSettings) -> int:
    """The smallest test size at which a judge right on every item clears ``threshold``."""
    sizes = np.arange(1, PLAN_CAP + 1)
    ok = min_successes_to_clear(sizes, threshold, settings.interval, settings.confidence) <= sizes
    return int(sizes[np.argmax(ok)]) if ok.any() else PLAN_CAP


def _labels_for(test_needed: int, fractions: tuple[float, float, float], share: float) -> int:
    """Fewest labels of a class whose stratified test allocation, times the scored ``share``, is ``test_needed``."""
    guess = max(1, int(test_needed / max(fractions[2] * share, 1e-9)) - 2)
    while allocate(guess, fractions)[2] * share < test_needed:
        guess += 1
    while guess > 1 and allocate(guess - 1, fractions)[2] * share >= test_needed:
        guess -= 1
    return guess


def _first_step(of: str, scored: RequiredRate, threshold: float, at_least: int) -> str:
    if scored.n == 0:
        return (f"no human-{of} label is scored yet, so the rate is unknown: label at least {at_least} in all "
                f"(a judge right on every one just clears {threshold:.2f}), then plan again")
    return (f"only {scored.n} scored human-{of} label{'s' if scored.n != 1 else ''} ({scored.k} right): too few to "
            f"plan on; label at least {at_least} in all (a judge right on every one just clears "
            f"{threshold:.2f}), then plan again")


def _out_of_reach(scored: RequiredRate, threshold: float, labelled: int) -> str:
    below = float(stats.beta.cdf(threshold, scored.k + 0.5, scored.n - scored.k + 0.5))
    return (f"at the current rate {scored.k / scored.n:.3f} ({scored.k} of {scored.n}) no number of labels can be "
            f"planned to clear {threshold:.2f}: given the labels so far the rate is at or below it with probability "
            f"{below:.0%}. Improve the evaluator (more labels of the class, now {labelled}, would mostly confirm it)")
