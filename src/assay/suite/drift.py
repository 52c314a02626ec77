"""Drift: are production scores, or the judges themselves, changing over time?

Three checks over the scores of production runs (run kinds ``[drift] run_kinds``, default
``online`` and ``backfill``) of the units of production (``[environments] production``; another
environment, or every unit, with ``env``), per evaluator (by name, across versions):

* **Scores.** Per window (a UTC day, or an ISO week starting Monday): scored units, pass
  rate, score mean and quantiles; unscored units (``unscored``, ``error``,
  ``not_applicable``) are counted beside, never as pass or fail. Each window is tested
  against the previous window that has scores: the pass rate with a two-sided pooled
  two-proportion z-test (Fisher's exact test when an expected cell count is below 5), the
  score distribution with a two-sided Mann–Whitney U test (Mann & Whitney 1947; skipped
  when scores take at most two values, which the pass-rate test already covers). Windows
  with fewer than ``min_n`` scored units are not tested.
* **Judges.** Judge verdict vs the human label (same criterion) of the same unit, per
  window of the label's time: agreement with a Wilson 95% interval. The labelled judge-audit
  pairs (:func:`assay.suite.audit.audit_pairs`, a random sample of online scores) are used
  when the evaluator has any, else every human label of a unit it scored (adjudicated label
  first, else the latest; paired with the latest verdict). Agreement below the evaluator's activation
  threshold (``threshold`` of its definition) in a window of at least ``min_audit_pairs``
  pairs is the sign it needs recalibration.
* **New failures.** Failure signatures created during the last day or week, with their volume.
* **Signature lifecycle.** The lifecycle changes recorded in the latest window
  (:mod:`assay.signatures.lifecycle`); a change into one of ``[drift] lifecycle_alerts`` (default
  escalating, regressed) is an alert.

Alerts (a ``logging`` warning each, and one JSON POST to ``[drift] webhook_url`` when set)
fire for the *latest* window of each series only, so a periodic ``assay drift`` does not
repeat old news; earlier significant changes are marked in the report. Each test runs at
``alpha`` without a multiple-testing correction: with E evaluators, about ``2 * E * alpha``
false alerts per run are expected on a stable system.

The report also carries, for the latest window, the raw judge pass rate next to the
Rogan–Gladen and prediction-powered estimates (:mod:`assay.calibration.estimates`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from sqlalchemy import select

from assay._store import Store
from assay._store import tables as t
from assay._store.environments import env_condition
from assay.annotations.agreement import ADJUDICATION_SOURCE
from assay.calibration.calibrate import CalibrationReport, read_calibration
from assay.calibration.estimates import PassRateEstimates, confusion_counts, pass_rate_estimates
from assay.exceptions import UsageError
from assay.settings import ALL_ENVIRONMENTS, DriftSettings, EnvScope
from assay.settings.run_kinds import PRODUCTION_RUN_KINDS
from assay.signatures.lifecycle import LifecycleChange, lifecycle_history
from assay.stats import wilson_interval

log = logging.getLogger("assay.drift")

Window = Literal["day", "week"]
AlertKind = Literal["pass_rate", "score_distribution", "judge_agreement", "signature_lifecycle"]
DEFAULT_PERIODS = {"day": 30, "week": 12}
"""Windows looked back over by default."""
EXIT_CODES = {0: "no alert", 1: "at least one drift alert fired", 2: "usage or configuration error"}


class Change(BaseModel):
    """A test of one window against the previous one."""

    model_config = ConfigDict(frozen=True)

    test: Literal["two-proportion z", "fisher exact", "mann-whitney u"]
    p_value: float = Field(ge=0, le=1)
    delta: float = Field(description="this window minus the previous: pass rate, or mean score")
    low: float | None = Field(default=None, description="95% Wald CI of the pass-rate difference")
    high: float | None = None
    significant: bool = Field(description="p_value < alpha")


class WindowStats(BaseModel):
    """One evaluator's production scores in one window ``[start, end)`` (UTC dates)."""

    model_config = ConfigDict(frozen=True)

    start: date
    end: date
    n_scored: int
    n_unscored: int = Field(description="unscored, error and not-applicable results: neither pass nor fail")
    n_pass: int
    pass_rate: float | None = Field(description="n_pass / n_scored in [0, 1]; None without scored units")
    score_mean: float | None
    score_p10: float | None = None
    score_median: float | None = None
    score_p90: float | None = None
    versions: tuple[str, ...] = Field(default=(), description="evaluator versions behind the scored units")
    previous: date | None = Field(default=None, description="start of the window tested against")
    pass_rate_change: Change | None = None
    score_change: Change | None = None
    note: str = ""


