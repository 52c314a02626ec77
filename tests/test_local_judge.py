"""The local judge runs in its own process: a long prompt for real, and crashes (real signals) contained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from assay._store.store import Store
from assay.calibration.calibrate import save_evaluator_record
from assay.doctor import long_prompt
from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, evaluate_many, save_evaluator
from assay.exceptions import JudgeCrashed
from assay.models import JudgeReply, LocalLlamaJudge
from assay.models.base import ChatMessage
from assay.settings import JudgeSettings, load_settings
from assay.traces import read_file

from .conftest import AIRLINE, ROOT

JUDGE = EvaluatorDef.model_validate({
    "name": "resolves-request", "kind": "llm_judge", "dimension": "task success", "min_pass_rate": 0.0,
    "criterion": {"name": "resolves-request", "text": "The agent resolves the user's request as policy allows."},
    "judge": {}})
SHORT = JudgeSettings(max_prompt_chars=2500, max_tokens=24)


def test_real_local_judge_answers_a_prompt_of_600_tokens_in_its_own_process() -> None:
    judge = LocalLlamaJudge(JudgeSettings(max_tokens=16), n_threads=1)
    try:
        prompt = long_prompt()
        assert judge.count_tokens(prompt) >= 600
        reply = judge.complete([{"role": "user", "content": prompt}])
        assert reply.input_tokens is not None and reply.input_tokens >= 600
        assert reply.output_tokens and reply.text
        assert judge.pid is not None and judge.pid != os.getpid()
    finally:
        judge.close()
    assert judge.pid is None


class KillsOnce:
    """Delegates to a local judge; during call number ``at`` it sends ``sig`` to the judge's process."""

    def __init__(self, inner: LocalLlamaJudge, sig: int, at: int) -> None:
        self.inner, self.sig, self.at = inner, sig, at
        self.model_name = inner.model_name
        self.n = 0

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        self.n += 1
        if self.n == self.at:
            pid = self.inner.pid
            assert pid is not None
            threading.Timer(0.3, os.kill, (pid, self.sig)).start()  # mid-call: the prompt takes seconds
        return self.inner.complete(messages, json_schema)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGILL])
def test_a_killed_judge_process_makes_that_unit_an_error_and_the_rest_complete(sig: int) -> None:
    units = read_file(AIRLINE).units[:3]
    inner = LocalLlamaJudge(SHORT, n_threads=1)
    try:
        inner.load()
        first_pid = inner.pid
        results = evaluate_many(JUDGE, units, KillsOnce(inner, sig, at=2), SHORT)
    finally:
        inner.close()
    failed = results[1]
    assert isinstance(failed, EvaluatorFailure) and failed.status == "error", failed
    name = signal.Signals(sig).name
    assert f"killed by {name}" in failed.error
    if sig == signal.SIGILL:
        assert "CPU features this machine lacks" in failed.error and "GGML_NATIVE=OFF" in failed.error
    else:
        assert "out of memory" in failed.error
    for r in (results[0], results[2]):  # before and after the crash: a fresh process answered
        assert isinstance(r, EvaluationResult) or r.status == "unscored", r
    assert inner.crashes == 1 and inner.consecutive_crashes == 0
    assert first_pid is not None


def test_after_repeated_crashes_the_judge_fails_fast_with_the_reason(tmp_path: Path) -> None:
    judge = LocalLlamaJudge(SHORT, n_threads=1)
    try:
        for _ in range(3):
            judge.load()
            pid = judge.pid
            assert pid is not None
            os.kill(pid, signal.SIGILL)
            with pytest.raises(JudgeCrashed, match="SIGILL"):
                judge.complete([{"role": "user", "content": "hi"}])
        start = time.perf_counter()
        with pytest.raises(JudgeCrashed, match="not restarted: 3 crashes in a row"):
            judge.complete([{"role": "user", "content": "hi"}])
        assert time.perf_counter() - start < 1.0
    finally:
        judge.close()


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"assay._util.child_main" in cmdline:
            out.append(int(entry.name))
    return out


def test_gate_with_a_judge_killed_by_sigill_reports_errors_runs_the_code_check_and_exits_3(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "assay.toml").write_text('[judge]\nprovider = "local"\nmax_prompt_chars = 2500\nmax_tokens = 24\n'
                                   "n_threads = 1\n")
    store = Store(load_settings(ws).resolved_store_url())
    store.add_units(read_file(AIRLINE).units[:4])
    code = EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use", min_pass_rate=0.0,
                        criterion={"name": "tool-ok", "text": "Every tool call succeeds."},
                        code={"callable": "assay.evaluators.checks:no_tool_errors"})
    for defn in (code, JUDGE):
        save_evaluator(defn, ws / "evaluators" / f"{defn.name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="crash test")
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "assay._cli", "--workspace", str(ws), "gate", "--candidate",
                             "all", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    killed = False
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        children = _children_of(proc.pid)
        if children:
            time.sleep(1.0)  # loaded and busy with the first unit's prompt
            os.kill(children[0], signal.SIGILL)
            killed = True
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed, err
    assert proc.returncode == 3, out[-2000:] + err[-2000:]
    report = json.loads(out)
    rows = {e["evaluator"]: e for e in report["items"]}
    assert (rows["no-tool-errors"]["n"], rows["no-tool-errors"]["n_errors"]) == (4, 0)  # the other evaluator ran
    judge = rows["resolves-request"]
    assert judge["n_errors"] == 1 and judge["n_units"] == 4, judge  # the killed unit; the others answered
    assert "SIGILL" in out and "GGML_NATIVE=OFF" in out, json.dumps(judge["failures"])[:2000]
