"""What the HTML report and the app's dashboard show, gathered once from the store.

Charts are Plotly figures serialised to JSON that is safe inside ``<script
type="application/json">`` (``<``, ``>`` and ``&`` escaped), rendered in the page by
``charts.js``: so the report can inline everything and the app can keep a CSP without
inline scripts. A section without data carries the reason instead of a chart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sqlalchemy import select

from assay._store import Store
from assay._store.environments import env_condition
from assay._store.tables import EvaluatorRow, RunRow, ScoreRow, UnitRow
from assay.calibration.calibrate import read_calibration
from assay.calibration.estimates import PassRateEstimates
from assay.settings import DriftSettings, EnvScope
from assay.settings.run_kinds import RunKind
from assay.signatures import Signature
from assay.suite.drift import DriftAlert, DriftReport, NewSignature, WindowStats, compute_drift

SECTIONS: dict[str, str] = {
    "drift": "Drift", "scores": "Scores over time", "estimates": "Corrected pass rates",
    "agreement": "Agreement over time", "signatures": "Signatures", "calibration": "Calibration", "gate": "Gate",
    "redundancy": "Redundancy"}
"""The report's sections (anchor id -> table-of-contents title), in their usual order."""
SCORE_DAYS = 90
"""Days of production scores the over-time charts show."""
DRIFT_ROWS = 14
"""Latest windows with scores per evaluator in the drift section's table of day-over-day tests."""
MAX_SIGNATURE_BARS = 30
COLORS = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d01884", "#12b5cb", "#f9ab00", "#5f6368"]


@dataclass(frozen=True)
class Chart:
    """One Plotly chart: ``figure_json`` is safe to embed in a ``<script type="application/json">``."""

    id: str
    figure_json: str


@dataclass(frozen=True)
class Redundancy:
    """Evaluator pairs that probably measure one dimension (|r| above the threshold)."""

    threshold: float
    n_evaluators: int
    pairs: list[Any] = field(default_factory=list)
    """every correlated pair (``suite.compare.RedundantPair``), strongest first"""
    n_flagged: int = 0
    empty: str = ""


@dataclass(frozen=True)
class DriftRow:
    """One evaluator's production scores in one day, tested against the previous day with scores."""

    evaluator: str
    window: WindowStats


@dataclass
class ReportData:
    """Everything the report and the dashboard show; ``*_empty`` says why a section is empty."""

    generated: str
    store: str
    environment: str
    """the environment whose units the production sections read ('all': every environment)"""
    signatures: list[Signature]
    n_failed: int
    n_noise: int
    calibrations: list[dict[str, Any]]
    gate: dict[str, Any] | None
    alerts: list[DriftAlert]
    new_signatures: list[NewSignature]
    estimates: list[tuple[str, str, PassRateEstimates]]
    redundancy: Redundancy
    charts: dict[str, Chart] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)
    drift_rows: list[DriftRow] = field(default_factory=list)
    """the latest :data:`DRIFT_ROWS` days with scores per evaluator, oldest first"""
    agreement_window: str = "week"
    """the window of the agreement chart: ``week``, or ``day`` while the labels fall in fewer than two weeks"""

    def has_data(self, section: str) -> bool:
        """Whether ``section`` (one of :data:`SECTIONS`) has something to show beyond a "no data yet" line."""
        present = {"drift": "scores" in self.charts, "scores": "scores" in self.charts,
                   "estimates": bool(self.estimates), "agreement": "agreement" in self.charts,
                   "signatures": bool(self.signatures), "calibration": bool(self.calibrations),
                   "gate": self.gate is not None, "redundancy": not self.redundancy.empty}
        return present[section]

    @property
    def titles(self) -> dict[str, str]:
        """Section anchor id -> its title in the table of contents (:data:`SECTIONS`)."""
        return SECTIONS

    @property
    def section_order(self) -> list[str]:
        """:data:`SECTIONS` with the sections that have data first (each group in its usual order), so a
        newcomer's first look is the loop working, not four "nothing yet" lines."""
        return sorted(SECTIONS, key=lambda key: not self.has_data(key))


def _safe(text: str) -> str:
    """Chart text: Plotly reads a few HTML-like tags (``<a href>``, ``<b>``) in labels; trace
    content must not become markup."""
    return text.replace("<", "‹").replace(">", "›")


