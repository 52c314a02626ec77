"""The lifecycle of a failure signature: where it stands in the loop, and every change, kept.

States, in the order the loop moves a signature through them::

    new -> escalating -> criterion_written -> monitored -> resolved -> regressed
                                                  ^            |  ^          |
                                                  +------------+  +----------+

:func:`update_lifecycle` evaluates every live signature (not retired) at a time ``now``, with ``W`` =
``[lifecycle] window_days``, and applies the first rule that holds:

1. **Covered by an active evaluator** (an evaluator of status ``active`` whose criterion is a criterion
   written for the signature, ``criteria.signature_id``). Its *production fail rate* is the share of
   ``fail`` verdicts among the scored results of its active version(s) in the runs of ``[drift]
   run_kinds`` (online, backfill) created in ``(now - W, now]``, on units of production (``[environments]
   production``; another environment, or every unit, with ``env``); with several covering evaluators, the
   highest rate among those with at least ``min_scored`` results counts.

   * no evaluator has ``min_scored`` results in the window: a ``resolved`` or ``regressed`` signature
     keeps its state, any other becomes **monitored**;
   * the fail rate is below ``resolve_fail_rate``: **resolved** ("back under the threshold");
   * a ``resolved`` (or ``regressed``) signature whose fail rate's 95% Wilson interval lies wholly above
     ``resolve_fail_rate``: **regressed** ("it rises again"); between the two (at or above the threshold,
     but the interval reaching below it) it keeps its state, so one noisy window does not flip it;
   * otherwise **monitored** (covered, not under the threshold).
2. **A criterion is written** for it but no active evaluator covers one: **criterion_written**.
3. **Escalating**: no criterion yet, the signature was created at least ``W`` ago, at least
   ``escalate_min_units`` of its members were seen in ``(now - W, now]`` (``r``) and that is
   significantly more than in ``(now - 2W, now - W]`` (``b``): the one-sided exact conditional test of
   two Poisson counts with equal exposure, ``P(X >= r)`` for ``X ~ Binomial(r + b, 1/2)``, below
   ``escalate_alpha`` (Przyborowski and Wilenski 1940). A member's time is its unit's time (the latest
   span end, else when it was ingested); members outside the environment do not count.
4. Otherwise **new** (no criterion yet and not escalating; an escalating signature whose rise stopped
   is new again).

Every change is a row of ``signature_lifecycle`` (from, to, the reason in words, the facts that
decided it, when); the first evaluation of a signature is a change from nothing. The state is kept on
the signature (``signatures.lifecycle``). Changes into ``[drift] lifecycle_alerts`` (default
escalating, regressed) are drift alerts (:mod:`assay.suite.drift`), sent with the webhook.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.environments import env_condition
from assay._store.tables import (
    CriterionRow,
    EvaluatorRow,
    LifecycleRow,
    MemberRow,
    RunRow,
    ScoreRow,
    SignatureRow,
    UnitRow,
)
from assay.settings import EnvScope, LifecycleSettings, Settings
from assay.signatures.impact import aware
from assay.signatures.model import Lifecycle
from assay.stats import wilson_interval

LIFECYCLE_STATES: tuple[Lifecycle, ...] = ("new", "escalating", "criterion_written", "monitored", "resolved",
                                           "regressed")


class FailRate(BaseModel):
    """One evaluator's production fail rate in the window, with its 95% Wilson interval."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    failed: int = Field(ge=0)
    scored: int = Field(ge=1)
    rate: float = Field(ge=0, le=1)
    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)


@dataclass(frozen=True)
class Facts:
    """What the rules read of one signature at one time (see module docstring)."""

    recent: int = 0
    before: int = 0
    old_enough: bool = False
    criteria: tuple[str, ...] = ()
    evaluators: tuple[str, ...] = ()
    fail: FailRate | None = None
    growth_p: float | None = field(default=None)

    def details(self) -> dict[str, Any]:
        """The facts as stored with a change (JSON)."""
        return {"members_recent": self.recent, "members_before": self.before, "growth_p": self.growth_p,
                "criteria": list(self.criteria), "evaluators": list(self.evaluators),
                "fail_rate": self.fail.model_dump() if self.fail else None}


class LifecycleChange(BaseModel):
    """One change of a signature's lifecycle (a ``signature_lifecycle`` row)."""

    model_config = ConfigDict(frozen=True)

    signature_id: int
    label: str = Field(description="the signature's label (now)")
    from_state: Lifecycle | None = Field(description="None at the signature's first evaluation")
    to_state: Lifecycle
    reason: str = Field(description="why, in words, with the numbers")
    details: dict[str, Any] = Field(default_factory=dict, description="the facts that decided it")
    at: datetime


def growth_p(recent: int, before: int) -> float:
    """One-sided p-value that ``recent`` members in a window are more than ``before`` in the window before,
    equal exposure: ``P(X >= recent)``, ``X ~ Binomial(recent + before, 1/2)`` (1.0 for no members)."""
    n = recent + before
    return 1.0 if n == 0 else float(stats.binomtest(recent, n, 0.5, alternative="greater").pvalue)


