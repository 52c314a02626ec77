"""Failure signatures measured against people, and at scale.

Quality: the AgentRx runs with human failure annotations (29 failed tau-bench retail runs,
44 Magentic-One runs; microsoft/AgentRx, arXiv 2602.02475) are clustered by
``assay.signatures.build_signatures`` and compared with the human *root-cause* category of
each run (the failure whose ``failure_id`` equals ``root_cause.failure_id``; category
spelling normalised case-insensitively) by adjusted Rand index, normalized mutual
information and purity (sklearn). The baseline is TF-IDF of the whole transcript + k-means
with the same number of groups. HDBSCAN noise is scored two ways: as one group of its own
(``noise_as_group``: every unit counted) and left out (``clustered_only``, with coverage).
``chance`` is the mean of the same metrics over random permutations of assay's groups (the
level a partition with these group sizes reaches by luck: NMI and purity grow with the
number of groups even then).

Scale: ``--units N`` (default 10,000) units made by resampling the 73 AgentRx runs and
perturbing them (digits in every text redrawn, the last 0-2 steps dropped), ingested into a
fresh SQLite store, then clustered: total time of ``build_signatures``, the time spent
computing embeddings alone (model load + encoding), peak memory (``ru_maxrss``), and a
re-run on the same store (every embedding from the cache). The scale run is a subprocess
so its peak memory is its own. Goal: total <= 1.3 x embedding time.

    python benchmarks/bench_signatures.py                 # quality + 10,000-unit scale run
    python benchmarks/bench_signatures.py --units 1000    # smaller scale run
    python benchmarks/bench_signatures.py --skip-scale    # quality only

Writes ``benchmarks/results/signatures.json`` (merged: a run that skips a part keeps the
previous numbers of that part).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ASSAY_BENCH_DATA", ROOT.parent / "shared" / "data")) / "agentrx" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "signatures.json"
SEED = 0
PERMUTATIONS = 200


# --- data --------------------------------------------------------------------------------


def root_causes(path: Path) -> dict[str, str | None]:
    """``{trajectory id: root-cause category}`` (lower case, spaces collapsed; None when the
    root cause names no listed failure)."""
    out: dict[str, str | None] = {}
    for run in json.loads(path.read_text(encoding="utf-8")):
        rid = str((run.get("root_cause") or {}).get("failure_id"))
        cat = next((f.get("failure_category") for f in run["failures"] if str(f.get("failure_id")) == rid), None)
        out[str(run["trajectory_id"])] = " ".join(str(cat).lower().split()) if cat else None
    return out


def load_runs() -> tuple[dict[str, list[Any]], dict[str, str], list[str]]:
    """The annotated AgentRx runs as units (outcome ``fail``: people annotated them as failed).

    Returns:
        ``({"tau": units, "magentic": units}, {unit id: root-cause category}, notes)``.
    """
    from assay.traces import read_file

    notes: list[str] = []
    tau_gt = root_causes(DATA / "ground_truth" / "tau_ground_truth.json")
    mag_gt = root_causes(DATA / "ground_truth" / "magentic_one_ground_truth.json")
    labels: dict[str, str] = {}
    tau = []
    for unit in read_file(DATA / "tau_retail" / "tau_dataset_failed.json").units:
        category = tau_gt.get(str(unit.attributes["task_id"]))
        if category:
            tau.append(unit.model_copy(update={"outcome": "fail"}))
            labels[unit.unit_id] = category
    magentic = []
    for run_id, category in sorted(mag_gt.items()):
        if not category:
            notes.append(f"magentic-one {run_id}: root_cause.failure_id matches no failure; run left out")
            continue
        unit = read_file(DATA / "magentic_dataset" / f"{run_id}.json").units[0]
        magentic.append(unit.model_copy(update={"outcome": "fail"}))
        labels[unit.unit_id] = category
    return {"tau": tau, "magentic": magentic}, labels, notes


# --- metrics -----------------------------------------------------------------------------


def purity(truth: list[str], groups: list[int]) -> float:
    """Share of units whose group's most common true category is their own."""
    total = 0
    for g in set(groups):
        total += Counter(t for t, x in zip(truth, groups, strict=True) if x == g).most_common(1)[0][1]
    return total / len(truth)