class AgreementWindow(BaseModel):
    """Judge-human agreement on the units labelled in one window."""

    model_config = ConfigDict(frozen=True)

    start: date
    end: date
    n_pairs: int
    n_agree: int
    agreement: float | None = Field(description="n_agree / n_pairs in [0, 1]")
    low: float | None = Field(default=None, description="Wilson 95% interval")
    high: float | None = None
    below_threshold: bool = False


class EvaluatorDrift(BaseModel):
    """All drift series of one evaluator."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    criterion: str | None
    threshold: float | None = Field(description="activation threshold on judge-human agreement")
    windows: tuple[WindowStats, ...]
    agreement: tuple[AgreementWindow, ...]
    audit_source: Literal["audit_items", "all_labels", "none"] = "none"
    estimates: PassRateEstimates | None = Field(default=None, description="raw vs corrected pass rate, latest window")
    estimates_window: date | None = None


class NewSignature(BaseModel):
    """A failure signature created in the reporting period."""

    model_config = ConfigDict(frozen=True)

    id: int
    label: str
    structural_key: str
    size: int = Field(description="units in the signature (its volume)")
    status: str
    created_at: datetime


class DriftAlert(BaseModel):
    """One significant change (or judge agreement below threshold) in a latest window."""

    model_config = ConfigDict(frozen=True)

    kind: AlertKind
    evaluator: str = Field("", description="the evaluator ('' for a signature's lifecycle without one)")
    signature_id: int | None = Field(default=None, description="the signature (signature_lifecycle alerts)")
    window_start: date
    message: str
    value: float | None = None
    previous: float | None = None
    p_value: float | None = None


class DriftReport(BaseModel):
    """Everything ``assay drift`` reports; ``exit_code`` is 1 when an alert fired, else 0."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    window: Window
    generated_at: datetime
    since: datetime
    alpha: float
    environment: str = Field(default="production", description="the environment whose scores were read ('all': "
                             "every environment)")
    run_kinds: tuple[str, ...] = Field(default=tuple(k.value for k in PRODUCTION_RUN_KINDS),
                                       description="the run kinds read")
    evaluators: tuple[EvaluatorDrift, ...]
    new_signatures: tuple[NewSignature, ...]
    alerts: tuple[DriftAlert, ...]
    lifecycle: tuple[LifecycleChange, ...] = Field(default=(), description="signature lifecycle changes recorded "
                                                   "in the latest window, oldest first")

    @property
    def exit_code(self) -> int:
        return 1 if self.alerts else 0


@dataclass(frozen=True)
class _Score:
    unit_id: str
    version: str
    status: str
    score: float | None
    passed: bool | None
    at: datetime


def _naive(value: datetime) -> datetime:
    """The UTC wall time without tzinfo, as stored."""
    return _aware(value).astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def window_start(moment: datetime | date, window: Window) -> date:
    """The UTC day, or the Monday of the ISO week, that contains ``moment``."""
    day = _aware(moment).astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return day if window == "day" else day - timedelta(days=day.weekday())


def _length(window: Window) -> timedelta:
    return timedelta(days=1 if window == "day" else 7)


