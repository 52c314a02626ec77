"""The dashboard page: what ``assay report`` writes, live in the app (login required).

Mount with ``install_dashboard(app)`` after :func:`assay._web.ui.install_ui` (which sets the app state). Routes:

    /dashboard                      drift alerts, scores over time, corrected pass rates, agreement
                                    over time, signature volumes, calibration, latest gate, redundancy
    /dashboard/assets/{name}        plotly.min.js (from the plotly package), charts.js, report.css

The page keeps the app's Content-Security-Policy (``script-src 'self'``, no inline script):
figures travel as ``<script type="application/json">`` data blocks, which are never executed,
and ``charts.js`` (served from ``'self'``) draws them with Plotly. One addition, for this page
only: ``style-src`` also allows the SHA-256 of the *empty* string. Plotly.js creates an empty
``<style>`` element and fills it through the CSSOM (``insertRule``, which CSP does not
govern); the hash admits only an empty inline style element, so no style can be injected
through markup. Plotly.js also injects MapLibre's stylesheet (map traces, unused here) unless
an element with its id exists: the page carries an empty, hidden placeholder with that id.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

from assay._store.environments import environments
from assay._web.pages import CSP, HERE, SECURITY_HEADERS, current_user, ui_state
from assay.exceptions import UsageError
from assay.reports.data import build_report_data
from assay.reports.html import fmt, plotly_js_path

EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
"""CSP hash source of the empty string (base64 of SHA-256 of b"")."""
DASHBOARD_CSP = CSP.replace("style-src 'self'", f"style-src 'self' {EMPTY_STYLE_HASH}")
DASHBOARD_HEADERS = SECURITY_HEADERS | {"Content-Security-Policy": DASHBOARD_CSP}
ASSETS = {"plotly.min.js": "text/javascript", "charts.js": "text/javascript", "report.css": "text/css"}
ASSET_HEADERS = {k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"} | {
    "Cache-Control": "private, max-age=3600"}

router = APIRouter()
_INJECTED_STYLE = re.compile(r'if\(!document\.getElementById\("([\w-]+)"\)\)\{'
                             r'var \w+=document\.createElement\("style"\)')


@cache
def plotly_style_ids() -> tuple[str, ...]:
    """Ids of the stylesheets Plotly.js injects at load unless an element with the id exists."""
    return tuple(_INJECTED_STYLE.findall(plotly_js_path().read_text(encoding="utf-8")))


def _env() -> Environment:
    env = Environment(loader=ChoiceLoader([FileSystemLoader(HERE / "templates"),
                                           PackageLoader("assay.reports", "templates")]),
                      autoescape=select_autoescape(default=True))
    env.globals["fmt"] = fmt
    return env


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard routes to an app that already has the annotation UI installed."""
    app.state.assay_dashboard_env = _env()
    app.include_router(router)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, env: str | None = None) -> Response:
    """The report's sections, computed from the store now, for the units of ``env`` (default production)."""
    user, session = current_user(request)
    ui = ui_state(request)
    try:
        data = build_report_data(ui.store, ui.settings.drift, env=env)
    except UsageError as exc:  # an environment the store does not know
        raise HTTPException(400, str(exc)) from exc
    jinja: Environment = request.app.state.assay_dashboard_env
    html = jinja.get_template("dashboard.html").render(user=user, csrf_token=session.get("csrf", ""), data=data,
                                                        style_ids=plotly_style_ids(),
                                                        environments=environments(ui.store))
    return HTMLResponse(html, headers=DASHBOARD_HEADERS)


@router.get("/dashboard/assets/{name}")
def dashboard_asset(name: str) -> Response:
    """Plotly.js, the chart loader and the report styles (public, like ``/static``)."""
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail="no such asset")
    path = plotly_js_path() if name == "plotly.min.js" else Path(__file__).parents[1] / "reports" / "templates" / name
    return FileResponse(path, media_type=ASSETS[name], headers=ASSET_HEADERS)