def scores(truth: list[str], groups: list[int]) -> dict[str, float]:
    """ARI, NMI (arithmetic normalisation, sklearn's default) and purity."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {"ari": round(float(adjusted_rand_score(truth, groups)), 4),
            "nmi": round(float(normalized_mutual_info_score(truth, groups)), 4),
            "purity": round(purity(truth, groups), 4)}


def chance(truth: list[str], groups: list[int]) -> dict[str, float]:
    """Mean scores of random permutations of ``groups`` (same group sizes)."""
    rng = np.random.default_rng(SEED)
    runs = [scores(truth, [int(x) for x in rng.permutation(groups)]) for _ in range(PERMUTATIONS)]
    return {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}


def baseline(units: list[Any], truth: list[str], k: int) -> dict[str, float]:
    """TF-IDF of the whole rendered transcript (system prompt included) + k-means, k groups."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    from assay.traces import render_timeline, step_timeline

    docs = [render_timeline(step_timeline(u)) for u in units]
    matrix = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(docs)
    groups = KMeans(n_clusters=max(1, min(k, len(units))), n_init=10, random_state=SEED).fit_predict(matrix)
    return scores(truth, [int(g) for g in groups])


# --- quality -----------------------------------------------------------------------------


def cluster_set(units: list[Any], labels: dict[str, str], min_cluster_size: int, workdir: Path) -> dict[str, Any]:
    """Cluster one set of runs with assay and the baseline; score both against the labels."""
    from assay._store import Store
    from assay.settings import Settings
    from assay.signatures import build_signatures, map_points

    store = Store("sqlite:///" + str(workdir / f"quality-{len(units)}-{min_cluster_size}.db"))
    store.add_units(units)
    signatures = build_signatures(store, Settings.model_validate({"min_cluster_size": min_cluster_size}))
    points = {uid: sid for uid, _, _, sid in map_points(store)}
    store.close()
    order = sorted(points)
    truth = [labels[u] for u in order]
    groups = [points[u] if points[u] is not None else -1 for u in order]
    clustered = [i for i, g in enumerate(groups) if g != -1]
    n_groups = len(set(groups))
    by_id = {u.unit_id: u for u in units}
    result: dict[str, Any] = {
        "units": len(order), "categories": dict(Counter(truth).most_common()),
        "signatures": len(signatures), "noise": groups.count(-1), "groups": n_groups,
        "assay": {"noise_as_group": scores(truth, groups),
                  "clustered_only": scores([truth[i] for i in clustered], [groups[i] for i in clustered])
                  if len(clustered) > 1 else None,
                  "coverage": round(len(clustered) / len(order), 4)},
        "baseline_tfidf_kmeans": {"k": n_groups, **baseline([by_id[u] for u in order], truth, n_groups)},
        "chance_same_group_sizes": chance(truth, groups),
        "signature_table": [{"id": s.id, "size": s.size, "key": s.structural_key, "label": s.label,
                             "root_causes": dict(Counter(labels[u] for u in s.unit_ids).most_common())}
                            for s in signatures],
    }
    return result


