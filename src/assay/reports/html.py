"""Self-contained HTML report: drift alerts, scores over time per evaluator, corrected pass
rates, judge-human agreement over time, signature volumes (new ones marked) and map,
calibration confusion matrices, the latest gate, and evaluator redundancy.

Plotly's JavaScript is inlined once and every figure travels as JSON in the page, so the
file opens without a network. A section without data says why instead of a chart.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from assay._store import Store
from assay.reports.data import build_report_data
from assay.settings import DriftSettings


def fmt(x: object) -> str:
    """A rate with 3 decimals; ``undefined`` for None or anything that is not a number."""
    return f"{x:.3f}" if isinstance(x, int | float) and not isinstance(x, bool) else "undefined"


def asset(name: str) -> str:
    """A file shipped with the report templates (``charts.js``, ``report.css``)."""
    return resources.files("assay.reports").joinpath("templates", name).read_text(encoding="utf-8")


def plotly_js_path() -> Path:
    """The minified Plotly.js bundled with the ``plotly`` package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def template_env() -> Environment:
    """The Jinja2 environment of the report templates (autoescaped)."""
    env = Environment(loader=PackageLoader("assay.reports", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.globals["fmt"] = fmt
    return env


def write_report(store: Store, path: Path | str, *, drift: DriftSettings | None = None,
                 now: datetime | None = None, env: str | None = None) -> Path:
    """Write the HTML report for everything in the store.

    Args:
        store: the store to report on.
        path: the HTML file to write (overwritten).
        drift: ``[drift]`` settings (production run kinds, alpha); default settings when None.
        now: the report's reference time (default: now, UTC).
        env: the environment of the production sections (None: ``[environments] production``; ``all``).

    Missing parent folders of ``path`` are created.

    Returns:
        the path written.

    Raises:
        UsageError: the path cannot be written (a parent is a file, no permission, ...); checked
            before the report is built.
    """
    from assay.exceptions import UsageError

    out = Path(path)
    if out.is_dir():
        raise UsageError(f"cannot write the report to {out}: it is a folder; give a file name such as "
                         f"{out / 'report.html'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    data = build_report_data(store, drift, now, env=env)
    html = template_env().get_template("report.html.j2").render(
        data=data, css=asset("report.css"), charts_js=asset("charts.js"),
        plotly_js=f"<script>{plotly_js_path().read_text(encoding='utf-8')}</script>")
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return out
