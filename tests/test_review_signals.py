"""Failure signals on the review page: each marked at its step of the timeline (in the page and in the
chunks loaded after it), whole-unit signals above the timeline, the failure score. In process, real SQLite."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from assay._store import Store
from assay._web.ui import INITIAL_STEPS, install_ui
from assay.signals import SignalSettings, update_signals
from assay.signals.feedback import FeedbackItem, record_feedback
from tests.test_signal_store import chat_unit
from tests.test_web_ui import login
from tests.ui_fixtures import make_unit, seed, settings_for

pytestmark = pytest.mark.anyio

# The synthetic units of ui_fixtures call tools with ids no earlier step mentions: the action detectors
# (docs/signals.md) rightly flag every call. These tests are about storage and display, so they leave them off.
NO_ACTION_CUES = SignalSettings.model_validate({k: {"enabled": False} for k in (
    "ungrounded_argument", "unconfirmed_action", "action_retry", "many_actions")})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store, n_units=1)
    store.add_units([make_unit("unit-big", 150), chat_unit("calm")])  # unit-big: 302 steps, the last tool errs
    update_signals(store, NO_ACTION_CUES)
    record_feedback(store, [FeedbackItem(channel="api", unit_id="unit-big", thumbs="down", comment="<b>slow</b>")],
                    NO_ACTION_CUES)
    return store


@pytest.fixture
async def client(store: Store, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c
    gc.unfreeze()


def _step(html: str, index: int) -> str:
    match = re.search(rf'<details [^>]*id="step-{index}".*?</details>', html, re.S)
    assert match, f"step {index} not rendered"
    return match.group(0)


async def test_signals_are_marked_at_their_steps(client: httpx.AsyncClient, store: Store) -> None:
    await login(client, "ann")
    page = (await client.get("/review/unit-big")).text
    header = page[page.index('id="failure-signals"'):page.index('id="step-1"')]
    assert "<strong>Failed</strong> · failure score 1.00 · 3 failure signals, marked ⚑ at their steps" in header
    assert 'data-kind="thumbs_down"' in header and "&lt;b&gt;slow&lt;/b&gt;" in header  # escaped evidence
    assert 'data-kind="outcome_fail"' in header  # whole-unit signals above the timeline
    assert "⚑" not in _step(page, 1)
    error_step = 2 + 2 * 150  # the last tool result: beyond the first page, in a chunk
    assert error_step > INITIAL_STEPS and f'id="step-{error_step}"' not in page
    chunk = (await client.get(f"/timeline/unit-big?start={INITIAL_STEPS}")).text
    marked = _step(chunk, error_step)
    assert 'data-kind="tool_error"' in marked and "payment amount does not add up" in marked
    assert 'class="badge-signal"' in marked


async def test_a_unit_without_signals_says_so(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    page = (await client.get("/review/calm")).text
    assert "<strong>Not failed</strong> · failure score 0.00 · 0 failure signals</p>" in page
    assert "⚑" not in page