# --- tests ------------------------------------------------------------------------------------
def two_proportion_test(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> Change:
    """Two-sided test of pass rate ``k2/n2`` (this window) against ``k1/n1`` (previous).

    Pooled two-proportion z-test; Fisher's exact test (scipy) when an expected cell count is
    below 5. ``delta`` = ``k2/n2 - k1/n1`` with an unpooled Wald 95% CI.

    Raises:
        ValueError: a window without units, or counts out of range.
    """
    if n1 <= 0 or n2 <= 0 or not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"bad counts for a two-proportion test: {k1}/{n1} vs {k2}/{n2}")
    p1, p2, pooled = k1 / n1, k2 / n2, (k1 + k2) / (n1 + n2)
    se_diff = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = float(stats.norm.ppf(0.975)) * se_diff
    expected = [n * share for n in (n1, n2) for share in (pooled, 1 - pooled)]
    if min(expected) < 5:
        p = float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
        test: Literal["two-proportion z", "fisher exact"] = "fisher exact"
    else:
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(p2 - p1) / se))
        test = "two-proportion z"
    p = min(1.0, max(0.0, p))
    return Change(test=test, p_value=p, delta=p2 - p1, low=p2 - p1 - half, high=p2 - p1 + half,
                  significant=p < alpha)


def distribution_test(previous: Sequence[float], current: Sequence[float], alpha: float = 0.05) -> Change:
    """Two-sided Mann–Whitney U test of two score samples; ``delta`` = difference of means.

    Raises:
        ValueError: an empty sample.
    """
    if not previous or not current:
        raise ValueError("both samples need at least one score")
    if len(set(previous) | set(current)) == 1:
        p = 1.0
    else:
        p = float(stats.mannwhitneyu(current, previous, alternative="two-sided").pvalue)
    return Change(test="mann-whitney u", p_value=p, delta=float(np.mean(current) - np.mean(previous)),
                  significant=p < alpha)


# --- loading ----------------------------------------------------------------------------------
def _scores(store: Store, run_kinds: Sequence[str], since: datetime, until: datetime,
            scope: EnvScope | None = None) -> dict[str, list[_Score]]:
    """Production score rows in ``[since, until]`` of units in ``scope`` (None: any environment), per
    evaluator name, in time order."""
    sr = t.ScoreRow
    q = (select(sr.evaluator_name, sr.unit_id, sr.evaluator_version, sr.status, sr.score, sr.verdict, sr.created_at)
         .join(t.RunRow, t.RunRow.run_id == sr.run_id).join(t.UnitRow, t.UnitRow.unit_id == sr.unit_id)
         .where(t.RunRow.kind.in_(list(run_kinds)), sr.created_at >= _naive(since), sr.created_at <= _naive(until),
                env_condition(scope))
         .order_by(sr.created_at, sr.id))
    out: dict[str, list[_Score]] = defaultdict(list)
    with store.session() as s:
        for name, unit, version, status, score, verdict, at in s.execute(q):
            out[name].append(_Score(unit_id=unit, version=version, status=status, score=score,
                                    passed=None if status != "scored" else verdict == "pass", at=_aware(at)))
    return dict(out)


@dataclass(frozen=True)
class _Evaluator:
    criterion: str | None
    threshold: float | None
    calibrations: dict[str, CalibrationReport | None]


def _evaluator_info(store: Store) -> dict[str, _Evaluator]:
    """Per evaluator name: criterion and threshold of its newest version, and calibrations by version."""
    out: dict[str, _Evaluator] = {}
    with store.session() as s:
        for row in s.scalars(select(t.EvaluatorRow).order_by(t.EvaluatorRow.created_at)):
            defn = row.definition or {}
            cals = {**(out[row.name].calibrations if row.name in out else {}),
                    row.version: read_calibration(row.calibration)}
            threshold = defn.get("threshold")
            out[row.name] = _Evaluator(criterion=(defn.get("criterion") or {}).get("name"),
                                       threshold=float(threshold) if threshold is not None else None,
                                       calibrations=cals)
    return out


