"""OTLP/HTTP ingestion throughput of ``assay serve``: protobuf and JSON.

Workload: ``--spans N`` (default 100,000) spans in multi-turn agent traces: per trace one
``invoke_agent`` root, then per turn a ``chat`` span (OTel GenAI ``gen_ai.input.messages`` /
``gen_ai.output.messages`` holding the growing conversation, 0.3-3 KB per message) and an
``execute_tool`` span (JSON arguments, a 0.2-2 KB result); 8 turns per trace, ids random, times
real. Batches of 512 spans (the OTel SDK ``BatchSpanProcessor`` default), sent by 4 concurrent
clients to a fresh ``assay serve`` (its own process, SQLite store in a temp folder) once as
``application/x-protobuf`` and once as ``application/json``.

Measured per encoding: spans/s over the wall time of the whole send (every batch acknowledged
= committed; 429/502/503/504 are retried with backoff, as OTLP exporters do, and counted),
p50/p99 request latency until accepted, the server's peak RSS (``VmHWM``), and the spans in the
store afterwards (must equal the spans sent).

The same protobuf workload then goes to Arize Phoenix (``phoenix serve`` from ``arize-phoenix``,
loopback, its SQLite default in a temp folder; it takes protobuf only) when ``--phoenix`` names its
executable (default: ``phoenix`` on PATH; install it in a separate venv, it is large). Phoenix
acknowledges a request *before* it writes (spans are queued and inserted in the background), so
two rates are reported: ``ack_spans_per_s`` (send time, comparable in meaning to nothing assay
does) and ``spans_per_s`` until every span is in its database (comparable to assay's, whose
acknowledgement means committed). Without Phoenix, ``phoenix`` in the result says why.

    python benchmarks/bench_ingest.py                  # 100,000 spans
    python benchmarks/bench_ingest.py --spans 10000    # quicker
    python benchmarks/bench_ingest.py --phoenix /tmp/phx/bin/phoenix

Writes ``benchmarks/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "ingest.json"
BATCH = 512
CLIENTS = 4
TURNS = 8
WORDS = ["flight", "booking", "refund", "order", "customer", "policy", "baggage", "seat", "upgrade", "cancel",
         "change", "date", "payment", "card", "account", "status", "delay", "reservation", "itinerary",
         "loyalty", "points", "airport"]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi) // 7
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _msg(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def make_trace(rng: random.Random, t0: int) -> list[dict[str, Any]]:
    """One agent trace as plain span dicts: ids (hex), name, times (ns), attributes (str/int)."""
    trace_id = f"{rng.getrandbits(128):032x}"
    root = f"{rng.getrandbits(64):016x}"
    conv = f"conv-{rng.getrandbits(40):010x}"
    spans = [{"trace_id": trace_id, "span_id": root, "parent": "", "name": "invoke_agent support", "start": t0,
              "end": t0 + (TURNS * 2 + 1) * 1_000_000,
              "attrs": {"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": conv}}]
    history = [_msg("system", _text(rng, 800, 3000))]
    t = t0
    for turn in range(TURNS):
        history.append(_msg("user", _text(rng, 50, 400)))
        call_id = f"call_{rng.getrandbits(48):012x}"
        args = json.dumps({"order_id": rng.randint(1000, 9999), "reason": _text(rng, 20, 120)})
        out = [{"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 100, 600)},
                                                {"type": "tool_call", "id": call_id, "name": "lookup",
                                                 "arguments": json.loads(args)}]}]
        spans.append({"trace_id": trace_id, "span_id": f"{rng.getrandbits(64):016x}", "parent": root,
                      "name": "chat gpt-4o", "start": t + 1_000, "end": t + 800_000,
                      "attrs": {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                "gen_ai.request.model": "gpt-4o", "gen_ai.input.messages": json.dumps(history),
                                "gen_ai.output.messages": json.dumps(out),
                                "gen_ai.usage.input_tokens": rng.randint(200, 4000),
                                "gen_ai.usage.output_tokens": rng.randint(10, 300)}})
        spans.append({"trace_id": trace_id, "span_id": f"{rng.getrandbits(64):016x}", "parent": root,
                      "name": "execute_tool lookup", "start": t + 810_000, "end": t + 990_000,
                      "attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
                                "gen_ai.tool.call.id": call_id, "gen_ai.tool.call.arguments": args,
                                "gen_ai.tool.call.result": _text(rng, 200, 2000)}})
        history.append(out[0])
        t += 2_000_000
        _ = turn
    return spans


def workload(n_spans: int, seed: int = 7) -> list[list[dict[str, Any]]]:
    """Batches of span dicts, ``BATCH`` spans each, ``n_spans`` in all."""
    rng = random.Random(seed)
    spans: list[dict[str, Any]] = []
    t0 = 1_760_000_000_000_000_000
    while len(spans) < n_spans:
        spans.extend(make_trace(rng, t0 + len(spans) * 1_000_000))
    spans = spans[:n_spans]
    return [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]


def _pb_value(v: Any) -> AnyValue:
    return AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=str(v))


def encode_protobuf(batch: list[dict[str, Any]]) -> bytes:
    spans = [PbSpan(trace_id=bytes.fromhex(s["trace_id"]), span_id=bytes.fromhex(s["span_id"]),
                    parent_span_id=bytes.fromhex(s["parent"]), name=s["name"], start_time_unix_nano=s["start"],
                    end_time_unix_nano=s["end"],
                    attributes=[KeyValue(key=k, value=_pb_value(v)) for k, v in s["attrs"].items()])
             for s in batch]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    return req.SerializeToString()


def encode_json(batch: list[dict[str, Any]]) -> bytes:
    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}

    spans = [{"traceId": s["trace_id"], "spanId": s["span_id"], "parentSpanId": s["parent"], "name": s["name"],
              "startTimeUnixNano": str(s["start"]), "endTimeUnixNano": str(s["end"]),
              "attributes": [{"key": k, "value": value(v)} for k, v in s["attrs"].items()]} for s in batch]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


RETRYABLE = {429, 502, 503, 504}


def _send_all(url: str, bodies: list[bytes], content_type: str) -> tuple[float, list[float], int]:
    """POST every body with ``CLIENTS`` concurrent clients, retrying 429/502/503/504 with backoff as
    an OTLP exporter does: (wall seconds, sorted latencies until accepted, retries)."""
    latencies: list[float] = []
    retries: list[int] = []

    def send(body: bytes) -> None:
        with httpx.Client(timeout=300) as client:
            t = time.perf_counter()
            attempt = 0
            while True:
                r = client.post(url, content=body, headers={"content-type": content_type})
                if r.status_code not in RETRYABLE or time.perf_counter() - t > 1800:
                    break
                retries.append(1)
                time.sleep(min(2.0, 0.25 * 2 ** attempt))
                attempt += 1
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, bodies))
    return time.perf_counter() - start, sorted(latencies), len(retries)


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


def _figures(n_spans: int, wall: float, latencies: list[float]) -> dict[str, Any]:
    return {"spans": n_spans, "wall_s": round(wall, 2), "spans_per_s": round(n_spans / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1)}


def run_phoenix(exe: str, bodies: list[bytes], n_spans: int) -> dict[str, Any]:
    """Send the protobuf bodies to a fresh ``phoenix serve``; wait until all spans are stored."""
    with tempfile.TemporaryDirectory() as ws:
        port, grpc = _free_port(), _free_port()
        env = {**os.environ, "PHOENIX_WORKING_DIR": ws, "PHOENIX_PORT": str(port), "PHOENIX_HOST": "127.0.0.1",
               "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_TELEMETRY_ENABLED": "false"}
        proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            start = time.perf_counter()
            ack_wall, latencies, retries = _send_all(f"http://127.0.0.1:{port}/v1/traces", bodies,
                                                     "application/x-protobuf")
            stored = 0
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                with sqlite3.connect(Path(ws) / "phoenix.db", timeout=30) as db:
                    stored = db.execute("SELECT count(*) FROM spans").fetchone()[0]
                if stored >= n_spans:
                    break
                time.sleep(0.5)
            wall = time.perf_counter() - start
            rss = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    out = _figures(n_spans, wall, latencies)
    out.update({"ack_wall_s": round(ack_wall, 2), "ack_spans_per_s": round(n_spans / ack_wall, 1), "retries": retries,
                "peak_rss_mb": round(rss, 1), "stored_spans": stored})
    return out


def run_assay(bodies: list[bytes], content_type: str, n_spans: int) -> dict[str, Any]:
    """Send every body to a fresh ``assay serve``; the figures of one encoding."""
    with tempfile.TemporaryDirectory() as ws:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "assay", "-w", ws, "serve", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/health", proc)
            wall, latencies, retries = _send_all(f"http://127.0.0.1:{port}/v1/traces", bodies, content_type)
            rss = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        with sqlite3.connect(Path(ws) / ".assay" / "assay.db") as db:
            stored = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    out = _figures(n_spans, wall, latencies)
    out.update({"requests": len(bodies), "retries": retries, "peak_rss_mb": round(rss, 1), "stored_spans": stored,
                "mb_sent": round(sum(len(b) for b in bodies) / 1e6, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--skip-assay", action="store_true",
                        help="keep the assay figures of the previous result file (Phoenix only)")
    parser.add_argument("--phoenix", default=shutil.which("phoenix"),
                        help="the `phoenix` executable of an arize-phoenix install (default: on PATH)")
    args = parser.parse_args()
    batches = workload(args.spans)
    result: dict[str, Any] = {
        "workload": {"spans": args.spans, "batch_spans": BATCH, "clients": CLIENTS, "turns_per_trace": TURNS,
                     "spans_per_trace": 1 + 2 * TURNS},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "assay": {},
        "phoenix": {"skipped": "no `phoenix` executable (pass --phoenix; arize-phoenix is a large install)"},
    }
    if args.skip_assay:
        result["assay"] = json.loads(RESULT.read_text())["assay"]
    else:
        for name, encode, ctype in (("protobuf", encode_protobuf, "application/x-protobuf"),
                                    ("json", encode_json, "application/json")):
            bodies = [encode(b) for b in batches]
            result["assay"][name] = run_assay(bodies, ctype, args.spans)
            print(name, json.dumps(result["assay"][name]), flush=True)
            _write(result)
    if args.phoenix:
        result["phoenix"] = run_phoenix(args.phoenix, [encode_protobuf(b) for b in batches], args.spans)
        print("phoenix", json.dumps(result["phoenix"]), flush=True)
        result["assay_vs_phoenix_protobuf"] = round(
            result["assay"]["protobuf"]["spans_per_s"] / result["phoenix"]["spans_per_s"], 2)
    _write(result)
    print(f"wrote {RESULT}")


def _write(result: dict[str, Any]) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