def chart(chart_id: str, fig: go.Figure) -> Chart:
    """Serialise a figure for a JSON script block (no ``</script>`` or markup can break out)."""
    text = fig.to_json() or "{}"
    return Chart(id=chart_id, figure_json=text.replace("&", "\\u0026").replace("<", "\\u003c")
                 .replace(">", "\\u003e"))


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 20, "t": 60, "b": 40},
                      template="plotly_white", legend={"orientation": "h", "y": -0.15})
    return fig


def _dimensions(store: Store) -> dict[str, str]:
    with store.session() as s:
        return {r.name: str((r.definition or {}).get("dimension") or "")
                for r in s.scalars(select(EvaluatorRow).order_by(EvaluatorRow.created_at))}


def _name(evaluator: str, dims: dict[str, str]) -> str:
    dim = dims.get(evaluator)
    return _safe(f"{evaluator} ({dim})" if dim and dim != evaluator else evaluator)


def scores_figure(report: DriftReport, dims: dict[str, str]) -> go.Figure | None:
    """Pass rate and mean score per window, one colour per evaluator; x marks a significant change."""
    if not any(w.n_scored for ev in report.evaluators for w in ev.windows):
        return None
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("pass rate of scored units", "mean score (0..1)"))
    for i, ev in enumerate(report.evaluators):
        name, color = _name(ev.evaluator, dims), COLORS[i % len(COLORS)]
        ws = [w for w in ev.windows if w.n_scored]
        x = [str(w.start) for w in ws]
        fig.add_trace(go.Scatter(
            x=x, y=[w.pass_rate for w in ws], mode="lines+markers", name=name, legendgroup=name,
            line={"color": color}, customdata=[[w.n_scored, w.n_unscored] for w in ws],
            hovertemplate="%{x}: %{y:.1%} of %{customdata[0]} scored, %{customdata[1]} unscored"),
            row=1, col=1)
        moved = [w for w in ws if (w.pass_rate_change and w.pass_rate_change.significant)
                 or (w.score_change and w.score_change.significant)]
        if moved:
            fig.add_trace(go.Scatter(x=[str(w.start) for w in moved], y=[w.pass_rate for w in moved], mode="markers",
                                     name=f"{name}: significant change", legendgroup=name,
                                     marker={"symbol": "x", "size": 13, "color": "#b3261e"}), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[w.score_mean for w in ws], mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=False, line={"color": color, "dash": "dot"}),
                      row=2, col=1)
    fig.update_yaxes(range=[0, 1.05])
    return _layout(fig, f"Production scores per {report.window}, per evaluator", height=560)


def agreement_figure(report: DriftReport) -> go.Figure | None:
    """Judge-human agreement per window with Wilson 95% intervals and each evaluator's threshold."""
    evs = [ev for ev in report.evaluators if ev.agreement]
    if not evs:
        return None
    fig = go.Figure()
    for i, ev in enumerate(evs):
        color, x = COLORS[i % len(COLORS)], [str(a.start) for a in ev.agreement]
        fig.add_trace(go.Scatter(
            x=x, y=[a.agreement for a in ev.agreement], mode="lines+markers", name=_safe(ev.evaluator),
            line={"color": color}, customdata=[a.n_pairs for a in ev.agreement],
            hovertemplate="%{x}: %{y:.1%} on %{customdata} labels",
            error_y={"type": "data", "symmetric": False,
                     "array": [(a.high or 0) - (a.agreement or 0) for a in ev.agreement],
                     "arrayminus": [(a.agreement or 0) - (a.low or 0) for a in ev.agreement]}))
        if ev.threshold is not None:
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[ev.threshold] * 2, mode="lines",
                                     name=f"{_safe(ev.evaluator)} threshold", line={"color": color, "dash": "dash"}))
    fig.update_yaxes(range=[0, 1.05], title="agreement")
    return _layout(fig, f"Judge-human agreement per {report.window} (95% Wilson intervals)")


