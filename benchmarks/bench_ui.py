"""Server-side render time of the annotation app's review page for a unit with 500 spans.

A fresh SQLite workspace gets one failed unit of 500 spans (an LLM turn, then 499 tool
calls whose arguments and results are a few hundred characters of JSON, every 50th result
an error), one signature holding it, a criterion and an annotator. The review page is
requested ``--requests`` times (default 50, after 3 warm-up requests) in-process through
``httpx.ASGITransport``; each request is timed from send to the last body byte (no network,
no browser), so the numbers are the server's: store read, step timeline, Jinja2 render.
Goal: p95 under 150 ms on this machine.

Three series: ``cold`` (the in-process timeline cache emptied before each request: store read,
timeline and render every time, what an annotator opening a new item waits for), ``warm`` (the
same URL again: the timeline comes from the cache, e.g. a second annotator or j/k back), and
``full_cold`` (the page plus every step chunk it loads after itself, cache emptied first: all the
server work to show the whole 1,000-step timeline). The headline p50/p95 are the cold page's.

    python benchmarks/bench_ui.py            # writes benchmarks/results/ui.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi import FastAPI

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow
from assay._web.auth import add_user
from assay._web.ui import freeze_startup_heap, install_ui
from assay.annotations import add_criterion
from assay.settings import Settings
from assay.traces import Message, Span, ToolCall, Unit

RESULTS = Path(__file__).parent / "results" / "ui.json"
PASSWORD = "benchmark-password"


def big_unit(n_spans: int = 500) -> Unit:
    """One failed unit of ``n_spans`` spans: an LLM turn, then tool calls with JSON results."""
    trace = "ab" * 16
    t = 1_700_000_000_000_000_000
    spans = [Span(trace_id=trace, span_id=f"{0:016x}", name="chat", kind="llm", start_ns=t, end_ns=t + 10**6,
                  input_messages=(Message(role="user", content="Change my reservation to the 9am flight. " * 5),),
                  output_messages=(Message(role="assistant", content="Let me look that up for you. " * 5),))]
    for i in range(1, n_spans):
        start = t + i * 10**7
        error = i % 50 == 0
        spans.append(Span(
            trace_id=trace, span_id=f"{i:016x}", name="search_flights", kind="tool", start_ns=start,
            end_ns=start + 5 * 10**6, status="error" if error else "ok",
            tool_call=ToolCall(id=f"c{i}", name="search_flights",
                               arguments={"origin": "SFO", "destination": "JFK", "date": f"2024-05-{1 + i % 28:02d}",
                                          "passengers": [{"name": f"P{i}", "age": 30 + i % 40}]}),
            tool_result=("Error: rate limit exceeded" if error else json.dumps(
                {"flights": [{"id": f"HAT{i:03d}{j}", "price": 100 + j, "seats": j} for j in range(5)]}))))
    return Unit(unit_id="big-unit", kind="trace", source="bench", spans=tuple(spans), outcome="fail")


def prepare(workspace: Path, n_spans: int) -> tuple[FastAPI, Store]:
    settings = Settings(workspace=workspace, store_url=f"sqlite:///{workspace / 'assay.db'}",
                        session_secret="bench")
    store = Store(settings.store_url)
    store.add_units([big_unit(n_spans)])
    with store.session() as s:
        s.add(SignatureRow(id=1, structural_key="tool=search_flights", label="search_flights: rate limit",
                           keywords=[], size=1, representative_unit="big-unit", status="new"))
        s.flush()
        s.add(MemberRow(unit_id="big-unit", signature_id=1, structural_key="tool=search_flights", distance=0.0,
                        seen_at=datetime.now(UTC)))
    add_criterion(store, "The agent handles tool errors without inventing flights.", name="bench", signature_id=1)
    add_user(store, "ann", PASSWORD, "annotator")
    app = FastAPI()
    install_ui(app, settings, store)
    freeze_startup_heap()  # what the server's startup does (the in-process transport runs no lifespan)
    return app, store


async def _login(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    await client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token.group(1)})


_MORE = re.compile(r'hx-get="(/timeline/[^"]+)"')


async def _timed(client: httpx.AsyncClient, url: str) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    resp = await client.get(url)
    elapsed = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200, resp.status_code
    return elapsed, resp


async def measure(app: FastAPI, requests: int) -> dict[str, tuple[list[float], int]]:
    """Milliseconds per request and the bytes of the last response, per series (see module docstring)."""
    transport = httpx.ASGITransport(app=app)
    cache = app.state.assay_ui.timelines
    out: dict[str, tuple[list[float], int]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await _login(client)
        url = "/review/big-unit?sig=1"
        for _ in range(3):
            await _timed(client, url)
        for series in ("cold", "warm", "full_cold"):
            times, size = [], 0
            for _ in range(requests):
                if series != "warm":
                    cache.clear()
                elapsed, resp = await _timed(client, url)
                size = len(resp.content)
                while series == "full_cold" and (more := _MORE.search(resp.text)):
                    chunk_ms, resp = await _timed(client, more.group(1).replace("&amp;", "&"))
                    elapsed += chunk_ms
                    size += len(resp.content)
                times.append(elapsed)
            out[series] = (times, size)
    return out


def components(app: FastAPI, store: Store, runs: int) -> dict[str, float]:
    """Median milliseconds of the cold page's parts, called directly: store read (``load_unit``),
    timeline and reading context, step views (markdown, folded JSON) + render of the first ``INITIAL_STEPS``
    steps."""
    from assay._store.spans import load_unit, unit_row
    from assay._web.pages import first_time, step_views
    from assay._web.review_context import read_unit, reading_context
    from assay._web.review_labels import label_view
    from assay._web.ui import INITIAL_STEPS
    from assay.annotations import BinaryScale
    from assay.signals import assess

    env = app.state.assay_ui.env
    row = unit_row(store, "big-unit")
    assert row is not None
    page_context = {"scale": BinaryScale(), "sides": [], "view": label_view([], "bench", None, True), "usage": None,
                    "signals_at": {}, "unit_signals": [], "n_signals": 0, "failed": True, "saved": None, "orphans": 0,
                    "failure": assess("big-unit", [], store.signals), "notes_at": {}, "review_q": "?sig=1",
                    "across": False}
    parts: dict[str, list[float]] = {"store_read_ms": [], "timeline_ms": [], "render_ms": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        unit = load_unit(store, "big-unit")
        t1 = time.perf_counter()
        reading = read_unit(unit)
        steps = reading.steps
        t2 = time.perf_counter()
        views = step_views(steps[:INITIAL_STEPS], first_time(steps), reading.timed)
        env.get_template("review.html").render(csrf_token="x", user=None, unit=unit, steps=views,
                                               total=len(steps), next_start=INITIAL_STEPS, unit_id=unit.unit_id,
                                               sig=1, criterion=None, labels=[], prev=None, next=None, mine=None,
                                               **page_context, **reading_context(row, reading))
        t3 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[key].append(value * 1000)
    return {key: round(statistics.median(values), 1) for key, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--spans", type=int, default=500)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, store = prepare(Path(tmp), args.spans)
        load_before = os.getloadavg()
        series = asyncio.run(measure(app, args.requests))
        load_after = os.getloadavg()
        parts = components(app, store, 10)
        from assay.traces import step_timeline

        steps = len(step_timeline(store.unit("big-unit")))
        store.close()

    def stats(times: list[float], size: int) -> dict[str, float | int | bool]:
        q = statistics.quantiles(times, n=100, method="inclusive")
        return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(q[94], 1),
                "max_ms": round(max(times), 1), "bytes": size}

    by_series = {name: stats(*values) for name, values in series.items()}
    cold = by_series["cold"]
    result = {
        "what": "server-side time of GET /review/{unit} (in-process ASGI, SQLite), ms; headline = cold page",
        "spans": args.spans, "steps": steps, "requests": args.requests, "page_bytes": cold["bytes"],
        "p50_ms": cold["p50_ms"], "p95_ms": cold["p95_ms"], "max_ms": cold["max_ms"],
        "goal_p95_ms": 150, "meets_goal": float(cold["p95_ms"]) < 150,
        "series": by_series, "parts_median": parts,
        "load_avg": {"before_1m_5m_15m": [round(x, 2) for x in load_before],
                     "after_1m_5m_15m": [round(x, 2) for x in load_after], "cpus": os.cpu_count()},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