def human_labels(store: Store, criterion: str) -> dict[str, tuple[bool, datetime]]:
    """The human label that counts per unit on ``criterion`` (any version), as the audit does:
    an adjudicated one wins, else the latest. Unit id -> (passed, labelled at)."""
    q = (select(t.AnnotationRow.unit_id, t.AnnotationRow.label, t.AnnotationRow.created_at, t.AnnotationRow.source)
         .join(t.CriterionRow, t.CriterionRow.id == t.AnnotationRow.criterion_id)
         .where(t.CriterionRow.name == criterion, t.AnnotationRow.annotator_kind == "human")
         .order_by(t.AnnotationRow.id))
    out: dict[str, tuple[bool, datetime]] = {}
    final: set[str] = set()
    with store.session() as s:
        for unit, label, at, source in s.execute(q):
            if unit in final and source != ADJUDICATION_SOURCE:
                continue
            out[unit] = (label == "pass", _aware(at))
            if source == ADJUDICATION_SOURCE:
                final.add(unit)
    return out


def audit_labels(store: Store, evaluator: str) -> list[tuple[str, datetime, bool, bool]]:
    """Labelled judge-audit pairs of an evaluator (:func:`assay.suite.audit.audit_pairs`):
    ``(unit id, labelled at, judge pass, human pass)``; empty when the store has none."""
    try:
        from assay.suite.audit import audit_pairs
    except ImportError:  # pragma: no cover - the audit module ships with the online worker
        return []
    return [(p.unit_id, _aware(p.labelled_at or p.scored_at), p.judge_verdict == "pass", p.human_label == "pass")
            for p in audit_pairs(store, evaluator) if p.human_label is not None]


def _judge_pairs(store: Store, name: str, criterion: str | None, verdicts: dict[str, bool]
                 ) -> tuple[list[tuple[str, datetime, bool, bool]], Literal["audit_items", "all_labels", "none"]]:
    """Audit pairs when the evaluator has labelled audit items, else every human label on its
    criterion of a unit it scored (latest verdict); a source tag says which."""
    audited = audit_labels(store, name)
    if audited:
        return audited, "audit_items"
    labels = human_labels(store, criterion) if criterion else {}
    pairs = [(u, at, verdicts[u], human) for u, (human, at) in labels.items() if u in verdicts]
    return pairs, "all_labels" if pairs else "none"


# --- series -----------------------------------------------------------------------------------
def _window_stats(start: date, end: date, rows: list[_Score]) -> WindowStats:
    scored = [r for r in rows if r.passed is not None]
    values = [r.score for r in scored if r.score is not None]
    q = np.percentile(values, [10, 50, 90]).tolist() if values else [None, None, None]
    n_pass = sum(bool(r.passed) for r in scored)
    return WindowStats(start=start, end=end, n_scored=len(scored), n_unscored=len(rows) - len(scored),
                       n_pass=n_pass, pass_rate=n_pass / len(scored) if scored else None,
                       score_mean=float(np.mean(values)) if values else None,
                       score_p10=q[0], score_median=q[1], score_p90=q[2],
                       versions=tuple(sorted({r.version for r in scored})))


def score_windows(rows: Sequence[_Score], window: Window, alpha: float, min_n: int) -> list[WindowStats]:
    """Windows with any result, each tested against the previous window with scores."""
    groups: dict[date, list[_Score]] = defaultdict(list)
    for r in rows:
        groups[window_start(r.at, window)].append(r)
    binary = len({r.score for r in rows if r.passed is not None and r.score is not None}) <= 2
    out: list[WindowStats] = []
    prev: tuple[WindowStats, list[_Score]] | None = None
    for start in sorted(groups):
        stats_ = _window_stats(start, start + _length(window), groups[start])
        if stats_.n_scored and prev is not None:
            stats_ = _compare(stats_, groups[start], prev, alpha, min_n, binary)
        out.append(stats_)
        if stats_.n_scored:
            prev = (stats_, groups[start])
    return out


