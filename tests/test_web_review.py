"""The review page of a long unit: the first steps with the page, the rest in chunks (htmx), one cache
per content version, and a trace merged into a session redirecting there. In process, real SQLite."""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from assay._store import Store
from assay._web.ui import CHUNK_STEPS, INITIAL_STEPS, install_ui
from assay.traces import Span, step_timeline
from tests.test_web_ui import login
from tests.ui_fixtures import PASSWORD, make_unit, seed, settings_for

pytestmark = pytest.mark.anyio
N_TOOLS = 300  # 2 + 2 x 300 = 602 steps
STEP_ID = re.compile(r'id="step-(\d+)"')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store, n_units=1)
    store.add_units([make_unit("unit-big", N_TOOLS)])
    return store


@pytest.fixture
async def app(store: Store, tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def _loader(html: str) -> str | None:
    match = re.search(r'hx-get="([^"]+)" hx-trigger="load"', html)
    return match.group(1).replace("&amp;", "&") if match else None


async def test_long_unit_loads_in_chunks_that_add_up_to_the_whole_timeline(client: httpx.AsyncClient,
                                                                           store: Store) -> None:
    await login(client, "ann")
    total = len(step_timeline(store.unit("unit-big")))
    assert total == 2 + 2 * N_TOOLS
    page = await client.get("/review/unit-big?sig=1")
    assert page.status_code == 200
    assert f"{total} steps" in page.text
    seen = [int(i) for i in STEP_ID.findall(page.text)]
    assert seen == list(range(1, INITIAL_STEPS + 1))
    url = _loader(page.text)
    assert url == f"/timeline/unit-big?start={INITIAL_STEPS}&sig=1"
    chunks = 0
    while url is not None:
        chunk = await client.get(url)
        assert chunk.status_code == 200 and chunk.headers["content-security-policy"]
        ids = [int(i) for i in STEP_ID.findall(chunk.text)]
        assert len(ids) <= CHUNK_STEPS
        seen += ids
        url = _loader(chunk.text)
        chunks += 1
    assert seen == list(range(1, total + 1)) and chunks == 2
    whole = await client.get("/review/unit-big?sig=1&all=1")
    assert [int(i) for i in STEP_ID.findall(whole.text)] == list(range(1, total + 1))
    assert _loader(whole.text) is None
    # the same step reads the same, whether it came with a chunk or with the whole page (offset from step 1)
    last = re.search(r'id="step-602".*?</details>', whole.text, re.S)
    assert last is not None and last.group(0) in chunk.text and "+0.301 s" in last.group(0)


async def test_cached_timeline_follows_new_content(client: httpx.AsyncClient, app: FastAPI, store: Store) -> None:
    await login(client, "ann")
    page = await client.get("/review/unit-00?sig=1")  # seeded with one tool: 4 steps
    assert "4 steps" in page.text
    assert len(app.state.assay_ui.timelines._items) == 1
    unit = store.unit("unit-00")
    extra = Span(trace_id=unit.spans[0].trace_id, span_id="f" * 16, name="chat", kind="llm",
                 start_ns=unit.spans[-1].end_ns + 1, end_ns=unit.spans[-1].end_ns + 2,
                 status="error", status_message="late model failure")
    store.add_units([unit.model_copy(update={"spans": (*unit.spans, extra)})])
    again = await client.get("/review/unit-00?sig=1")
    assert "5 steps" in again.text and "late model failure" in again.text


async def test_chunks_need_a_login_and_a_known_unit(client: httpx.AsyncClient) -> None:
    r = await client.get("/timeline/unit-big?start=200")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    await login(client, "ann")
    assert (await client.get("/timeline/nope?start=0")).status_code == 404


async def test_trace_merged_into_a_session_redirects(client: httpx.AsyncClient, store: Store) -> None:
    trace = "e" * 32
    first = Span(trace_id=trace, span_id="1" * 16, name="chat", kind="llm", start_ns=10, end_ns=20)
    store.add_spans([first])
    late = Span(trace_id=trace, span_id="2" * 16, name="chat", kind="llm", start_ns=30, end_ns=40,
                session_id="conv-1")
    assert store.add_spans([late]).moved == [(f"trace/{trace}", "session/conv-1")]
    await login(client, "ann")
    r = await client.get(f"/review/trace/{trace}?sig=1")
    assert r.status_code == 303 and r.headers["location"] == "/review/session%2Fconv-1?sig=1"
    assert (await client.get(r.headers["location"])).status_code == 200


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server on loopback; yields its base URL."""
    from tests.test_web_browser import _free_port

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed (/usr/bin/chromium)")
def test_browser_loads_every_chunk_and_keys_still_work(store: Store, tmp_path: Path) -> None:
    """In Chromium: the page fills itself with all 602 steps (htmx, under the app's CSP), no console
    error, and the keyboard still labels."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS

    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    with _serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/login?next=/review/unit-big%3Fsig%3D1")
        page.fill("input[name=name]", "ann")
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        expect(page.locator("#step-602")).to_be_attached()
        assert page.locator("details.step").count() == 602
        assert page.locator(".more-steps").count() == 0
        page.keyboard.press("f")
        page.keyboard.press("3")
        expect(page.locator("input[name=label][value=fail]")).to_be_checked()
        expect(page.locator("input[name=severity][value='3']")).to_be_checked()
        assert errors == []
        browser.close()


def test_server_startup_takes_the_startup_heap_out_of_the_collector(store: Store, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app):
            assert gc.get_freeze_count() > 10_000  # modules, app, templates ...
    finally:
        gc.unfreeze()


async def test_a_failed_step_shows_its_error_and_a_folded_stack_trace(client: httpx.AsyncClient,
                                                                      store: Store) -> None:
    from assay.traces import SpanEvent, ToolCall, Unit

    stack = 'Traceback (most recent call last):\n  File "pay.py", line 3\nValueError: card declined'
    span = Span(trace_id="e" * 32, span_id="e" * 16, name="execute_tool pay", kind="tool", start_ns=1, end_ns=2,
                status="error", status_message="payment failed", tool_call=ToolCall(name="pay"),
                events=(SpanEvent(name="exception", attributes={
                    "exception.type": "ValueError", "exception.message": "card declined",
                    "exception.stacktrace": stack}),))
    store.add_units([Unit(unit_id="unit-failed", kind="trace", source="test", spans=(span,))])
    await login(client, "ann")
    page = (await client.get("/review/unit-failed")).text
    assert "Error: payment failed; ValueError: card declined" in page
    assert '<details class="stack"><summary>stack trace</summary>' in page and "pay.py" in page


async def test_a_unit_with_an_image_shows_a_placeholder_and_a_stored_thumbnail(client: httpx.AsyncClient,
                                                                             store: Store, tmp_path: Path) -> None:
    import base64
    import hashlib
    import json
    import random

    from assay.evaluators import EvaluatorDef, render_prompt
    from assay.settings import JudgeSettings
    from assay.traces import read_file

    image = random.Random(4).randbytes(2_400_000)
    b64 = base64.b64encode(image).decode()
    sha = hashlib.sha256(image).hexdigest()
    line = {"id": "photo-1", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What breed is this dog?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}]},
        {"role": "assistant", "content": "A beagle."}]}
    (tmp_path / "photo.jsonl").write_text(json.dumps(line) + "\n")
    store.add_units(read_file(tmp_path / "photo.jsonl").units)
    await login(client, "ann")
    page = await client.get("/review/openai-chat/photo-1")
    assert page.status_code == 200 and len(page.text) < 50_000 and b64[:100] not in page.text
    assert f"[image image/png: inline base64, {len(image):,} bytes, sha256 {sha[:12]}…]" in page.text
    assert f'<img class="thumb" src="/media/{sha}"' in page.text
    assert "img-src 'self'" in page.headers["content-security-policy"]
    thumb = await client.get(f"/media/{sha}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png" and thumb.content == image
    assert thumb.headers["x-content-type-options"] == "nosniff"
    assert (await client.get(f"/media/{'0' * 64}")).status_code == 404
    defn = EvaluatorDef.model_validate({"name": "breed", "kind": "llm_judge", "dimension": "vision",
                                        "criterion": {"name": "breed", "text": "The agent names the breed."}})
    prompt = render_prompt(defn, store.unit("openai-chat/photo-1"), JudgeSettings(max_prompt_chars=800))
    assert len(prompt) < 800 + 1_000 and b64[:100] not in prompt  # the template's own text is about 600
    assert "What breed is this dog?" in prompt and f"[image: inline base64, {len(image):,} bytes" in prompt
