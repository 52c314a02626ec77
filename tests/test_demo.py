"""`assay demo` end to end on the real data (slow: minutes; `make test` runs it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from assay._store import Store
from assay.calibration import build_dataset

from .conftest import DATA, ROOT


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "assay._cli", "demo", "--data", str(DATA), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # rich wraps lines at the terminal's width
    for expected in ("200 units (84 reward 1, 116 reward 0)", "100 units (73 reward 1, 27 reward 0)",
                     "failure signals alone on 300 units; 143 failed by the reward", "ROC AUC of the failure score",
                     "AgentRx dataset's own human annotations", "signal mix", "8. production",
                     "signatures after the worker's pass",
                     "calibration: no-tool-errors", "calibration: resolves-request-judge", "Cohen's kappa",
                     "gate", "wrote"):
        assert expected in text, expected
    # failed = a failure score at or above fail_at: every recorded failure, plus what the signals add
    stored = re.search(r"(\d+) units count as failed [^:]*?, (\d+) of them by their recorded outcome", text)
    assert stored is not None and int(stored.group(2)) == 143 and int(stored.group(1)) >= 143
    assert f"top signatures of {stored.group(1)} failed units" in text
    worker = re.search(r"worker: [^│]*?no-tool-errors@\w+: (\d+) scored", text)
    assert worker is not None and int(worker.group(1)) == 300
    report = (out / "report.html").read_text()
    sections = re.findall(r'<h2 id="(\w+)">', report)
    assert sections.index("scores") < sections.index("redundancy")  # sections with data first
    assert "Failure signatures" in report and "Calibration" in report and "Gate" in report
    assert not re.search(r"<script[^>]+src=", report)  # plotly inlined: opens without a network
    store = Store(f"sqlite:///{out / '.assay' / 'assay.db'}")
    ds = build_dataset(store, "resolves-request")
    assert ds.balance == {"fail": 27, "pass": 73}
    assert list((out / "evaluators").glob("*.yaml"))