def _compare(cur: WindowStats, rows: list[_Score], prev: tuple[WindowStats, list[_Score]], alpha: float,
             min_n: int, binary: bool) -> WindowStats:
    before, before_rows = prev
    update: dict[str, Any] = {"previous": before.start}
    if cur.versions != before.versions:
        update["note"] = (f"evaluator version changed ({', '.join(before.versions)} -> {', '.join(cur.versions)}): "
                          "a change may come from the evaluator, not production")
    if min(cur.n_scored, before.n_scored) < min_n:
        update["note"] = " ".join(filter(None, [update.get("note"), f"not tested: fewer than {min_n} scored units "
                                                "in this or the previous window"]))
        return cur.model_copy(update=update)
    update["pass_rate_change"] = two_proportion_test(before.n_pass, before.n_scored, cur.n_pass, cur.n_scored, alpha)
    values = [r.score for r in rows if r.passed is not None and r.score is not None]
    before_values = [r.score for r in before_rows if r.passed is not None and r.score is not None]
    if values and before_values and not binary:
        update["score_change"] = distribution_test(before_values, values, alpha)
    return cur.model_copy(update=update)


def agreement_windows(pairs: Sequence[tuple[datetime, bool, bool]], window: Window, threshold: float | None,
                      min_pairs: int) -> list[AgreementWindow]:
    """Judge-human agreement per window of ``(labelled at, judge pass, human pass)`` pairs."""
    groups: dict[date, list[bool]] = defaultdict(list)
    for at, judge, human in pairs:
        groups[window_start(at, window)].append(judge == human)
    out = []
    for start in sorted(groups):
        agree = groups[start]
        n, k = len(agree), sum(agree)
        low, high = wilson_interval(k, n)
        below = threshold is not None and n >= min_pairs and k / n < threshold
        out.append(AgreementWindow(start=start, end=start + _length(window), n_pairs=n, n_agree=k,
                                   agreement=k / n, low=low, high=high, below_threshold=below))
    return out


def _latest_verdicts(rows: Sequence[_Score]) -> dict[str, bool]:
    """Unit id -> the latest scored verdict (rows are in time order)."""
    return {r.unit_id: bool(r.passed) for r in rows if r.passed is not None}


def _evaluator_drift(store: Store, name: str, rows: list[_Score], info: _Evaluator | None, window: Window,
                     cfg: DriftSettings, period: tuple[datetime, datetime]) -> EvaluatorDrift:
    windows = score_windows(rows, window, cfg.alpha, cfg.min_n)
    criterion = info.criterion if info else None
    threshold = info.threshold if info else None
    pairs, source = _judge_pairs(store, name, criterion, _latest_verdicts(rows))
    pairs = [p for p in pairs if period[0] <= p[1] <= period[1]]
    estimates, est_window = None, None
    latest = next((w for w in reversed(windows) if w.n_scored), None)
    if latest is not None:
        in_window = [r for r in rows if window_start(r.at, window) == latest.start]
        versions = Counter(r.version for r in in_window if r.passed is not None)
        calibration = (info.calibrations.get(versions.most_common(1)[0][0]) if info and versions else None)
        estimates = pass_rate_estimates(_latest_verdicts(in_window), confusion_counts(calibration),
                                        {u: human for u, _, _, human in pairs})
        estimates = _ppi_caveats(estimates, source, cfg.min_audit_pairs)
        est_window = latest.start
    return EvaluatorDrift(evaluator=name, criterion=criterion, threshold=threshold, windows=tuple(windows),
                          agreement=tuple(agreement_windows([(at, j, h) for _, at, j, h in pairs], window,
                                                            threshold, cfg.min_audit_pairs)),
                          audit_source=source, estimates=estimates, estimates_window=est_window)


