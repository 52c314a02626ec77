"""The HTML report and the app's dashboard: sections from a real SQLite store, empty sections
that say why, and the rendered pages checked in headless Chromium (Debian's, via Playwright):
Plotly charts drawn, no console error, no network request from the report file."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Playwright
from sqlalchemy import update

from assay._store import Store
from assay._store.scores import Lineage, NewScore, finish_run, new_run, run_scores, write_scores
from assay._store.tables import EvaluatorRow, MemberRow, RunRow, SignatureRow
from assay._web.app import create_app
from assay._web.auth import add_user
from assay._web.dashboard import install_dashboard
from assay._web.pages import CSP
from assay._web.ui import install_ui
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.calibration import CalibrationReport, Confusion, agreement, metrics_with_ci
from assay.evaluators import EvaluationResult
from assay.evaluators.lineage import write_results
from assay.reports import write_report
from assay.reports.data import build_report_data
from assay.settings import Settings
from assay.suite import GateItem
from assay.suite.drift import compute_drift
from assay.suite.gate import GateParams
from assay.suite.online import OnlineParams
from tests.drift_fixtures import NOW, seed_production
from tests.ui_fixtures import make_unit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (/usr/bin/chromium)")
XSS_LABEL = '</script><script>window.__xss = 1</script><a href="javascript:alert(1)">x</a>'
PASSWORD = "correct horse battery"
PLOTS = ".js-plotly-plot svg.main-svg"


def _calibration(store: Store) -> Confusion:
    """A real calibration report of ``helpful`` (human vs judge on 120 items) stored as the app stores it."""
    rng = np.random.default_rng(5)
    human = ["pass"] * 60 + ["fail"] * 60
    judge = [("pass" if rng.random() < 0.9 else "fail") if h == "pass" else ("fail" if rng.random() < 0.75 else "pass")
             for h in human]
    test = metrics_with_ci(human, judge, n_boot=100)
    report = CalibrationReport(evaluator="helpful", evaluator_version="a" * 12, judge_model="fake", dataset_version=1,
                               dataset_balance={"pass": 60, "fail": 60}, n_labelled=120, n_unscored=0, n_errors=0,
                               agreement=agreement(human, judge), threshold=0.8, min_kappa=0.0,
                               meets_threshold=True, status="active", run_id="calibration-x", test=test)
    with store.session() as s:
        s.execute(update(EvaluatorRow).where(EvaluatorRow.name == "helpful")
                  .values(calibration=report.model_dump(mode="json")))
    return test.confusion


def _gate_and_redundant_evaluator(store: Store) -> None:
    """A finished gate run, and a ``brevity`` evaluator whose online scores track ``length`` (r ~ 0.99)."""
    run = new_run(store, "gate", GateParams(units="all"))
    item = GateItem(evaluator="helpful", evaluator_version="a" * 12, judge_model="fake", dataset_version=1, n=40,
                    n_unscored=1, n_errors=0, pass_rate=0.625, min_pass_rate=0.7, baseline_pass_rate=None,
                    passed=False, reasons=("pass rate 0.625 below threshold 0.700",))
    comparison = {"method": "fisher-exact", "diff": -0.175, "ci_low": -0.361, "ci_high": 0.021, "p_value": 0.1234}
    finish_run(store, run, {"items": [{**item.model_dump(mode="json"), "comparison": comparison}], "passed": False})
    online = [row for run_id in _online_runs(store) for row in run_scores(store, run_id)
              if row.evaluator_name == "length" and row.status == "scored"]
    rng = np.random.default_rng(9)
    brevity = new_run(store, "online", OnlineParams())
    write_results(store, Lineage(evaluator="brevity", evaluator_version="c" * 12, run_id=brevity, run_kind="online"),
                  [EvaluationResult(evaluator="brevity", evaluator_version="c" * 12, unit_id=r.unit_id,
                                    score=float(np.clip((r.score or 0) + rng.normal(0, 0.02), 0, 1)), verdict="pass")
                   for r in online[:200]])


def _online_runs(store: Store) -> list[str]:
    with store.session() as s:
        return [r.run_id for r in s.query(RunRow).filter(RunRow.kind == "online")]


def _signatures(store: Store, units: list[str]) -> None:
    with store.session() as s:
        s.add(SignatureRow(id=7, structural_key="tool=x", label=XSS_LABEL, size=5, status="new",
                           created_at=(NOW - timedelta(days=1)).replace(tzinfo=None)))
        s.flush()
        for i, u in enumerate(units[:30]):
            s.add(MemberRow(unit_id=u, signature_id=(1, 2, 7, None)[i % 4], structural_key="k", x=float(i % 7),
                            y=float(i % 5), assignment="cluster"))


@dataclass
class Seeded:
    store: Store
    confusion: Confusion
    """the stored calibration's test-split confusion matrix"""