def quality(min_cluster_sizes: list[int]) -> dict[str, Any]:
    """Quality against the human root causes: tau, Magentic-One and both together."""
    sets, labels, notes = load_runs()
    sets["combined"] = sets["tau"] + sets["magentic"]
    out: dict[str, Any] = {"notes": notes, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mcs in min_cluster_sizes:
            key = f"min_cluster_size={mcs}"
            out["runs"][key] = {name: cluster_set(units, labels, mcs, Path(tmp)) for name, units in sets.items()}
            for name, r in out["runs"][key].items():
                a, b, c = r["assay"]["noise_as_group"], r["baseline_tfidf_kmeans"], r["chance_same_group_sizes"]
                print(f"[{key}] {name:9s} n={r['units']:3d} sigs={r['signatures']:2d} noise={r['noise']:3d} | "
                      f"assay ARI {a['ari']:+.3f} NMI {a['nmi']:.3f} pur {a['purity']:.3f} | "
                      f"baseline ARI {b['ari']:+.3f} NMI {b['nmi']:.3f} pur {b['purity']:.3f} | "
                      f"chance NMI {c['nmi']:.3f} pur {c['purity']:.3f}", flush=True)
    return out


# --- scale -------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")


def _perturb_text(text: str | None, rng: random.Random) -> str | None:
    if not text:
        return text
    return _DIGITS.sub(lambda m: "".join(rng.choice("0123456789") for _ in m.group(0)), text)


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def perturbed(unit: Any, new_id: str, rng: random.Random) -> Any:
    """A copy of ``unit`` under ``new_id``: new trace and span ids, digits in every message,
    tool result and argument text redrawn, and the last 0-2 non-root spans dropped."""
    from assay.traces.model import parse_arguments

    trace_id = _hex(new_id, 32)
    spans = list(unit.spans)
    drop = rng.choice((0, 0, 1, 2))
    if drop and len(spans) > drop + 2:
        spans = spans[:-drop]

    def message(m: Any) -> Any:
        calls = []
        for c in m.tool_calls:
            parsed, raw, flag = parse_arguments(_perturb_text(c.arguments_raw, rng))
            calls.append(c.model_copy(update={"arguments": parsed, "arguments_raw": raw, "arguments_flag": flag}))
        return m.model_copy(update={"content": _perturb_text(m.content, rng), "tool_calls": tuple(calls)})

    out = []
    for s in spans:
        call = s.tool_call
        if call is not None:
            parsed, raw, flag = parse_arguments(_perturb_text(call.arguments_raw, rng))
            call = call.model_copy(update={"arguments": parsed, "arguments_raw": raw, "arguments_flag": flag})
        out.append(s.model_copy(update={
            "trace_id": trace_id, "span_id": _hex(new_id + s.span_id, 16),
            "parent_span_id": _hex(new_id + s.parent_span_id, 16) if s.parent_span_id else None,
            "input_messages": tuple(message(m) for m in s.input_messages),
            "output_messages": tuple(message(m) for m in s.output_messages),
            "tool_call": call, "tool_result": _perturb_text(s.tool_result, rng),
            "status_message": _perturb_text(s.status_message, rng)}))
    return unit.model_copy(update={"unit_id": new_id, "spans": tuple(out), "outcome": "fail"})


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale_worker(n: int) -> dict[str, Any]:
    """Generate, ingest and cluster ``n`` units; time and measure (run in a subprocess)."""
    from assay._store import Store
    from assay.settings import Settings
    from assay.signatures import EmbeddingStats, build_signatures, map_points

    sets, _, _ = load_runs()
    pool = sets["tau"] + sets["magentic"]
    rng = random.Random(SEED)
    generate_s = ingest_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store("sqlite:///" + str(Path(tmp) / "scale.db"))
        for start in range(0, n, 500):  # in chunks: the peak memory is the build's, not the generator's
            started = time.perf_counter()
            units = [perturbed(src, f"synthetic/{k:05d}/{src.unit_id}", rng)
                     for k, src in ((k, rng.choice(pool)) for k in range(start, min(n, start + 500)))]
            generate_s += time.perf_counter() - started
            started = time.perf_counter()
            store.add_units(units)
            ingest_s += time.perf_counter() - started
        del units
        rss_before = _rss_mb()
        load_before = os.getloadavg()[0]
        settings = Settings.model_validate({})
        first = EmbeddingStats()
        started = time.perf_counter()
        signatures = build_signatures(store, settings, stats=first)
        total_s = time.perf_counter() - started
        rss_after = _rss_mb()
        load_after = os.getloadavg()[0]
        again = EmbeddingStats()
        started = time.perf_counter()
        build_signatures(store, settings, stats=again)
        rerun_s = time.perf_counter() - started
        noise = sum(1 for p in map_points(store) if p[3] is None)
        store.close()
    return {
        "units": n, "source_runs": len(pool), "generate_seconds": round(generate_s, 2),
        "ingest_seconds": round(ingest_s, 2),
        "build_total_seconds": round(total_s, 2), "embedding_seconds": round(first.seconds, 2),
        "non_embedding_seconds": round(total_s - first.seconds, 2),
        "ratio_total_to_embedding": round(total_s / first.seconds, 3) if first.seconds else None,
        "goal_ratio": 1.3, "goal_met": bool(first.seconds and total_s <= 1.3 * first.seconds),
        "embeddings_computed": first.computed, "embeddings_cached": first.cached,
        "rerun_seconds": round(rerun_s, 2), "rerun_embeddings_computed": again.computed,
        "rerun_embeddings_cached": again.cached,
        "peak_rss_mb_before_build": rss_before, "peak_rss_mb": rss_after,
        "signatures": len(signatures), "noise": noise,
        "load_average_1min_before_after_build": [round(load_before, 2), round(load_after, 2)],
    }


def scale(n: int) -> dict[str, Any]:
    """Run :func:`scale_worker` in a fresh interpreter (its own peak memory)."""
    print(f"scale run: {n} units (subprocess)", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--scale-worker", str(n)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"scale worker failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1), flush=True)
    return result


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=10_000, help="units in the scale run (default 10000)")
    parser.add_argument("--skip-scale", action="store_true", help="quality only")
    parser.add_argument("--skip-quality", action="store_true", help="scale only")
    parser.add_argument("--min-cluster-size", type=int, nargs="+", default=[5, 3],
                        help="HDBSCAN min_cluster_size values for the quality runs (first = assay's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker)))
        return 0
    quality_result = None if args.skip_quality else quality(args.min_cluster_size)
    scale_result = None if args.skip_scale else scale(args.units)
    # read the file only now: a run of the other part meanwhile keeps its numbers
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}
    if quality_result is not None:
        results["quality"] = quality_result
    if scale_result is not None:
        results.setdefault("scale", {})[str(args.units)] = {**scale_result, "measured_at": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
