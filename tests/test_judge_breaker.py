"""A dead judge fails fast: after ``[judge] breaker_after`` connection failures in a row (retries counted) the
circuit breaker stops the run with exit 3, naming the URL and model, instead of failing unit after unit.
The judge here is a real TCP server on loopback that accepts each connection and closes it at once (so the
attempts can be counted), and a port where nothing listens; ``assay doctor`` names the URL and model too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay.doctor import check_api_judge
from assay.evaluators import EvaluatorDef, evaluate_many
from assay.exceptions import JudgeUnreachable
from assay.models import JudgeReply, ResilientJudge
from assay.models.base import ChatMessage
from assay.models.runtime import CircuitBreaker, TransientJudgeError
from assay.settings import JudgeSettings, Settings
from tests.test_online import ingest as ingest_traces
from tests.test_online import make_workspace, otlp_trace

JUDGE_EVAL: dict[str, Any] = {
    "name": "cancels-politely", "kind": "llm_judge", "dimension": "tone",
    "criterion": {"name": "polite", "text": "The agent is polite."}, "judge": {"labels": {"pass": 1.0, "fail": 0.0}}}


class DeadJudge:
    """Accepts TCP connections on loopback and closes each at once; counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def dead() -> Iterator[DeadJudge]:
    server = DeadJudge()
    yield server
    server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the breaker ---------------------------------------------------------------------------------------
class Flaky:
    """An inner judge that fails the way it is told: ``None`` no answer, a number an HTTP status, ``"ok"`` a reply."""

    model_name = "m"

    def __init__(self, script: list[Any]) -> None:
        self.script, self.calls = script, 0

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "ok":
            return JudgeReply(text='{"verdict": "pass"}', model="m")
        raise TransientJudgeError("boom", "m", status=step)


MSG: list[ChatMessage] = [{"role": "user", "content": "hi"}]


def test_the_breaker_counts_attempts_without_an_answer_and_fails_fast_once_open() -> None:
    inner = Flaky([None])
    judge = ResilientJudge(inner, max_retries=3, sleep=lambda _s: None, breaker_after=5)  # type: ignore[arg-type]
    with pytest.raises(TransientJudgeError):
        judge.complete(MSG)  # 4 attempts: the breaker is still closed
    with pytest.raises(JudgeUnreachable) as err:
        judge.complete(MSG)  # the 5th attempt in a row without an answer opens it
    assert inner.calls == 5 and err.value.failures == 5 and "boom" in str(err.value)
    with pytest.raises(JudgeUnreachable):
        judge.complete(MSG)
    assert inner.calls == 5  # open: no call goes out
    # an HTTP answer (even a 503) shows the endpoint is there: it resets the count
    answering = ResilientJudge(Flaky([None, None, 503, None, None, None, "ok"]), max_retries=9,  # type: ignore[arg-type]
                               sleep=lambda _s: None, breaker_after=4)
    assert answering.complete(MSG).attempts == 7
    off = ResilientJudge(Flaky([None]), max_retries=20, sleep=lambda _s: None, breaker_after=0)  # type: ignore[arg-type]
    with pytest.raises(TransientJudgeError) as never:
        off.complete(MSG)
    assert not isinstance(never.value, JudgeUnreachable) and never.value.attempts == 21


def test_after_the_cooldown_one_trial_closes_or_reopens_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, "http://x/v1", "m", cooldown_s=30, clock=lambda: now[0])
    breaker.failed(TransientJudgeError("no", "m"))
    with pytest.raises(JudgeUnreachable, match="judge m at http://x/v1 is unreachable: 2 attempts"):
        breaker.failed(TransientJudgeError("no", "m"))
    now[0] = 29.0
    with pytest.raises(JudgeUnreachable):
        breaker.before_call()
    now[0] = 31.0
    breaker.before_call()  # half-open: a trial goes out
    with pytest.raises(JudgeUnreachable):
        breaker.failed(TransientJudgeError("still no", "m"))  # one failure reopens it
    now[0] = 62.0
    breaker.before_call()
    breaker.answered()
    breaker.before_call()
    assert breaker.failures == 0