@pytest.fixture
def full_store(tmp_path: Path) -> Iterator[Seeded]:
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    weeks = seed_production(store, shift=True)
    confusion = _calibration(store)
    _gate_and_redundant_evaluator(store)
    _signatures(store, weeks["w3"])
    yield Seeded(store, confusion)
    store.close()


def test_report_of_an_empty_store_says_why(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    out = write_report(store, tmp_path / "report.html")  # the demo's call
    html = out.read_text(encoding="utf-8")
    store.close()
    for section in ("scores", "agreement", "signatures", "estimates", "map", "alerts", "calibration", "gate",
                    "redundancy"):
        assert f'id="{section}-empty"' in html, section
    assert "No online scores yet" in html and 'data-chart="chart-' not in html


def _h2_order(html: str) -> list[str]:
    return re.findall(r'<h2 id="(\w+)">', html)


def test_sections_with_data_come_before_empty_ones(full_store: Seeded, tmp_path: Path) -> None:
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    usual = _h2_order(write_report(empty, tmp_path / "empty.html").read_text(encoding="utf-8"))
    empty.close()
    assert usual == ["drift", "scores", "estimates", "agreement", "signatures", "calibration", "gate", "redundancy"]
    partial = Store(f"sqlite:///{tmp_path / 'partial.db'}")
    _gate_and_redundant_evaluator(partial)  # a gate run and online scores; no calibration, no signatures
    data = build_report_data(partial)
    html = write_report(partial, tmp_path / "partial.html").read_text(encoding="utf-8")
    partial.close()
    with_data = [k for k in usual if data.has_data(k)]
    assert "gate" in with_data and "calibration" not in with_data and "signatures" not in with_data
    assert _h2_order(html) == with_data + [k for k in usual if k not in with_data] != usual
    toc = re.search(r'<nav class="toc">(.*?)</nav>', html, re.S)
    assert toc is not None and re.findall(r'href="#(\w+)"', toc.group(1)) == _h2_order(html)
    full = _h2_order(write_report(full_store.store, tmp_path / "full.html", now=NOW).read_text(encoding="utf-8"))
    assert full == usual  # every section has data: the usual order


def test_report_sections_from_the_store(full_store: Seeded, tmp_path: Path) -> None:
    html = write_report(full_store.store, tmp_path / "report.html", now=NOW).read_text(encoding="utf-8")
    charts = re.findall(r'data-chart="(chart-\w+)"', html)
    assert charts == ["chart-scores", "chart-estimates", "chart-agreement", "chart-signatures", "chart-map"]
    for chart_id in charts:  # every figure is valid JSON with traces
        block = re.search(rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html, re.S)
        assert block is not None and json.loads(block.group(1))["data"]
    # drift alerts of the latest week, and the corrected estimates that drift computed
    assert "pass_rate: helpful: pass rate" in html and "judge_agreement: helpful" in html
    drift = compute_drift(full_store.store, now=NOW)
    est = next(e for e in drift.evaluators if e.evaluator == "helpful").estimates
    assert est is not None and est.rogan_gladen.value is not None and est.ppi.value is not None
    table = html[html.index('id="estimates-table"'):html.index("</table>", html.index('id="estimates-table"'))]
    assert f"{100 * est.rogan_gladen.value:.1f}%" in table and f"{100 * est.ppi.value:.1f}%" in table
    assert f"{100 * est.raw.value:.1f}%" in table  # type: ignore[operator]
    # calibration confusion matrix (test split) and the latest gate
    assert "confusion matrix, test split" in html and "pass rate 0.625 below threshold 0.700" in html
    assert "-0.175 [-0.361, 0.021], fisher-exact p=0.123" in html
    cm = full_store.confusion
    assert f"<th>human pass</th><td>{cm.tp}</td><td>{cm.fn}</td>" in html
    assert f"<th>human fail</th><td>{cm.fp}</td><td>{cm.tn}</td>" in html
    # new signatures with their volume; redundancy flags the pair that measures one thing
    new = html[html.index('id="new-signatures"'):]
    assert "refund: timeout" in new[:2000] and "<td>9</td>" in new[:2000]
    redundancy = html[html.index('id="redundancy-table"'):]
    assert re.search(r"brevity / length</td><td>0\.9\d\d</td>.*?probably redundant", redundancy, re.S)
    assert re.search(r"helpful / length</td><td>-?0\.[0-4]\d\d</td>.*?distinct", redundancy, re.S)
    # trace-derived text cannot break out of the page or the figure JSON
    assert XSS_LABEL not in html and "<script>window.__xss" not in html


def _browser_page(pw: Playwright, errors: list[str], requests: list[str]) -> Page:
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(20_000)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda r: requests.append(r.url))
    return page


