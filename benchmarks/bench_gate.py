"""`assay gate` at scale: two code evaluators over 1,000 and 10,000 stored units on SQLite.

Setup (not timed): a workspace in a temporary folder whose SQLite store holds ``N`` units built
from the 200 real tau-bench airline runs in the shared data (read with assay's tau-bench reader),
repeated under new ids beyond the first 200 (``<unit id>#copy<k>``, new trace ids: see
``tests/scale_fixtures.copy_unit``), written straight into the store with ``Store.add_units``;
two ``code`` evaluators (``no_tool_errors`` and ``tool_called(book_reservation)``) written to
``evaluators/`` and recorded active (an explicit override, as the gate tests do).

Timed, each in a fresh child process (``--repeats`` times per size, the median reported):

* ``assay gate --json`` over every unit (no baseline): wall time of the command from start to
  exit (Python start-up and imports included), its CPU time (user + system) and its peak RSS
  (``ru_maxrss`` of that child alone, from ``os.wait4``);
* the gate in-process: ``run_gate`` alone (wall and CPU time around the call, imports and store
  open excluded), with the child's peak RSS and its RSS before the call, so the growth is the gate's.

CPU time is reported beside wall time because the machine is shared: under load from other
processes wall time stretches while CPU time stays close to the work done.

The goal (issue 13): under 10 s for 10,000 units, and peak RSS about the same at 1,000 and
10,000 units. ``--label before|after`` names the entry written into
``benchmarks/results/gate.json`` (other labels in the file are kept), so the same script measures
the code before and after a change.

    python benchmarks/bench_gate.py --label after              # 1,000 and 10,000 units
    python benchmarks/bench_gate.py --sizes 1000 --label quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("ASSAY_BENCH_DATA", ROOT.parent / "shared" / "data"))
AIRLINE = DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json"
RESULTS = ROOT / "benchmarks" / "results" / "gate.json"
CRITERION = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}
EVALUATORS = (("no-tool-errors", {"callable": "assay.evaluators.checks:no_tool_errors"}),
              ("books", {"callable": "assay.evaluators.checks:tool_called", "args": {"tool": "book_reservation"}}))


def build_workspace(ws: Path, n: int) -> dict[str, Any]:
    """Write ``n`` units and two active code evaluators into a workspace at ``ws`` (the untimed setup)."""
    from tests.scale_fixtures import copy_unit

    from assay._store import Store
    from assay.calibration.calibrate import save_evaluator_record
    from assay.evaluators import EvaluatorDef, save_evaluator
    from assay.settings import load_settings
    from assay.traces.readers import read_file

    real = sorted(read_file(AIRLINE).units, key=lambda u: u.unit_id)
    started = time.perf_counter()
    store = Store(load_settings(ws).resolved_store_url())
    spans = 0
    for start in range(0, n, 200):
        k = start // len(real)
        batch = [u if k == 0 else copy_unit(u, k) for u in real][:n - start]
        store.add_units(batch)
        spans += sum(len(u.spans) for u in batch)
    for name, code in EVALUATORS:
        defn = EvaluatorDef(name=name, kind="code", dimension="tool use", criterion=CRITERION, code=code,
                            min_pass_rate=0.0)
        save_evaluator(defn, ws / "evaluators" / f"{name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="benchmark")
    store.close()
    return {"units": n, "spans": spans, "distinct_real_units": len(real),
            "ingest_s": round(time.perf_counter() - started, 1)}


def child(ws: Path) -> None:
    """The in-process measurement (run in a fresh process): run_gate alone, RSS before and at peak."""
    from assay._store import Store
    from assay.settings import load_settings
    from assay.suite.gate import run_gate

    settings = load_settings(ws)
    store = Store(settings.resolved_store_url())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), time.process_time()
    report = run_gate(store, settings, None)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "units": report.units, "exit_code": report.exit_code,
                      "pass_rates": {i.evaluator: i.pass_rate for i in report.items},
                      "rss_before_mb": rss_before / 1024,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run(cmd: list[str]) -> tuple[float, float, float, str]:
    """Run ``cmd``; (wall seconds, the child's CPU seconds (user + system), its own peak RSS in MB, stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        out.seek(0)
        text = out.read().decode()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {err[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def measure(ws: Path, repeats: int) -> dict[str, Any]:
    cli, inproc = [], []
    for _ in range(repeats):  # interleaved, so a burst of load from other processes hits both alike
        seconds, cpu, rss, out = _run([sys.executable, "-m", "assay", "--workspace", str(ws), "gate", "--json"])
        report = json.loads(out)
        cli.append({"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1),
                    "exit_code": report["exit_code"]})
        _, _, rss, out = _run([sys.executable, __file__, "--child", str(ws)])
        got = json.loads(out)
        inproc.append({"seconds": round(got["seconds"], 2), "cpu_s": round(got["cpu_s"], 2),
                       "peak_rss_mb": round(got["peak_rss_mb"], 1), "rss_before_mb": round(got["rss_before_mb"], 1),
                       "pass_rates": got["pass_rates"]})
        print(f"  cli {cli[-1]['seconds']} s (cpu {cli[-1]['cpu_s']} s) {cli[-1]['peak_rss_mb']} MB; run_gate "
              f"{inproc[-1]['seconds']} s (cpu {inproc[-1]['cpu_s']} s) {inproc[-1]['peak_rss_mb']} MB", flush=True)

    def median(rows: list[dict[str, Any]]) -> dict[str, Any]:
        row = sorted(rows, key=lambda r: r["seconds"])[len(rows) // 2]
        return {**row, "seconds_all": [r["seconds"] for r in rows],
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows)}

    return {"cli": median(cli), "run_gate": median(inproc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated unit counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="after", help="the entry of gate.json to write (before, after, ...)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout or "(not a git checkout)"
    entry: dict[str, Any] = {"commit": commit.strip(), "store": "sqlite", "repeats": args.repeats, "sizes": {},
                             "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            ws = Path(d)
            setup = build_workspace(ws, n)
            print(f"{n} units ({setup['spans']} spans) stored in {setup['ingest_s']} s", flush=True)
            entry["sizes"][str(n)] = {**setup, **measure(ws, args.repeats)}
    entry["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    entry["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update({"benchmark": "assay gate: two code evaluators over N stored units (SQLite), no baseline",
                 "goal": "10,000 units in under 10 s; peak RSS about the same at 1,000 and 10,000 units",
                 args.label: entry})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS} [{args.label}]")


if __name__ == "__main__":
    main()