def fail_rate(evaluator: str, failed: int, scored: int) -> FailRate:
    """``failed / scored`` with its 95% Wilson interval."""
    low, high = wilson_interval(failed, scored)
    return FailRate(evaluator=evaluator, failed=failed, scored=scored, rate=failed / scored, low=low, high=high)


def _covered(current: Lifecycle | None, facts: Facts, cfg: LifecycleSettings) -> tuple[Lifecycle, str]:
    """Rule 1 of the module docstring (an active evaluator covers the signature)."""
    names = ", ".join(facts.evaluators)
    held = current in ("resolved", "regressed")
    r = facts.fail
    if r is None:
        why = f"fewer than {cfg.min_scored} production scores of {names} in the last {cfg.window_days:g} days"
        return (current, f"kept: {why}") if held and current else ("monitored", f"active evaluator {names}; {why}")
    rate = f"{r.evaluator} fails {r.failed} of {r.scored} production scores ({r.rate:.1%}, 95% CI " \
           f"{r.low:.1%}-{r.high:.1%}) in the last {cfg.window_days:g} days"
    if r.rate < cfg.resolve_fail_rate:
        return "resolved", f"{rate}: under the threshold {cfg.resolve_fail_rate:.1%}"
    if held and r.low > cfg.resolve_fail_rate:
        return "regressed", f"{rate}: above the threshold {cfg.resolve_fail_rate:.1%} again"
    if held and current:
        return current, f"kept: {rate}, not clearly above the threshold {cfg.resolve_fail_rate:.1%}"
    return "monitored", f"{rate}: not under the threshold {cfg.resolve_fail_rate:.1%}"


def decide(current: Lifecycle | None, facts: Facts, cfg: LifecycleSettings) -> tuple[Lifecycle, str]:
    """The state the rules of the module docstring give a signature now in ``current`` (None: never
    evaluated), and the reason in words."""
    if facts.evaluators:
        return _covered(current, facts, cfg)
    if facts.criteria:
        return "criterion_written", f"criterion {', '.join(facts.criteria)} written; no active evaluator covers it"
    p = facts.growth_p if facts.growth_p is not None else growth_p(facts.recent, facts.before)
    if facts.old_enough and facts.recent >= cfg.escalate_min_units and p < cfg.escalate_alpha:
        return "escalating", (f"{facts.recent} members in the last {cfg.window_days:g} days vs {facts.before} in the "
                              f"{cfg.window_days:g} days before (one-sided exact test p={p:.2g})")
    return "new", "no criterion yet" + ("; members not rising" if current == "escalating" else "")


# --- facts from the store ---------------------------------------------------------------------
def _criteria(s: OrmSession) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for sid, name in s.execute(select(CriterionRow.signature_id, CriterionRow.name).order_by(CriterionRow.id)):
        if sid is not None:
            out[sid].append(name)
    return out


def _active(s: OrmSession) -> dict[str, dict[str, set[str]]]:
    """``{criterion name: {evaluator name: active versions}}``."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, version, definition in s.execute(select(EvaluatorRow.name, EvaluatorRow.version, EvaluatorRow.definition)
                                               .where(EvaluatorRow.status == "active")):
        criterion = ((definition or {}).get("criterion") or {}).get("name")
        if criterion:
            out[criterion][name].add(version)
    return out


def _verdicts(s: OrmSession, run_kinds: Sequence[str], since: datetime, until: datetime,
              scope: EnvScope | None) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(evaluator, version): (failed, scored)}`` of production scores created in ``(since, until]``, on
    units in ``scope`` (None: any environment)."""
    q = (select(ScoreRow.evaluator_name, ScoreRow.evaluator_version, ScoreRow.verdict, func.count())
         .join(RunRow, RunRow.run_id == ScoreRow.run_id).join(UnitRow, UnitRow.unit_id == ScoreRow.unit_id)
         .where(RunRow.kind.in_(list(run_kinds)), ScoreRow.status == "scored", ScoreRow.created_at > _naive(since),
                ScoreRow.created_at <= _naive(until), env_condition(scope))
         .group_by(ScoreRow.evaluator_name, ScoreRow.evaluator_version, ScoreRow.verdict))
    out: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
    for name, version, verdict, n in s.execute(q):
        failed, scored = out[(name, version)]
        out[(name, version)] = (failed + (n if verdict == "fail" else 0), scored + n)
    return out