def _rendered_charts(page: Page) -> int:
    """Plotly plots that have drawn an SVG with at least one trace."""
    return int(page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('svg.main-svg') "
        "&& p.querySelectorAll('.trace, .bars, .scatterlayer .trace').length > 0).length"))


@needs_chromium
def test_report_renders_in_headless_chromium_offline(full_store: Seeded, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = write_report(full_store.store, tmp_path / "report.html", now=NOW)
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        page = _browser_page(pw, errors, requests)
        page.goto(report.as_uri())
        page.wait_for_function(f"() => document.querySelectorAll('{PLOTS}').length >= 5")
        assert _rendered_charts(page) == 5
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert "refund: timeout" in page.inner_text("#new-signatures")
        page.screenshot(path=tmp_path / "report.png", full_page=True)
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert (tmp_path / "report.png").stat().st_size > 50_000


def _login(client: TestClient, name: str = "admin") -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    resp = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1), "next": "/"},
                       follow_redirects=False)
    assert resp.status_code == 303


def _app(tmp_path: Path, store: Store) -> FastAPI:
    settings = Settings(workspace=tmp_path, store_url=store.url, session_secret="test-secret")
    app = FastAPI()
    install_ui(app, settings, store)
    install_dashboard(app)
    add_user(store, "admin", PASSWORD, "admin")
    return app


@pytest.fixture
def live_store(tmp_path: Path) -> Iterator[Store]:
    """Three weeks of production ending yesterday: the dashboard computes at the real now."""
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    weeks = seed_production(store, shift=True, end=datetime.now(UTC) - timedelta(days=1))
    _signatures(store, weeks["w3"])
    yield store
    store.close()