def _ppi_caveats(estimates: PassRateEstimates, source: str, min_pairs: int) -> PassRateEstimates:
    """The PPI estimate with its caveats in its note: labels that are not a random audit sample (PPI's
    correction assumes one), fewer labels than ``[drift] min_audit_pairs`` (its interval is then too narrow
    to trust: 2 labels can give [100%, 100%])."""
    ppi = estimates.ppi
    if ppi.value is None:
        return estimates
    notes = [ppi.note] if ppi.note else []
    if source == "all_labels":
        notes.append("labels are not a random audit sample: PPI may be biased")
    if ppi.n_labelled < min_pairs:
        notes.append(f"only {ppi.n_labelled} human labels, fewer than [drift] min_audit_pairs = {min_pairs}: "
                     "the interval is not reliable")
    return estimates.model_copy(update={"ppi": ppi.model_copy(update={"note": "; ".join(notes)})})


def new_signatures(store: Store, since: datetime, until: datetime | None = None) -> list[NewSignature]:
    """Signatures created in ``[since, until]`` (no upper bound when None), largest first."""
    q = select(t.SignatureRow).where(t.SignatureRow.created_at >= _naive(since))
    if until is not None:
        q = q.where(t.SignatureRow.created_at <= _naive(until))
    with store.session() as s:
        rows = list(s.scalars(q))
    return [NewSignature(id=r.id, label=r.label, structural_key=r.structural_key, size=r.size, status=r.status,
                         created_at=_aware(r.created_at)) for r in sorted(rows, key=lambda r: (-r.size, r.id))]


# --- alerts -----------------------------------------------------------------------------------
def _alerts(ev: EvaluatorDrift) -> list[DriftAlert]:
    out: list[DriftAlert] = []
    latest = next((w for w in reversed(ev.windows) if w.n_scored), None)
    if latest is not None and latest.pass_rate_change and latest.pass_rate_change.significant:
        c = latest.pass_rate_change
        before = (latest.pass_rate or 0.0) - c.delta
        out.append(DriftAlert(kind="pass_rate", evaluator=ev.evaluator, window_start=latest.start,
                              value=latest.pass_rate, previous=before, p_value=c.p_value,
                              message=f"{ev.evaluator}: pass rate {before:.3f} -> {latest.pass_rate:.3f} "
                                      f"(window {latest.start}, {c.test} p={c.p_value:.2g})"
                                      + (f"; {latest.note}" if "version changed" in latest.note else "")))
    if latest is not None and latest.score_change and latest.score_change.significant:
        c = latest.score_change
        out.append(DriftAlert(kind="score_distribution", evaluator=ev.evaluator, window_start=latest.start,
                              value=latest.score_mean, p_value=c.p_value,
                              message=f"{ev.evaluator}: score distribution changed (mean {c.delta:+.3f}, window "
                                      f"{latest.start}, {c.test} p={c.p_value:.2g})"))
    if ev.agreement and ev.agreement[-1].below_threshold:
        a = ev.agreement[-1]
        out.append(DriftAlert(kind="judge_agreement", evaluator=ev.evaluator, window_start=a.start,
                              value=a.agreement, previous=ev.threshold,
                              message=f"{ev.evaluator}: judge-human agreement {a.agreement:.3f} on {a.n_pairs} "
                                      f"labels below its threshold {ev.threshold:.2f} (window {a.start}): "
                                      "recalibrate it"))
    return out


def lifecycle_alerts(changes: Sequence[LifecycleChange], states: Sequence[str], window: Window) -> list[DriftAlert]:
    """An alert for each change into one of ``states`` (a signature escalating, regressed ...)."""
    out = []
    for c in changes:
        if c.to_state in states:
            evaluator = (c.details.get("fail_rate") or {}).get("evaluator", "")
            out.append(DriftAlert(kind="signature_lifecycle", evaluator=evaluator, signature_id=c.signature_id,
                                  window_start=window_start(c.at, window),
                                  message=f"signature {c.signature_id} ({c.label}): {c.from_state or 'first seen'} "
                                          f"-> {c.to_state}: {c.reason}"))
    return out