def signatures_figure(signatures: list[Signature], new_ids: set[int]) -> go.Figure | None:
    """Volume (units) of the largest signatures; new ones in a second colour."""
    top = sorted((s for s in signatures if s.size > 0), key=lambda s: -s.size)[:MAX_SIGNATURE_BARS]
    if not top:
        return None
    fig = go.Figure()
    for is_new, color, name in ((False, "#1a73e8", "existing"), (True, "#e8710a", "new")):
        part = [s for s in top if (s.id in new_ids or s.status == "new") == is_new]
        if part:
            fig.add_trace(go.Bar(x=[f"#{s.id}" for s in part], y=[s.size for s in part], name=f"{name} signatures",
                                 marker={"color": color}, hovertext=[_safe(s.label[:120]) for s in part],
                                 hoverinfo="x+y+text"))
    fig.update_xaxes(type="category", categoryorder="total descending")
    fig.update_yaxes(title="units")
    return _layout(fig, "Failure signature volumes (largest first)")


def estimates_figure(estimates: list[tuple[str, str, PassRateEstimates]]) -> go.Figure | None:
    """Raw judge pass rate vs the two corrected estimates, with 95% CIs, per evaluator."""
    if not estimates:
        return None
    fig = go.Figure()
    for method, label, color in (("raw", "raw judge pass rate", "#5f6368"),
                                 ("rogan_gladen", "Rogan–Gladen", "#1a73e8"), ("ppi", "PPI", "#188038")):
        xs, ys, hi, lo = [], [], [], []
        for name, _, est in estimates:
            e = getattr(est, method)
            if e.value is not None and e.low is not None and e.high is not None:
                xs.append(_safe(name))
                ys.append(e.value)
                hi.append(e.high - e.value)
                lo.append(e.value - e.low)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=label, marker={"size": 11, "color": color},
                                 error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    fig.update_layout(scattermode="group")
    fig.update_yaxes(range=[0, 1.05], title="pass rate")
    return _layout(fig, "Production pass rate, latest week: raw vs corrected for judge error (95% CI)")


def map_figure(points: list[tuple[str, float, float, int | None]]) -> go.Figure | None:
    """Failed units in 2-D, coloured by signature."""
    if not points:
        return None
    fig = go.Figure()
    groups: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for uid, x, y, sig in points:
        groups["noise" if sig is None else f"signature {sig}"].append((uid, x, y))
    for name in sorted(groups, key=lambda g: (g == "noise", len(g), g)):
        pts = groups[name]
        fig.add_trace(go.Scatter(x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers", name=name,
                                 text=[_safe(p[0]) for p in pts], hoverinfo="text+name",
                                 marker={"size": 7, "opacity": 0.5 if name == "noise" else 0.9}))
    return _layout(fig, "Failed units, coloured by signature (2-D projection of embeddings)", height=480)


