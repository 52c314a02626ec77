"""Does online scoring slow ingestion? OTLP/HTTP ingest throughput of ``assay serve`` with no
worker, with ``--worker`` idle, and with ``--worker`` busy scoring (a code evaluator; the local
SmolLM2 judge through llama.cpp).

Workload: the agent traces of ``bench_ingest.py`` (17 spans per trace, GenAI chat and tool spans
with 0.2-3 KB messages, one conversation id per trace, so each trace is a session unit whose
timestamps are old enough to be complete at once), ``--spans N`` (default 17,408 = 34 requests
of 512) sent as protobuf by 4 concurrent clients. Each scenario gets a fresh workspace and server:

* ``no_worker``: ``assay serve``;
* ``worker_idle``: ``assay serve --worker`` with an active evaluator at ``sample_rate`` 0 (the
  worker polls every second and finds nothing to score);
* ``worker_busy_code``: ``--worker`` with the ``no_tool_errors`` code check at ``sample_rate`` 1
  and a backlog of ``--backlog`` spans ingested (unmeasured) before the window, so it scores the
  whole time;
* ``worker_busy_judge``: ``--worker`` with an ``llm_judge`` evaluator at ``sample_rate`` 1 on the
  local SmolLM2-135M judge (1 thread, 1,500 prompt characters), busy from the first unit.

The worker runs at the default ``[online] niceness`` (19, the lowest priority). Reported per scenario (median over
``--repeats`` rounds, scenarios interleaved): spans/s over the whole send, p50/p99 request
latency, the worker's CPU use in the window (CPU seconds / wall seconds; 1.0 = one core) and the
units it scored in the window, and the spans stored (must equal those sent, backlog included). The machine's load
average before and after is recorded: on a shared 2-core machine the figures move with it.

    flock /tmp/assay-bench.lock python benchmarks/bench_online.py
    python benchmarks/bench_online.py --spans 8704 --repeats 1 --skip-judge

Writes ``benchmarks/results/online.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest import _free_port, _send_all, _wait_http, encode_protobuf, workload  # noqa: E402

from assay.settings import OnlineSettings  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "online.json"
CRITERION = {"name": "no-tool-errors", "text": "The agent answers the user and every tool call succeeds."}
EVALUATORS: dict[str, dict[str, Any] | None] = {
    "no_worker": None,
    "worker_idle": {"name": "no-tool-errors", "kind": "code", "dimension": "tool_use", "criterion": CRITERION,
                    "code": {"callable": "assay.evaluators.checks:no_tool_errors"}, "sample_rate": 0.0},
    "worker_busy_code": {"name": "no-tool-errors", "kind": "code", "dimension": "tool_use", "criterion": CRITERION,
                         "code": {"callable": "assay.evaluators.checks:no_tool_errors"}, "sample_rate": 1.0},
    "worker_busy_judge": {"name": "resolves-request", "kind": "llm_judge", "dimension": "task success",
                          "criterion": CRITERION, "judge": {}, "sample_rate": 1.0},
}


def _prepare(ws: Path, evaluator: dict[str, Any] | None) -> None:
    """assay.toml, the evaluator file, and the evaluator activated in the store."""
    from assay._store import Store
    from assay.calibration.calibrate import save_evaluator_record
    from assay.evaluators import EvaluatorDef, save_evaluator

    (ws / "assay.toml").write_text('[judge]\nprovider = "local"\nn_threads = 1\nmax_prompt_chars = 1500\n'
                                   'max_tokens = 96\n[online]\npoll_interval_s = 1.0\nbatch_size = 16\n')
    store = Store(f"sqlite:///{ws / '.assay' / 'assay.db'}")
    if evaluator is not None:
        defn = EvaluatorDef.model_validate(evaluator)
        save_evaluator(defn, ws / "evaluators" / f"{defn.name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="benchmark")
    store.close()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scores(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM scores").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait_settled(pid: int | None, deadline_s: float = 60) -> None:
    """Until the worker process has finished starting (imports, first pass): under 0.15 core for 1 s."""
    end = time.monotonic() + deadline_s
    while pid is not None and time.monotonic() < end:
        before = _cpu_s(pid)
        time.sleep(1.0)
        if _cpu_s(pid) - before < 0.15:
            return


def _wait_busy(db: Path, proc_pid: int, deadline_s: float = 180) -> None:
    """Until the worker has scored its first unit (the judge loaded), so the window measures it busy."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and _scores(db) == 0:
        time.sleep(0.5)
    if _scores(db) == 0:
        raise RuntimeError(f"worker of server {proc_pid} scored nothing in {deadline_s} s")


