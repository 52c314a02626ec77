"""Cost of running the local judge in a child process, against today's in-process call.

The same short prompt (so the model's own work is small and the overhead shows) is answered
``--calls`` times by llama-cpp-python loaded in this process and by :class:`assay.models.LocalLlamaJudge`
(a child process, JSON lines over pipes); both greedy, 4 output tokens, one thread. Reports the median
and p95 wall time per call of each and the difference, then one 600-token prompt each. Also the model
load time in the child.

    python benchmarks/bench_local_judge.py      # writes benchmarks/results/local_judge.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from llama_cpp import Llama

from assay.doctor import long_prompt
from assay.models import LocalLlamaJudge, default_gguf_path
from assay.settings import JudgeSettings

SHORT = "Is 2 + 2 equal to 4? Answer yes or no."


def _times(fn: Callable[[list[dict[str, str]]], object], text: str, calls: int, tag: str) -> list[float]:
    """Milliseconds per call; each prompt starts differently, so llama.cpp cannot reuse a cached prefix."""
    out = []
    for i in range(calls):
        messages = [{"role": "user", "content": f"[{tag} {i}] {text}"}]
        start = time.perf_counter()
        fn(messages)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local_judge.json")
    args = parser.parse_args()
    settings = JudgeSettings(max_tokens=4)
    llama = Llama(model_path=str(default_gguf_path()), n_ctx=settings.n_ctx, n_threads=1, n_threads_batch=1,
                  n_gpu_layers=0, seed=1234, verbose=False)

    def in_process(messages: list[dict[str, str]]) -> object:
        return llama.create_chat_completion(messages=messages, temperature=0.0, max_tokens=4,  # type: ignore[arg-type]
                                            seed=1234)

    judge = LocalLlamaJudge(settings, n_threads=1)
    start = time.perf_counter()
    info = judge.load()
    start_s = time.perf_counter() - start
    _times(in_process, SHORT, 2, "warm")
    _times(judge.complete, SHORT, 2, "warm")
    inproc = _times(in_process, SHORT, args.calls, "in")
    child = _times(judge.complete, SHORT, args.calls, "child")
    long_in = _times(in_process, long_prompt(), 5, "in")
    long_child = _times(judge.complete, long_prompt(), 5, "child")
    judge.close()
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
        "calls": args.calls, "child_start_and_load_s": round(start_s, 2), "child_load_s": round(info["load_s"], 2),
        "short_prompt": {"in_process": _summary(inproc), "child_process": _summary(child),
                         "overhead_median_ms": round(statistics.median(child) - statistics.median(inproc), 2)},
        "prompt_600_tokens": {"in_process": _summary(long_in), "child_process": _summary(long_child),
                              "overhead_median_ms": round(statistics.median(long_child) - statistics.median(long_in),
                                                          2)},
        "llama_cpp_system_info": info["system_info"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