def _naive(value: datetime) -> datetime:
    """UTC wall time without tzinfo, as the store keeps times."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _worst(evaluators: dict[str, set[str]], verdicts: dict[tuple[str, str], tuple[int, int]],
           min_scored: int) -> FailRate | None:
    rates = []
    for name, versions in sorted(evaluators.items()):
        failed = sum(verdicts.get((name, v), (0, 0))[0] for v in versions)
        scored = sum(verdicts.get((name, v), (0, 0))[1] for v in versions)
        if scored >= min_scored:
            rates.append(fail_rate(name, failed, scored))
    return max(rates, key=lambda r: (r.rate, r.scored), default=None)


def _counts(s: OrmSession, now: datetime, window: timedelta, scope: EnvScope | None) -> dict[int, tuple[int, int]]:
    """``{signature id: (members seen in the latest window, in the window before)}``, members of units in
    ``scope`` (None: any environment)."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for sid, seen in s.execute(select(MemberRow.signature_id, MemberRow.seen_at)
                               .join(UnitRow, UnitRow.unit_id == MemberRow.unit_id)
                               .where(MemberRow.signature_id.is_not(None), MemberRow.seen_at.is_not(None),
                                      env_condition(scope))):
        at = aware(seen)
        if sid is None or at is None:
            continue
        if now - window < at <= now:
            out[sid][0] += 1
        elif now - 2 * window < at <= now - window:
            out[sid][1] += 1
    return {sid: (c[0], c[1]) for sid, c in out.items()}


def signature_facts(store: Store, settings: Settings, now: datetime, env: str | None = None) -> dict[int, Facts]:
    """The facts of every live signature at ``now`` (see module docstring), from the units of ``env``
    (None: ``[environments] production``; ``all``: every unit)."""
    cfg = settings.lifecycle
    window = timedelta(days=cfg.window_days)
    scope = store.env_scope(env)
    with store.session() as s:
        rows = list(s.execute(select(SignatureRow.id, SignatureRow.created_at).where(SignatureRow.status != "retired")))
        criteria, active, counts = _criteria(s), _active(s), _counts(s, now, window, scope)
        verdicts = _verdicts(s, settings.drift.run_kinds, now - window, now, scope)
    out: dict[int, Facts] = {}
    for sid, created in rows:
        names = criteria.get(sid, [])
        covering: dict[str, set[str]] = {}
        for name in names:
            for evaluator, versions in active.get(name, {}).items():
                covering.setdefault(evaluator, set()).update(versions)
        recent, before = counts.get(sid, (0, 0))
        created_at = aware(created)
        out[sid] = Facts(recent=recent, before=before, growth_p=growth_p(recent, before),
                         old_enough=created_at is not None and created_at <= now - window,
                         criteria=tuple(names), evaluators=tuple(sorted(covering)),
                         fail=_worst(covering, verdicts, cfg.min_scored) if covering else None)
    return out


# --- updating and reading ---------------------------------------------------------------------
def update_lifecycle(store: Store, settings: Settings, now: datetime | None = None,
                     env: str | None = None) -> list[LifecycleChange]:
    """Evaluate every live signature's lifecycle at ``now`` (default: the wall clock, UTC) and record what
    changed (see module docstring).

    Args:
        store: the store (reads signatures, members, criteria, evaluators, production scores; writes the
            state and the ``signature_lifecycle`` history).
        settings: ``[lifecycle]`` (window, thresholds) and ``[drift] run_kinds`` (what counts as production).
        now: the time of the evaluation.
        env: the environment whose members and scores count (None: ``[environments] production``;
            ``all``: every unit), so evaluation runs never move a production signature's state.

    Returns:
        the changes, by signature id; a signature's first evaluation is a change from None.
    """
    now = aware(now) or datetime.now(UTC)
    facts = signature_facts(store, settings, now, env)
    changes: list[LifecycleChange] = []
    with store.session() as s:
        for row in s.scalars(select(SignatureRow).where(SignatureRow.id.in_(list(facts))).order_by(SignatureRow.id)):
            current: Lifecycle | None = row.lifecycle if row.lifecycle_at is not None else None  # type: ignore[assignment]
            state, reason = decide(current, facts[row.id], settings.lifecycle)
            if state == current:
                continue
            details = facts[row.id].details()
            s.add(LifecycleRow(signature_id=row.id, from_state=current, to_state=state, reason=reason,
                               details=details, at=_naive(now)))
            row.lifecycle, row.lifecycle_at = state, _naive(now)
            changes.append(LifecycleChange(signature_id=row.id, label=row.label, from_state=current, to_state=state,
                                           reason=reason, details=details, at=now))
    return changes


def lifecycle_history(store: Store, signature_id: int | None = None, since: datetime | None = None,
                      until: datetime | None = None) -> list[LifecycleChange]:
    """Recorded lifecycle changes, oldest first: of one signature (None: all), in ``[since, until]``."""
    q = select(LifecycleRow, SignatureRow.label).join(SignatureRow, SignatureRow.id == LifecycleRow.signature_id)
    if signature_id is not None:
        q = q.where(LifecycleRow.signature_id == signature_id)
    if since is not None:
        q = q.where(LifecycleRow.at >= _naive(aware(since) or since))
    if until is not None:
        q = q.where(LifecycleRow.at <= _naive(aware(until) or until))
    with store.session() as s:
        return [LifecycleChange(signature_id=r.signature_id, label=label, from_state=r.from_state,
                                to_state=r.to_state, reason=r.reason, details=r.details or {},
                                at=aware(r.at) or r.at)
                for r, label in s.execute(q.order_by(LifecycleRow.at, LifecycleRow.id))]
