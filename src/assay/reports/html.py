"""Self-contained HTML report: signatures (table + 2-D map), calibration, latest gate.

Plotly's JavaScript is inlined once, so the file opens without a network.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import EvaluatorRow, RunRow


def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _map_html(points: list[tuple[str, float, float, int | None]]) -> str:
    if not points:
        return ""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups: dict[str, list[tuple[str, float, float]]] = {}
    for uid, x, y, sig in points:
        groups.setdefault("noise" if sig is None else f"signature {sig}", []).append((uid, x, y))
    for name in sorted(groups, key=lambda g: (g == "noise", len(g), g)):
        pts = groups[name]
        fig.add_trace(go.Scatter(x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers", name=name,
                                 text=[p[0] for p in pts], hoverinfo="text+name",
                                 marker={"size": 7, "opacity": 0.5 if name == "noise" else 0.9}))
    fig.update_layout(title="Failed units, coloured by signature (2-D projection of embeddings)",
                      height=480, margin={"l": 20, "r": 20, "t": 50, "b": 20})
    return str(fig.to_html(full_html=False, include_plotlyjs=False))


def write_report(store: Store, path: Path | str) -> Path:
    """Write the HTML report for everything in the store.

    Returns:
        the path written.
    """
    import plotly.offline

    from assay.signatures import list_signatures, map_points

    signatures = list_signatures(store)
    points = map_points(store)
    with store.session() as s:
        calibrations = [r.calibration for r in s.scalars(select(EvaluatorRow).order_by(EvaluatorRow.created_at))
                        if r.calibration]
        gate_row = s.scalar(select(RunRow).where(RunRow.kind == "gate", RunRow.finished_at.is_not(None))
                            .order_by(RunRow.started_at.desc()))
        gate = {"run_id": gate_row.run_id, **gate_row.summary} if gate_row else None
    env = Environment(loader=PackageLoader("assay.reports", "templates"), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        generated=datetime.now(UTC).isoformat(timespec="seconds"), store=store.url, signatures=signatures,
        n_failed=len(points), n_noise=sum(1 for p in points if p[3] is None), map_html=_map_html(points),
        calibrations=calibrations, gate=gate, fmt=_fmt,
        plotly_js=f"<script>{plotly.offline.get_plotlyjs()}</script>")
    out = Path(path)
    out.write_text(html, encoding="utf-8")
    return out