def production_scores(store: Store, run_kinds: list[str], scope: EnvScope | None = None) -> dict[str, dict[str, float]]:
    """Evaluator name -> unit id -> latest scored production score, of units in ``scope`` (None: all)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    q = (select(ScoreRow.evaluator_name, ScoreRow.unit_id, ScoreRow.score)
         .join(RunRow, RunRow.run_id == ScoreRow.run_id).join(UnitRow, UnitRow.unit_id == ScoreRow.unit_id)
         .where(RunRow.kind.in_(run_kinds), ScoreRow.status == "scored", ScoreRow.score.is_not(None),
                env_condition(scope))
         .order_by(ScoreRow.created_at, ScoreRow.id))
    with store.session() as s:
        for name, unit, score in s.execute(q):
            out[name][unit] = float(score or 0.0)  # not None: filtered in the query
    return dict(out)


def redundancy(store: Store, run_kinds: list[str], threshold: float = 0.8, scope: EnvScope | None = None
               ) -> Redundancy:
    """Evaluator pairs whose production scores (units in ``scope``) correlate above ``threshold`` (suite.compare)."""
    scores = production_scores(store, run_kinds, scope)
    if len(scores) < 2:
        return Redundancy(threshold, len(scores),
                          empty=f"{len(scores)} evaluator(s) with production scores: nothing to compare yet")
    try:
        from assay.suite.compare import correlations, redundant_pairs
    except ImportError:  # pragma: no cover - compare ships with the gate
        return Redundancy(threshold, len(scores), empty="evaluator comparison is not available")
    compared = correlations(scores)
    flagged = redundant_pairs(scores, threshold=threshold)
    empty = "" if compared else "no two evaluators scored enough common units to correlate"
    return Redundancy(threshold, len(scores), list(compared), len(flagged), empty=empty)


def _latest_gate(store: Store) -> dict[str, Any] | None:
    with store.session() as s:
        row = s.scalar(select(RunRow).where(RunRow.kind == RunKind.GATE.value, RunRow.finished_at.is_not(None))
                       .order_by(RunRow.started_at.desc()))
        return {"run_id": row.run_id, **row.summary} if row else None


def _calibrations(store: Store) -> list[dict[str, Any]]:
    with store.session() as s:
        stored = [r.calibration for r in s.scalars(select(EvaluatorRow).order_by(EvaluatorRow.created_at))]
    reports = [read_calibration(c) for c in stored]
    return [r.model_dump(mode="json") for r in reports if r is not None]


def drift_rows(report: DriftReport, latest: int = DRIFT_ROWS) -> list[DriftRow]:
    """The latest ``latest`` windows with scored units of each evaluator in ``report``, oldest first."""
    return [DriftRow(ev.evaluator, w) for ev in report.evaluators
            for w in [w for w in ev.windows if w.n_scored][-latest:]]


def agreement_series(daily: DriftReport, weekly: DriftReport) -> DriftReport:
    """The report whose judge-human agreement the chart shows: per week once some evaluator has pairs in two
    weeks or more, else per day (a new workspace, or the demo's replayed days, shows its days, not one point)."""
    return weekly if max((len(ev.agreement) for ev in weekly.evaluators), default=0) >= 2 else daily


def build_report_data(store: Store, settings: DriftSettings | None = None, now: datetime | None = None,
                      include_map: bool = True, env: str | None = None) -> ReportData:
    """Gather every section from the store (drift with ``settings``, at time ``now``, default now UTC); the
    production sections (scores, corrected pass rates, agreement, redundancy) read the units of ``env``
    (None: ``[environments] production``; ``all``: every unit)."""
    from assay.signatures import list_signatures, map_points

    cfg = settings or DriftSettings()
    now = now or datetime.now(UTC)
    scope = store.env_scope(env)
    daily = compute_drift(store, cfg, "day", periods=SCORE_DAYS, now=now, env=env)
    weekly = compute_drift(store, cfg, "week", now=now, env=env)
    signatures = list_signatures(store)
    points = map_points(store) if include_map else []
    estimates = [(ev.evaluator, str(ev.estimates_window), ev.estimates) for ev in weekly.evaluators
                 if ev.estimates is not None]
    data = ReportData(
        generated=now.isoformat(timespec="seconds"), store=store.url, environment=weekly.environment,
        signatures=signatures, n_failed=len(points),
        n_noise=sum(1 for p in points if p[3] is None), calibrations=_calibrations(store), gate=_latest_gate(store),
        alerts=list(weekly.alerts), new_signatures=list(weekly.new_signatures), estimates=estimates,
        redundancy=redundancy(store, cfg.run_kinds, scope=scope))
    agreed = agreement_series(daily, weekly)
    data.drift_rows, data.agreement_window = drift_rows(daily), agreed.window
    figures = {"scores": scores_figure(daily, _dimensions(store)), "agreement": agreement_figure(agreed),
               "signatures": signatures_figure(signatures, {s.id for s in weekly.new_signatures}),
               "estimates": estimates_figure(estimates), "map": map_figure(points)}
    kinds = ", ".join(cfg.run_kinds)
    reasons = {"scores": f"No online scores yet in the last {SCORE_DAYS} days (runs of kind {kinds}): start the "
                         "worker (assay worker) to score a production sample.",
               "agreement": "No judge-human pairs yet: label audit items (or any scored unit) on the "
                            "evaluator's criterion.",
               "signatures": "No failure signature with member units yet (assay signatures build).",
               "estimates": "No online scores in the latest week, so no pass rate to correct.",
               "map": "No failed units clustered yet."}
    for key, fig in figures.items():
        if fig is None:
            data.empty[key] = reasons[key]
        else:
            data.charts[key] = chart(f"chart-{key}", fig)
    return data