def run_scenario(name: str, bodies: list[bytes], backlog: list[bytes], n_spans: int) -> dict[str, Any]:
    """One fresh server; the figures of one scenario."""
    evaluator = EVALUATORS[name]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        _prepare(ws, evaluator)
        port = _free_port()
        cmd = [sys.executable, "-m", "assay", "-w", str(ws), "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd + (["--worker"] if evaluator else []), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        db = ws / ".assay" / "assay.db"
        url = f"http://127.0.0.1:{port}"
        worker: int | None = None
        try:
            _wait_http(f"{url}/health", proc)
            worker = next(iter(_children(proc.pid)), None)
            if name.startswith("worker_busy"):
                _send_all(f"{url}/v1/traces", backlog, "application/x-protobuf")
                _wait_busy(db, proc.pid)
            elif worker is not None:
                _wait_settled(worker)
            cpu0, scored0 = _cpu_s(worker), _scores(db)
            wall, latencies, retries = _send_all(f"{url}/v1/traces", bodies, "application/x-protobuf")
            cpu1, scored1 = _cpu_s(worker), _scores(db)
        finally:
            proc.terminate()
            proc.wait(timeout=180)
        left = worker is not None and Path(f"/proc/{worker}").exists()
        if left:  # never leave a worker behind to load the next scenario
            raise RuntimeError(f"worker {worker} outlived its server")
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    return {"spans": n_spans, "wall_s": round(wall, 2), "spans_per_s": round(n_spans / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
            "retries": retries, "worker_cpu": round((cpu1 - cpu0) / wall, 2) if worker else None,
            "worker_scored_in_window": scored1 - scored0, "stored_spans": stored,
            "expected_spans": n_spans + (_backlog_spans(backlog) if name.startswith("worker_busy") else 0)}


def _backlog_spans(backlog: list[bytes]) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    n = 0
    for body in backlog:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        n += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    return n


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("spans_per_s", "p50_ms", "p99_ms", "worker_cpu", "worker_scored_in_window"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=17_408)
    parser.add_argument("--backlog", type=int, default=4_096, help="spans ingested before a busy window")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-judge", action="store_true", help="leave out the local-judge scenario")
    args = parser.parse_args()
    bodies = [encode_protobuf(b) for b in workload(args.spans, seed=11)]
    backlog = [encode_protobuf(b) for b in workload(args.backlog, seed=23)]
    names = [n for n in EVALUATORS if not (args.skip_judge and n == "worker_busy_judge")]
    result: dict[str, Any] = {
        "workload": {"spans": args.spans, "backlog_spans": args.backlog, "batch_spans": 512, "clients": 4,
                     "encoding": "protobuf", "repeats": args.repeats,
                     "worker_niceness": OnlineSettings().niceness},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
        "scenarios": {}}
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(args.repeats):
        for name in names:
            figures = run_scenario(name, bodies, backlog, args.spans)
            runs[name].append(figures)
            print(f"round {rnd + 1} {name}: {json.dumps(figures)}", flush=True)
    for name in names:
        result["scenarios"][name] = _median(runs[name])
    base = result["scenarios"]["no_worker"]["spans_per_s"]
    result["throughput_vs_no_worker"] = {n: round(result["scenarios"][n]["spans_per_s"] / base, 3) for n in names}
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["throughput_vs_no_worker"]))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