def test_dashboard_needs_login_and_keeps_the_csp(live_store: Store, tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path, store_url=live_store.url, session_secret="test-secret")
    add_user(live_store, "admin", PASSWORD, "admin")
    with TestClient(create_app(settings, live_store)) as client:  # the app `assay serve` runs
        anon = client.get("/dashboard", follow_redirects=False)
        assert anon.status_code == 303 and anon.headers["location"] == "/login?next=/dashboard"
        _login(client)
        page = client.get("/dashboard")
        csp = page.headers["content-security-policy"]
        assert page.status_code == 200 and "script-src 'self';" in csp and "'unsafe-inline'" not in csp
        # the one addition: an empty inline <style> element (Plotly fills it through the CSSOM)
        empty_hash = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        assert csp == CSP.replace("style-src 'self'", f"style-src 'self' {empty_hash}")
        assert re.findall(r'data-chart="(chart-\w+)"', page.text) == [
            "chart-scores", "chart-estimates", "chart-agreement", "chart-signatures", "chart-map"]
        assert "<script>" not in page.text  # only external scripts and JSON data blocks
        assert 'href="/dashboard"' in page.text
        js = client.get("/dashboard/assets/plotly.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "plotly.js" in js.text[:200]
        assert client.get("/dashboard/assets/secrets.txt").status_code == 404


@pytest.fixture
def served(tmp_path: Path, live_store: Store) -> Iterator[str]:
    app = _app(tmp_path, live_store)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@needs_chromium
def test_dashboard_renders_in_headless_chromium_under_the_csp(served: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        page = _browser_page(pw, errors, requests)
        page.goto(f"{served}/dashboard")
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{served}/dashboard")
        page.wait_for_function(f"() => document.querySelectorAll('{PLOTS}').length >= 5")
        assert _rendered_charts(page) == 5
        page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    assert errors == [], errors
    assert all(u.startswith(served) or u.startswith("data:") for u in requests), requests


def test_a_few_days_of_production_show_day_by_day(full_store: Seeded, tmp_path: Path) -> None:
    """Scores and labels over three days of one week (a new workspace, the demo's replay): the drift section
    tests day against day, and agreement is drawn per day, not as one weekly point."""
    store = Store(f"sqlite:///{tmp_path / 'days.db'}")
    end = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # a Thursday: its week began on Monday the 23rd
    days = [end - timedelta(days=d, hours=8) for d in (2, 1, 0)]
    add_criterion(store, "Helps the user.", name="helpful")
    with store.session() as s:
        s.add(EvaluatorRow(name="helpful", version="a" * 12, kind="code", status="active",
                           definition={"name": "helpful", "threshold": 0.8, "criterion": {"name": "helpful"}}))
    run = new_run(store, "online", OnlineParams())
    lineage = Lineage(evaluator="helpful", evaluator_version="a" * 12, run_id=run, run_kind="online")
    for d, at in enumerate(days):
        units = [f"d{d}-{i}" for i in range(30)]
        store.add_units([make_unit(u) for u in units])
        verdicts = ["pass" if i >= 6 * d else "fail" for i in range(30)]  # the pass rate falls day by day
        write_scores(store, lineage, [NewScore(u, "helpful", "a" * 12, None, "scored", float(v == "pass"), v, "", None)
                                      for u, v in zip(units, verdicts, strict=True)], at=at)
        labelled = units[-5:]  # all scored pass; on day 3 one of them is labelled fail
        add_annotations(store, [Annotation(unit_id=u, annotator="expert", criterion="helpful",
                                           label="fail" if d == 2 and u == units[-1] else "pass",
                                           created_at=at + timedelta(hours=1)) for u in labelled])
    data = build_report_data(store, now=end)
    assert [(r.window.start, r.window.n_scored) for r in data.drift_rows] == [(at.date(), 30) for at in days]
    changes = [r.window.pass_rate_change for r in data.drift_rows]
    assert changes[0] is None and all(c is not None and c.delta < 0 for c in changes[1:])
    assert data.agreement_window == "day"
    figure = json.loads(data.charts["agreement"].figure_json)
    assert figure["data"][0]["x"] == [str(at.date()) for at in days]
    assert figure["data"][0]["y"] == [1.0, 1.0, 0.8]
    html = write_report(store, tmp_path / "days.html", now=end).read_text(encoding="utf-8")
    store.close()
    table = html[html.index('id="drift-table"'):html.index("</table>", html.index('id="drift-table"'))]
    assert table.count("<tr") == 4 and ("two-proportion z" in table or "fisher exact" in table)
    assert "per day of the label" in html
    assert build_report_data(full_store.store, now=NOW).agreement_window == "week"  # three weeks of labels