def compute_drift(store: Store, settings: DriftSettings | None = None, window: Window = "week",
                  periods: int | None = None, now: datetime | None = None, env: str | None = None) -> DriftReport:
    """Compute every evaluator's drift series, new signatures and alerts (nothing is sent).

    Args:
        settings: ``[drift]`` settings (alpha, minimum sizes, production run kinds).
        window: ``"day"`` (UTC) or ``"week"`` (ISO, from Monday).
        periods: windows to look back over, the current one included (default 30 days or 12 weeks).
        now: the reference time (default: now, UTC).
        env: the environment whose units' scores count (None: ``[environments] production`` of the store;
            ``all``: every unit), so a backfill over evaluation runs never moves production's pass rate.

    Raises:
        UsageError: unknown window or ``periods`` < 1.
    """
    cfg = settings or DriftSettings()
    if window not in DEFAULT_PERIODS:
        raise UsageError(f"window must be 'day' or 'week', got {window!r}")
    periods = DEFAULT_PERIODS[window] if periods is None else periods
    if periods < 1:
        raise UsageError(f"periods must be >= 1, got {periods}")
    now = _aware(now or datetime.now(UTC))
    first = window_start(now, window) - _length(window) * (periods - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    info = _evaluator_info(store)
    scope = store.env_scope(env)
    evaluators = [_evaluator_drift(store, name, rows, info.get(name), window, cfg, (since, now))
                  for name, rows in sorted(_scores(store, cfg.run_kinds, since, now, scope).items())]
    changes = lifecycle_history(store, since=now - _length(window), until=now)
    alerts = [a for ev in evaluators for a in _alerts(ev)] + lifecycle_alerts(changes, cfg.lifecycle_alerts, window)
    return DriftReport(window=window, generated_at=now, since=since, alpha=cfg.alpha, evaluators=tuple(evaluators),
                       new_signatures=tuple(new_signatures(store, now - _length(window), now)), alerts=tuple(alerts),
                       lifecycle=tuple(changes), environment=scope.name if scope else ALL_ENVIRONMENTS,
                       run_kinds=tuple(cfg.run_kinds))


def notify(report: DriftReport, settings: DriftSettings | None = None) -> bool:
    """Log each alert (warning) and POST the alerts as JSON to ``settings.webhook_url`` if set.

    The payload is ``{"source": "assay", "event": "drift", "window", "generated_at", "alerts":
    [...], "new_signatures": [...], "lifecycle": [...]}`` (``lifecycle``: the window's signature
    lifecycle changes, alerting or not). Webhook failures (transport errors, non-2xx) are logged
    as errors, never raised.

    Returns:
        True when the webhook accepted the alerts; False when nothing was sent or it failed.
    """
    cfg = settings or DriftSettings()
    for alert in report.alerts:
        log.warning("drift alert: %s", alert.message)
    if not report.alerts or not cfg.webhook_url:
        return False
    payload = {"source": "assay", "event": "drift", "window": report.window,
               "generated_at": report.generated_at.isoformat(),
               "alerts": [a.model_dump(mode="json") for a in report.alerts],
               "new_signatures": [s.model_dump(mode="json") for s in report.new_signatures],
               "lifecycle": [c.model_dump(mode="json") for c in report.lifecycle]}
    try:
        resp = httpx.post(cfg.webhook_url, json=payload, timeout=cfg.webhook_timeout_s)
    except httpx.HTTPError as exc:
        log.error("drift webhook %s failed: %s", cfg.webhook_url, exc)
        return False
    if resp.is_success:
        return True
    log.error("drift webhook %s answered HTTP %d", cfg.webhook_url, resp.status_code)
    return False


def check_drift(store: Store, settings: DriftSettings | None = None, window: Window = "week",
                periods: int | None = None, now: datetime | None = None, env: str | None = None) -> DriftReport:
    """:func:`compute_drift`, then :func:`notify` (log lines and the webhook)."""
    report = compute_drift(store, settings, window, periods, now, env)
    notify(report, settings)
    return report
