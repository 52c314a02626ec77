"""Backfill throughput: the local executor vs Ray on 1 and 2 worker processes, and store growth per span.

The same backfill runs three ways over the same store: a ``code`` evaluator
(``assay.evaluators.checks:no_tool_errors``) over 2,000 real units (387 distinct real units from
the shared data, repeated under new ids: see ``tests/scale_fixtures.py``), each into its own run:

* ``local``: :func:`assay.suite.executor.score_with_executor` in this process;
* ``ray x1`` / ``ray x2``: the same on a real local Ray cluster (head + a second node, 1 CPU
  each, loopback) with 1 and 2 scoring actors. Actor start-up is included in the time.

After a warm-up, each configuration runs ``--repeats`` times (default 3), interleaved; the
median run is reported, with all runs' units/s.

Then a small ``llm_judge`` part (SmolLM2-135M via llama.cpp, 1 thread per process, 300 prompt
chars, 48 reply tokens, no judge cache) on 12 distinct real units, local vs Ray x2.

The store is PostgreSQL when ``ASSAY_TEST_POSTGRES_URL`` (or ``--postgres URL``) names a server
(a fresh database is made and dropped), else a SQLite file. Store growth: the 2,000 units are
also ingested into a SQLite file, and bytes per span are reported for both (SQLite: file size
after a WAL checkpoint; PostgreSQL: ``pg_total_relation_size`` of the tables, indexes and TOAST).

On 2 cores expect little speed-up from Ray; the point is that its overhead is small and the path works.

    python benchmarks/bench_scale.py            # writes benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from tests.scale_fixtures import RayCluster, corpus, postgres_database  # noqa: E402

from assay._store import Store  # noqa: E402
from assay.evaluators import EvaluationResult, EvaluatorDef  # noqa: E402
from assay.evaluators.definition import CodeSpec, CriterionRef  # noqa: E402
from assay.settings import JudgeSettings  # noqa: E402
from assay.suite.executor import ScoreSummary, score_with_executor  # noqa: E402

DATA = Path(os.environ.get("ASSAY_BENCH_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
CODE = EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use",
                    criterion=CriterionRef(name="tool errors", text="Every tool call succeeds."),
                    code=CodeSpec(callable="assay.evaluators.checks:no_tool_errors"))
JUDGE = EvaluatorDef(name="resolved", kind="llm_judge", dimension="outcome",
                     criterion=CriterionRef(name="resolved", text="The agent resolved the user's request."))
JUDGE_SETTINGS = JudgeSettings(max_prompt_chars=300, max_tokens=48, n_ctx=1024, n_threads=1)
TABLES = ("units", "spans", "scores", "runs")


def outcome(s: ScoreSummary) -> dict[str, Any]:
    return {"units": s.n_units, "workers": s.workers, "seconds": round(s.seconds, 2),
            "units_per_s": round(s.n_units / s.seconds, 1), "scored": s.n_scored,
            "unscored": s.count("unscored"), "errors": s.count("error"), "written": s.written}


def same(a: ScoreSummary, b: ScoreSummary) -> bool:
    def key(s: ScoreSummary) -> list[tuple[Any, ...]]:
        return [(r.unit_id, r.score, r.verdict) if isinstance(r, EvaluationResult) else (r.unit_id, r.status)
                for r in s.results]
    return key(a) == key(b)


def ingest(store: Store, units: list[Any]) -> float:
    started = time.perf_counter()
    for i in range(0, len(units), 200):
        store.add_units(units[i:i + 200])
    return time.perf_counter() - started


def sqlite_growth(units: list[Any], spans: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "assay.db"
        store = Store(f"sqlite:///{path}")
        seconds = ingest(store, units)
        with store.engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        store.close()
        size = path.stat().st_size
    return {"bytes": size, "bytes_per_span": round(size / spans), "ingest_s": round(seconds, 1)}


def postgres_growth(store: Store, spans: int) -> dict[str, Any]:
    with store.engine.connect() as conn:
        sizes = {t: int(conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one()) for t in TABLES}
    units_spans = sizes["units"] + sizes["spans"]
    return {"table_bytes": sizes, "units_plus_spans_bytes": units_spans,
            "bytes_per_span": round(units_spans / spans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--judge-units", type=int, default=12, help="0 skips the llm_judge part")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each code-evaluator configuration")
    parser.add_argument("--postgres", default=os.environ.get("ASSAY_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    units, n_real = corpus(DATA, args.units)
    spans = sum(len(u.spans) for u in units)
    result: dict[str, Any] = {
        "benchmark": "backfill of a code evaluator (and a small llm_judge part): local vs Ray x1 / x2",
        "units": len(units), "distinct_real_units": n_real, "spans": spans,
        "corpus": "real units from the shared data; beyond the distinct ones, repeats under new ids"}
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(postgres_database(args.postgres))
            result["store"] = "postgresql"
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/assay.db"
            result["store"] = "sqlite"
        store = Store(url)
        stack.callback(store.close)
        result["ingest_s"] = round(ingest(store, units), 1)
        ids = store.select_unit_ids()
        growth: dict[str, Any] = {"spans": spans, "sqlite": sqlite_growth(units, spans)}
        if args.postgres:
            growth["postgresql"] = postgres_growth(store, spans)
        result["store_growth"] = growth
        print(f"ingested {len(ids)} units ({spans} spans) into {result['store']}", flush=True)

        score_with_executor(store, CODE, ids[:200], JudgeSettings())  # warm-up: imports, database caches
        cluster = stack.enter_context(RayCluster(nodes=2, cpus_per_node=1))
        import ray

        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        stack.callback(ray.shutdown)
        cluster.wait_for_cpus(ray)
        # Interleaved repeats (local, ray x1, ray x2, local, ...) so a burst of load from other
        # processes on the machine hits every configuration alike; the median run is reported.
        runs: dict[str, list[ScoreSummary]] = {"local": [], "ray_x1": [], "ray_x2": []}
        for _ in range(args.repeats):
            for name in runs:
                workers = None if name == "local" else int(name[-1])
                s = score_with_executor(store, CODE, ids, JudgeSettings(), executor="local" if workers is None
                                        else "ray", ray_address=cluster.address, workers=workers)
                runs[name].append(s)
                print(f"{name}: {s.n_units / s.seconds:.0f} units/s", flush=True)
        local = runs["local"][0]
        code: dict[str, Any] = {"repeats": args.repeats}
        for name, summaries in runs.items():
            median = sorted(summaries, key=lambda x: x.seconds)[len(summaries) // 2]
            code[name] = {**outcome(median), "units_per_s_all": [round(x.n_units / x.seconds, 1) for x in summaries],
                          "identical_to_local": all(same(x, local) for x in summaries)}
        result["code_evaluator"] = code
        if args.judge_units:
            real = [u for u in ids if "#copy" not in u]
            sub = real[:: max(1, len(real) // args.judge_units)][:args.judge_units]
            jl = score_with_executor(store, JUDGE, sub, JUDGE_SETTINGS, executor="local", use_cache=False,
                                     batch_size=3)
            jr = score_with_executor(store, JUDGE, sub, JUDGE_SETTINGS, executor="ray", ray_address=cluster.address,
                                     use_cache=False, batch_size=3, workers=2)
            result["llm_judge"] = {"model": "smollm2-135m-instruct (llama.cpp, 1 thread per process)",
                                   "settings": {"max_prompt_chars": 300, "max_tokens": 48},
                                   "local": outcome(jl), "ray_x2": {**outcome(jr), "identical_to_local": same(jr, jl)}}
            print(f"llm_judge local {jl.n_units / jl.seconds:.2f} u/s, ray x2 {jr.n_units / jr.seconds:.2f} u/s",
                  flush=True)
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start],
                         "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