def test_evaluate_many_stops_the_batch_on_an_open_breaker(dead: DeadJudge, tmp_path: Path) -> None:
    settings = JudgeSettings(provider="openai", model="fake-judge", base_url=dead.url, api_key="sk-test",
                             breaker_after=3, max_retries=1)
    from assay.models import make_judge
    from tests.ui_fixtures import make_unit

    judge = make_judge(settings)
    assert isinstance(judge, ResilientJudge)
    judge.backoff_s = 0.01
    units = [make_unit(f"u{i}") for i in range(10)]
    with pytest.raises(JudgeUnreachable) as err:
        evaluate_many(EvaluatorDef.model_validate(JUDGE_EVAL), units, judge, settings)
    assert dead.url in str(err.value) and "fake-judge" in str(err.value)
    assert dead.connections == 3  # unit 1: two attempts; unit 2: the third opens the breaker; units 3-10: none


def test_a_404_on_the_first_call_stops_the_batch_like_a_dead_judge(tmp_path: Path) -> None:
    """A wrong base_url path answers 404 on every call: no retry, no further unit, the URL named."""
    from assay.exceptions import JudgeNotFound
    from assay.models import make_judge
    from tests.test_cli_errors import NotFoundJudge
    from tests.ui_fixtures import make_unit

    server = NotFoundJudge()
    try:
        settings = JudgeSettings(provider="openai", model="fake-judge", base_url=server.url, api_key="sk-test",
                                 max_retries=3)
        with pytest.raises(JudgeNotFound) as err:
            evaluate_many(EvaluatorDef.model_validate(JUDGE_EVAL), [make_unit(f"u{i}") for i in range(10)],
                          make_judge(settings), settings)
    finally:
        server.close()
    assert isinstance(err.value, JudgeUnreachable) and err.value.url == server.url
    assert f"judge fake-judge at {server.url} answered HTTP 404 Not Found" in str(err.value)
    assert server.requests == 1


# --- the gate and doctor ---------------------------------------------------------------------------------
def _gate(ws: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "OPENAI_"))}
    env["OPENAI_API_KEY"] = "sk-test"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "assay", "--workspace", str(ws), "gate", "--candidate", "all",
                           "--junit", "gate.xml", "--markdown", "gate.md"], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ws)


def _workspace(tmp_path: Path, url: str) -> Path:
    judge = f'[judge]\nprovider = "openai"\nmodel = "fake-judge"\nbase_url = "{url}"\n'
    settings, store, _ = make_workspace(tmp_path, rate=0.0, evaluator=JUDGE_EVAL, judge=judge)
    ingest_traces(settings, store, [otlp_trace(f"order-{i}") for i in range(40)])
    store.close()
    return tmp_path


def test_an_unreachable_judge_stops_the_gate_naming_url_and_model(dead: DeadJudge, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, dead.url)
    done = _gate(ws)
    assert done.returncode == 3, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"judge fake-judge at {dead.url} is unreachable: 5 attempts in a row got no answer" in message, message
    assert "Traceback" not in done.stderr
    # breaker_after 5 (the default) with max_retries 3: the first unit's 4 attempts, the second unit's first
    assert dead.connections == 5


def test_a_closed_port_fails_the_gate_and_doctor_names_url_and_model(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    done = _gate(_workspace(tmp_path, url))
    assert done.returncode == 3 and f"judge fake-judge at {url} is unreachable" in " ".join(done.stderr.split())
    settings = Settings.model_validate({"judge": {"provider": "openai", "model": "fake-judge", "base_url": url}})
    check = check_api_judge(settings)  # no API key needed for a base_url of one's own
    assert check.status == "fail" and check.measured.startswith(f"openai judge fake-judge at {url}: "), check.measured
