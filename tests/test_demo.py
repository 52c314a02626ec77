"""`assay demo` end to end on the real data (slow: minutes; `make test` runs it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assay._store import Store
from assay._store.tables import UnitRow
from assay.calibration import build_dataset
from assay.signatures import lifecycle_history

from .conftest import DATA, ROOT


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    started = datetime.now(UTC)
    proc = subprocess.run([sys.executable, "-m", "assay._cli", "demo", "--data", str(DATA), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # rich wraps lines at the terminal's width
    for expected in ("200 units (84 reward 1, 116 reward 0)", "100 units (73 reward 1, 27 reward 0)",
                     "failure signals alone on 300 units; 143 failed by the reward", "ROC AUC of the failure score",
                     "AgentRx dataset's own human annotations", "signal mix", "8. production",
                     "signatures after the worker's passes", "Production replayed over 6 days",
                     "calibration: no-tool-errors", "calibration: resolves-request-judge", "Cohen's kappa",
                     "gate", "wrote"):
        assert expected in text, expected
    # failed = a failure score at or above fail_at: every recorded failure, plus what the signals add
    stored = re.search(r"(\d+) units count as failed [^:]*?, (\d+) of them by their recorded outcome", text)
    assert stored is not None and int(stored.group(2)) == 143 and int(stored.group(1)) >= 143
    assert f"top signatures of {stored.group(1)} failed units" in text
    worker = re.search(r"day 0 \([-\d]+\): worker: [^│]*?no-tool-errors@\w+: (\d+) scored", text)
    assert worker is not None and int(worker.group(1)) == 300
    # production replayed day by day: the last replayed day is yesterday, each day's units all scored
    days = re.findall(r"day (\d) \((\d{4}-\d\d-\d\d)\): (\d+) units, (\d+) scored", text)
    yesterday = {str((at - timedelta(days=1)).date()) for at in (started, datetime.now(UTC))}
    assert [int(d) for d, *_ in days] == [1, 2, 3, 4, 5] and days[-1][1] in yesterday
    assert all(units == scored == "50" for *_, units, scored in days)
    report = (out / "report.html").read_text()
    sections = re.findall(r'<h2 id="(\w+)">', report)
    assert sections.index("scores") < sections.index("redundancy")  # sections with data first
    for key in ("drift", "scores", "estimates", "agreement"):  # the production sections have data: first
        assert sections.index(key) < sections.index("redundancy") and f'id="{key}-empty"' not in report, key
    scores = _chart(report, "chart-scores")[0]
    assert len(scores["x"]) == 6 and scores["y"][3] == 1.0  # six days; day 3 the release without tool errors
    assert len(_chart(report, "chart-agreement")[0]["x"]) > 1
    drift = report[report.index('id="drift-table"'):report.index("</table>", report.index('id="drift-table"'))]
    assert drift.count("<tr") == 7 and "resolved -&gt; regressed" in report  # 6 days, and the lifecycle alert
    assert "Failure signatures" in report and "Calibration" in report and "Gate" in report
    assert not re.search(r"<script[^>]+src=", report)  # plotly inlined: opens without a network
    store = Store(f"sqlite:///{out / '.assay' / 'assay.db'}")
    ds = build_dataset(store, "resolves-request")
    assert ds.balance == {"fail": 27, "pass": 73}
    with store.session() as s:  # the replayed units: production, no recorded outcome
        replayed = list(s.query(UnitRow).filter(UnitRow.unit_id.like("prod/%")))
    assert len(replayed) == 250
    assert {(u.env, u.outcome, u.reward) for u in replayed} == {("production", "unknown", None)}
    changes = lifecycle_history(store)
    assert len({c.at.date() for c in changes}) >= 3  # day 0, the fix, the bad release
    assert [(c.from_state, c.to_state) for c in changes if c.from_state] == [("monitored", "resolved"),
                                                                             ("resolved", "regressed")]
    assert list((out / "evaluators").glob("*.yaml"))


def _chart(report: str, chart_id: str) -> list[dict[str, list[object]]]:
    block = re.search(rf'<script type="application/json" id="{chart_id}">(.*?)</script>', report, re.S)
    assert block is not None, chart_id
    return list(json.loads(block.group(1))["data"])
