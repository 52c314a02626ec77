"""Judge-call throughput against a local OpenAI-compatible server that answers after a fixed delay.

A small FastAPI app (uvicorn, loopback port, a child process) answers every chat completion after
``--latency`` seconds (default 0.2). assay scores 250 real units (tau-bench airline and retail)
with two llm_judge evaluators = 500 judge calls, through the same stack ``make_judge`` builds
(cache -> retries/limits -> OpenAI SDK client) at ``--concurrency`` calls in flight (default 16).
The bound is concurrency / latency calls per second; the result is the share of it reached
(goal >= 90%). Then the same batches run again with a fresh cache wrapper over the same store:
the model-call count of that re-run must be 0.

    python benchmarks/bench_judge.py          # writes benchmarks/results/judge.json

Not measured here (left for later): the same against ``llama_cpp.server`` with the local model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

from assay._store.store import Store
from assay.evaluators import BatchReport, EvaluatorDef, evaluate_many
from assay.models import CachedJudge, OpenAICompatibleJudge, ResilientJudge
from assay.settings import JudgeSettings
from assay.traces import Unit, read_file

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = [DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json",
           DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"]
RESULTS = Path(__file__).parent / "results" / "judge.json"
REPLY = '{"reason": "The request was handled.", "verdict": "pass"}'


def fake_provider(latency_s: float, counter: list[int]) -> FastAPI:
    """An OpenAI-compatible chat-completions endpoint answering after ``latency_s`` seconds."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict[str, Any]:
        body = await request.json()
        counter[0] += 1
        await asyncio.sleep(latency_s)
        return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 14, "total_tokens": 914}}

    return app


def serve(port: int, latency_s: float) -> None:
    """Run the fake provider in this process (the benchmark starts it as a child process, so the
    server does not share the client's interpreter lock); ``GET /count`` gives its request count."""
    counter = [0]
    app = fake_provider(latency_s, counter)

    @app.get("/count")
    async def count() -> dict[str, int]:
        return {"requests": counter[0]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none")


def start(latency_s: float) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(latency_s)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/count", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("fake provider did not start") from None
            time.sleep(0.1)
    return proc, base


def requests_served(base: str) -> int:
    count: int = httpx.get(f"{base}/count", timeout=5).json()["requests"]
    return count


def evaluators() -> list[EvaluatorDef]:
    texts = {"resolves": "The agent resolves the user's request as policy allows.",
             "tool-ok": "Every tool call the agent makes succeeds."}
    return [EvaluatorDef.model_validate({"name": n, "kind": "llm_judge", "dimension": n,
                                         "criterion": {"name": n, "text": t}, "judge": {}}) for n, t in texts.items()]


def run(units: list[Unit], store: Store, settings: JudgeSettings, concurrency: int) -> dict[str, Any]:
    resilient = ResilientJudge(OpenAICompatibleJudge(settings, max_retries=0), max_retries=settings.max_retries)
    judge = CachedJudge(resilient, store)
    t0 = time.perf_counter()
    reports = [BatchReport.of(evaluate_many(d, units, judge, settings, concurrency=concurrency))
               for d in evaluators()]
    wall = time.perf_counter() - t0
    return {"calls": len(units) * len(reports), "model_calls": judge.calls, "cache_hits": judge.hits,
            "wall_s": round(wall, 3), "scored": sum(r.scored for r in reports),
            "failed": sum(len(r.failed) for r in reports), "retried": sum(len(r.retried) for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server answer delay in seconds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--units", type=int, default=250, help="units per evaluator (2 evaluators)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.latency)
        return
    units = [u for path in SOURCES for u in read_file(path).units][: args.units]
    proc, base = start(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/bench.db")
            settings = JudgeSettings(provider="openai", model="bench-judge", base_url=f"{base}/v1", api_key="k",
                                     timeout_s=10, concurrency=args.concurrency)
            first = run(units, store, settings, args.concurrency)
            server_first = requests_served(base)
            cached = run(units, store, settings, args.concurrency)
            server_cached = requests_served(base) - server_first
            store.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bound = args.concurrency / args.latency
    throughput = first["model_calls"] / first["wall_s"]
    result = {
        "benchmark": "judge calls against a local OpenAI-compatible FastAPI server with fixed latency",
        "latency_s": args.latency, "concurrency": args.concurrency, "calls": first["calls"],
        "bound_calls_per_s": bound, "throughput_calls_per_s": round(throughput, 2),
        "share_of_bound": round(throughput / bound, 3), "goal_share_of_bound": 0.9,
        "first_run": {**first, "server_requests": server_first},
        "cached_rerun": {**cached, "server_requests": server_cached},
        "cached_rerun_model_calls": cached["model_calls"],
        "llama_cpp_server": "not measured (left undone)",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
