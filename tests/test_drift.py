"""Drift over three weeks of synthetic production scores in a real SQLite store: a shift is
detected and alerted (log line, webhook to a real local HTTP server), a stable series is not."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay.settings import DriftSettings
from assay.suite.drift import Window, check_drift, compute_drift, distribution_test, two_proportion_test
from tests.drift_fixtures import NOW, seed_production


def _store(tmp_path: Path, shift: bool) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    seed_production(store, shift=shift, audit_items=shift)  # the stable store: plain labels, no audit items
    return store


@pytest.fixture
def shifted(tmp_path: Path) -> Iterator[Store]:
    store = _store(tmp_path, shift=True)
    yield store
    store.close()


@pytest.fixture
def stable(tmp_path: Path) -> Iterator[Store]:
    store = _store(tmp_path, shift=False)
    yield store
    store.close()


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 204

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "type": self.headers["Content-Type"],
                                    "json": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 204})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/drift", handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_two_proportion_test_matches_hand_z() -> None:
    c = two_proportion_test(80, 100, 60, 100)
    pooled = 140 / 200
    z = 0.2 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert c.test == "two-proportion z"
    assert c.p_value == pytest.approx(2 * stats.norm.sf(z))
    assert c.delta == pytest.approx(-0.2) and c.significant
    assert c.low is not None and c.high is not None and c.low < -0.2 < c.high < 0
    small = two_proportion_test(1, 4, 3, 4)
    assert small.test == "fisher exact" and small.p_value == pytest.approx(stats.fisher_exact([[1, 3], [3, 1]]).pvalue)
    assert distribution_test([0.5] * 5, [0.5] * 5).p_value == 1.0
    assert distribution_test([0.1, 0.2, 0.3] * 10, [0.7, 0.8, 0.9] * 10).significant
    with pytest.raises(ValueError, match="bad counts"):
        two_proportion_test(5, 0, 1, 1)


def test_a_pass_rate_shift_is_detected_and_the_stable_evaluator_is_not(shifted: Store) -> None:
    report = compute_drift(shifted, DriftSettings(), "week", now=NOW)
    by_name = {e.evaluator: e for e in report.evaluators}
    helpful, length = by_name["helpful"], by_name["length"]
    assert [str(w.start) for w in helpful.windows] == ["2026-11-09", "2026-11-16", "2026-11-23"]
    assert [w.n_scored for w in helpful.windows] == [168, 168, 168]
    w1, w2, w3 = helpful.windows
    assert w2.pass_rate_change is not None and not w2.pass_rate_change.significant
    assert w3.pass_rate_change is not None and w3.pass_rate_change.significant
    assert w3.pass_rate is not None and w2.pass_rate is not None and w3.pass_rate < w2.pass_rate - 0.15
    assert w3.pass_rate_change.delta == pytest.approx(w3.pass_rate - w2.pass_rate)
    # the code check: unscored counted beside, its continuous scores tested with Mann-Whitney U, no alert
    assert [w.n_unscored for w in length.windows] == [7, 7, 7] and length.windows[0].n_scored == 161
    assert length.windows[2].score_change is not None and not length.windows[2].score_change.significant
    kinds = {(a.evaluator, a.kind) for a in report.alerts}
    assert kinds == {("helpful", "pass_rate"), ("helpful", "judge_agreement")}
    assert report.exit_code == 1
    # judge drift: agreement ~0.9 then ~0.55 on the audit labels, below the 0.8 threshold
    agree = [a.agreement for a in helpful.agreement]
    assert agree[0] is not None and agree[0] > 0.8 and agree[-1] is not None and agree[-1] < 0.7
    assert helpful.agreement[-1].below_threshold and helpful.agreement[-1].n_pairs == 56
    assert helpful.audit_source == "audit_items" and length.audit_source == "none"
    # new failure signatures: only the one created two days ago, with its volume
    assert [(s.label, s.size) for s in report.new_signatures] == [("refund: timeout", 9)]
    # corrected estimates next to the raw rate for the latest week
    est = helpful.estimates
    assert est is not None and est.raw.value == pytest.approx(w3.pass_rate)
    assert est.rogan_gladen.value is not None and est.ppi.value is not None and est.ppi.n_labelled == 56


def test_a_stable_series_does_not_alert(stable: Store) -> None:
    windows: tuple[Window, ...] = ("week", "day")
    for window in windows:
        report = compute_drift(stable, DriftSettings(), window, now=NOW)
        assert report.alerts == () and report.exit_code == 0, report.alerts
        helpful = next(e for e in report.evaluators if e.evaluator == "helpful")
        tested = [w for w in helpful.windows if w.pass_rate_change is not None]
        assert len(tested) == (2 if window == "week" else 20)
        assert not helpful.agreement[-1].below_threshold
        assert helpful.audit_source == "all_labels" and sum(a.n_pairs for a in helpful.agreement) == 21 * 8
    daily = compute_drift(stable, DriftSettings(min_n=30), "day", now=NOW)
    assert all(w.pass_rate_change is None and "not tested" in w.note for w in daily.evaluators[0].windows[1:])


def test_alerts_are_logged_and_posted_to_the_webhook(shifted: Store, webhook: tuple[str, type[_Hook]],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    url, hook = webhook
    with caplog.at_level(logging.WARNING, logger="assay.drift"):
        report = check_drift(shifted, DriftSettings(webhook_url=url), "week", now=NOW)
    assert len(hook.received) == 1
    got = hook.received[0]
    assert got["path"] == "/hooks/drift" and got["type"] == "application/json"
    assert got["json"]["event"] == "drift" and got["json"]["window"] == "week"
    assert [a["kind"] for a in got["json"]["alerts"]] == [a.kind for a in report.alerts]
    assert got["json"]["new_signatures"][0]["size"] == 9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(report.alerts) == 2 and all("drift alert: helpful" in w for w in warnings)


def test_a_failing_webhook_is_logged_not_raised(shifted: Store, webhook: tuple[str, type[_Hook]],
                                                caplog: pytest.LogCaptureFixture) -> None:
    url, hook = webhook
    hook.status = 500
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/nothing-listens"
    with caplog.at_level(logging.ERROR, logger="assay.drift"):
        check_drift(shifted, DriftSettings(webhook_url=url), "week", now=NOW)
        check_drift(shifted, DriftSettings(webhook_url=dead, webhook_timeout_s=2), "week", now=NOW)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("answered HTTP 500" in e for e in errors) and any("nothing-listens failed" in e for e in errors)


def test_no_webhook_call_without_alerts(stable: Store, webhook: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook
    check_drift(stable, DriftSettings(webhook_url=url), "week", now=NOW)
    assert hook.received == []


def _cli(tmp_path: Path, *args: str) -> Any:
    (tmp_path / "assay.toml").write_text(f'store_url = "sqlite:///{tmp_path / "assay.db"}"\n', encoding="utf-8")
    return CliRunner().invoke(app, ["-w", str(tmp_path), "drift", *args])


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    store = _store(tmp_path, shift=True)
    store.close()
    # The fixture's weeks end 2026-11-29: look back far enough from today to include them.
    result = _cli(tmp_path, "--json", "--periods", "400")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["window"] == "week" and {a["kind"] for a in data["alerts"]} >= {"pass_rate"}
    assert data["exit_code"] == 1
    assert _cli(tmp_path, "--periods", "400").exit_code == 1
    assert _cli(tmp_path, "--window", "month").exit_code == 2
    text = _cli(tmp_path, "--window", "day", "--periods", "3000")
    assert text.exit_code in (0, 1) and "helpful" in text.stdout and "Rogan-Gladen" in text.stdout


def test_cli_no_production_scores_exits_0(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 'assay.db'}").close()
    result = _cli(tmp_path)
    assert result.exit_code == 0, result.output
    assert "no production scores" in result.stdout


def test_a_new_evaluator_version_is_named_as_a_possible_cause(shifted: Store) -> None:
    from sqlalchemy import update

    from assay._store.tables import ScoreRow

    with shifted.session() as s:
        s.execute(update(ScoreRow).where(ScoreRow.evaluator_name == "helpful",
                                         ScoreRow.created_at >= datetime(2026, 11, 23))
                  .values(evaluator_version="d" * 12))
    report = compute_drift(shifted, DriftSettings(), "week", now=NOW)
    helpful = next(e for e in report.evaluators if e.evaluator == "helpful")
    assert helpful.windows[2].versions == ("d" * 12,) and helpful.windows[1].versions == ("a" * 12,)
    assert "version changed" in helpful.windows[2].note and "version changed" not in helpful.windows[1].note
    alert = next(a for a in report.alerts if a.kind == "pass_rate")
    assert "a change may come from the evaluator" in alert.message
