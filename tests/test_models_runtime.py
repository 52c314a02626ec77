"""Judge runtime against a real local HTTP server: 429s with Retry-After, a hanging call, concurrency, re-runs."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from assay._store.store import Store
from assay.evaluators import BatchReport, EvaluationResult, EvaluatorDef, EvaluatorFailure, evaluate_many, render_prompt
from assay.exceptions import JudgeError
from assay.models import (
    AnthropicJudge,
    CachedJudge,
    JudgeReply,
    OpenAICompatibleJudge,
    RateLimiter,
    ResilientJudge,
    TransientJudgeError,
    parse_retry_after,
)
from assay.settings import JudgeSettings
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE

JUDGE = EvaluatorDef.model_validate({
    "name": "resolves", "kind": "llm_judge", "dimension": "task success",
    "criterion": {"name": "resolves", "text": "The agent resolves the user's request."}, "judge": {}})
REPLY = '{"reason": "The request was handled.", "verdict": "pass"}'


@dataclass
class FakeProvider:
    """State of the fake OpenAI-compatible server: which prompts get a 429 first, which one hangs."""

    throttled: set[str] = field(default_factory=set)
    hanging: set[str] = field(default_factory=set)
    hang_s: float = 3.0
    seen: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> JSONResponse:
            body: dict[str, Any] = await request.json()
            prompt = body["messages"][-1]["content"]
            with self.lock:
                self.seen[prompt].append(time.monotonic())
                attempt = len(self.seen[prompt])
            if prompt in self.hanging:
                await asyncio.sleep(self.hang_s)
            if prompt in self.throttled and attempt == 1:
                return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                    headers={"Retry-After": "1"})
            return JSONResponse({
                "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}})

        return app

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.seen.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[FakeProvider, str]]:
    """A real uvicorn server on a loopback port, in a thread, for the whole module."""
    fake = FakeProvider()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", ws="none", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake provider did not start"
        time.sleep(0.02)
    yield fake, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def units() -> list[Unit]:
    return read_file(AIRLINE).units


def _judge(base_url: str, store: Store) -> tuple[CachedJudge, ResilientJudge]:
    s = JudgeSettings(provider="openai", model="fake-judge", base_url=base_url, api_key="k", timeout_s=0.5)
    resilient = ResilientJudge(OpenAICompatibleJudge(s, max_retries=0), max_retries=2, backoff_s=0.2,
                               price_in_per_mtok=0.15, price_out_per_mtok=0.60)
    return CachedJudge(resilient, store), resilient


def test_200_units_with_429s_and_a_hang_all_finish_and_rerun_retries_only_the_failed(
        provider: tuple[FakeProvider, str], units: list[Unit], tmp_path: Path) -> None:
    fake, base_url = provider
    settings = JudgeSettings()
    prompts = {u.unit_id: render_prompt(JUDGE, u, settings) for u in units}
    assert len(units) == 200 and len(set(prompts.values())) == 200
    ids = sorted(prompts)
    throttled_ids = set(ids[::10] + ids[3::10] + ids[7::10])  # 30% of the units
    hung_id = ids[5]
    fake.throttled = {prompts[u] for u in throttled_ids}
    fake.hanging = {prompts[hung_id]}
    assert len(throttled_ids) == 60

    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    cached, resilient = _judge(base_url, store)
    t0 = time.perf_counter()
    first = evaluate_many(JUDGE, units, cached, settings, concurrency=16)
    elapsed = time.perf_counter() - t0
    report = BatchReport.of(first)
    assert report.n == 200 and report.scored == 199 and len(first) == 200
    assert set(report.retried) == throttled_ids | {hung_id}  # the hung call was retried too, then gave up
    assert report.failed == (hung_id,)
    failure = next(r for r in first if r.unit_id == hung_id)
    assert isinstance(failure, EvaluatorFailure) and "timed out after 0.5 s" in failure.error and failure.attempts == 3
    # Retry-After: 1 was obeyed: the second request of each throttled prompt came >= 1 s after the first
    gaps = [fake.seen[prompts[u]][1] - fake.seen[prompts[u]][0] for u in throttled_ids]
    assert min(gaps) >= 0.95
    assert elapsed < 30  # 60 one-second waits ran 16 at a time, not one after the other
    usage = resilient.usage
    assert (usage.calls, usage.retried_calls, usage.failed_calls, usage.attempts) == (200, 61, 1, 262)
    assert (usage.input_tokens, usage.output_tokens) == (199 * 100, 199 * 12)
    assert usage.cost_usd == pytest.approx(199 * (100 * 0.15 + 12 * 0.60) / 1e6)
    assert all(isinstance(r, EvaluationResult) and r.verdict == "pass" for r in first if r.unit_id != hung_id)

    # re-run once the provider recovered: the cache serves the 199, only the failed unit calls the model
    fake.hanging = set()
    before = fake.requests
    again, _ = _judge(base_url, store)
    second = evaluate_many(JUDGE, units, again, settings, concurrency=16)
    assert fake.requests - before == 1 and again.calls == 1 and again.hits == 199
    assert BatchReport.of(second).scored == 200


class Flaky:
    """A judge failing with the given errors first, then answering."""

    model_name = "flaky"

    def __init__(self, *errors: JudgeError) -> None:
        self.errors = list(errors)

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        if self.errors:
            raise self.errors.pop(0)
        return JudgeReply(text=REPLY, model=self.model_name, input_tokens=10, output_tokens=2)


def test_backoff_is_exponential_and_capped_unless_the_server_says() -> None:
    waits: list[float] = []
    judge = ResilientJudge(Flaky(*(TransientJudgeError("503", "flaky", 503) for _ in range(4))), max_retries=4,
                           backoff_s=0.5, max_backoff_s=3.0, sleep=waits.append)
    assert judge.complete([{"role": "user", "content": "x"}]).attempts == 5
    assert waits == [0.5, 1.0, 2.0, 3.0]
    waits.clear()
    told = ResilientJudge(Flaky(TransientJudgeError("429", "flaky", 429, retry_after=7.0)), sleep=waits.append)
    told.complete([{"role": "user", "content": "x"}])
    assert waits == [7.0]
    permanent = ResilientJudge(Flaky(JudgeError("bad key", "flaky")), sleep=waits.append)
    with pytest.raises(JudgeError, match="bad key"):
        permanent.complete([{"role": "user", "content": "x"}])
    assert permanent.usage.failed_calls == 1 and permanent.usage.attempts == 1


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_rate_limiter_holds_requests_and_tokens_per_minute() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    rpm = RateLimiter(rpm=3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        rpm.acquire()
    assert slept == []
    rpm.acquire()  # the 4th request of the minute waits until the first leaves the window
    assert now[0] == pytest.approx(60.0)
    now[0], slept[:] = 0.0, []
    tpm = RateLimiter(tpm=1000, clock=lambda: now[0], sleep=sleep)
    tpm.acquire(600)
    tpm.acquire(300)
    tpm.acquire(300)  # 1200 > 1000 within the minute: waits
    assert now[0] == pytest.approx(60.0)


# --- the Anthropic client against a recorded Messages API response (no network) ------------------------
ANTHROPIC_RECORDED = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": '{"reason": "The refund was issued.", "verdict": "pass"}'}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 812, "output_tokens": 17},
}


def anthropic_judge(handler: Any) -> AnthropicJudge:
    s = JudgeSettings(provider="anthropic", model="claude-haiku-4-5", api_key="sk-ant-test", timeout_s=5.0)
    return AnthropicJudge(s, http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_anthropic_judge_request_and_reply() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=ANTHROPIC_RECORDED)

    reply = anthropic_judge(handler).complete([{"role": "system", "content": "Be strict."},
                                               {"role": "user", "content": "judge this"}])
    assert (reply.text, reply.model, reply.input_tokens, reply.output_tokens) == (
        ANTHROPIC_RECORDED["content"][0]["text"], "claude-haiku-4-5-20251001", 812, 17)  # type: ignore[index]
    request, = seen
    body = json.loads(request.content)
    assert request.url.path == "/v1/messages"
    assert "sk-ant-test" in (request.headers.get("x-api-key", "") + request.headers.get("authorization", ""))
    assert body["system"] == "Be strict." and body["messages"] == [{"role": "user", "content": "judge this"}]
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 160


def test_anthropic_errors_are_transient_or_permanent() -> None:
    statuses = [429, 529, 200]

    def handler(request: httpx2.Request) -> httpx2.Response:
        status = statuses.pop(0)
        if status == 200:
            return httpx2.Response(200, json=ANTHROPIC_RECORDED)
        return httpx2.Response(status, headers={"retry-after": "2"},
                               json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})

    judge = anthropic_judge(handler)
    with pytest.raises(TransientJudgeError) as info:
        judge.complete([{"role": "user", "content": "x"}])
    assert (info.value.status, info.value.retry_after) == (429, 2.0)
    waits: list[float] = []
    reply = ResilientJudge(judge, sleep=waits.append).complete([{"role": "user", "content": "x"}])
    assert reply.attempts == 2 and waits == [2.0] and statuses == []

    def refused(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, json={"type": "error", "error": {"type": "authentication_error", "message": "no"}})

    with pytest.raises(JudgeError, match="AuthenticationError") as err:
        anthropic_judge(refused).complete([{"role": "user", "content": "x"}])
    assert not isinstance(err.value, TransientJudgeError)
