"""Open coding against a fake OpenAI-compatible server (a real uvicorn server on loopback, the real
OpenAI client, judge cache and budget): only ambiguous units (and the random share) are coded, the
daily budget in calls and in dollars stops calls at the limit and is reported, a note becomes a signal
at the step the judge names, and the local model is refused."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from assay._cli.main import app as cli
from assay._store import Store
from assay.exceptions import ConfigError
from assay.settings import Settings, load_settings
from assay.signals import list_signals, update_signals
from assay.signals.open_coding import PROMPT_VERSION, budget, candidates, open_code
from tests.test_signal_store import chat_unit

NOTE = "The agent applied the default refund policy although the user reported a shipping delay."


class Fake:
    """The fake provider: a note for conversations with a complaint, "nothing" for the others."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        async def complete(request: Request) -> dict[str, Any]:
            body = await request.json()
            prompt = body["messages"][-1]["content"]
            with self.lock:
                self.prompts.append(prompt)
            wrong = "ridiculous" in prompt
            reply = {"went_wrong": wrong, "note": NOTE if wrong else "nothing", "step": 2 if wrong else None}
            return {"id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": json.dumps(reply)}}],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}}

        return api


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[Fake, str]]:
    state = Fake()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(state.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", ws="none", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake provider did not start"
        time.sleep(0.02)
    yield state, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def workspace(tmp_path: Path, base_url: str, **coding: Any) -> tuple[Settings, Store]:
    """Seven production chats: five ambiguous (one frustration cue, 0.4), two calm; open coding on."""
    options = {"enabled": True, "daily_calls": 3, "daily_usd": 1.0, "random_share": 0.0, **coding}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    (tmp_path / "assay.toml").write_text(
        f'[judge]\nprovider = "openai"\nmodel = "fake-judge"\nbase_url = "{base_url}"\napi_key = "k"\n'
        f"price_in_per_mtok = 0.15\nprice_out_per_mtok = 0.6\n[signals.open_coding]\n{lines}\n")
    settings = load_settings(tmp_path, env={})
    store = Store(settings.resolved_store_url(), settings.signals)
    units = [chat_unit(f"angry/{i}", user=f"This is ridiculous, my parcel {i} is late.") for i in range(5)]
    store.add_units(units + [chat_unit(f"calm/{i}") for i in range(2)])
    update_signals(store, settings.signals)
    return settings, store


def test_the_budget_stops_calls_at_the_limit(tmp_path: Path, fake: tuple[Fake, str]) -> None:
    state, url = fake
    settings, store = workspace(tmp_path, url)
    assert candidates(store, settings, "fake-judge") == [f"angry/{i}" for i in range(5)]  # ambiguous only
    assert store.select_unit_ids("failed") == []  # 0.4 each: below fail_at
    before = len(state.prompts)
    report = open_code(store, settings, day="2026-03-01")
    assert len(state.prompts) - before == 3  # exactly the daily call budget
    assert (report.coded, report.notes, report.cached, report.left) == (3, 3, 0, 2)
    assert report.stopped == "daily budget of 3 calls reached"
    assert report.budget.calls == 3 and report.budget.usd == pytest.approx(3 * (1000 * 0.15 + 50 * 0.6) / 1e6)
    notes = list_signals(store, kind="open_coding_note")
    assert len(notes) == 3 and {n.step for n in notes} == {2} and notes[0].evidence == NOTE
    assert notes[0].lineage.model_dump() == {"type": "judge", "model": "fake-judge", "prompt_version": PROMPT_VERSION}
    assert len(store.select_unit_ids("failed")) == 3  # 1 - 0.6 * 0.5 = 0.7

    again = open_code(store, settings, day="2026-03-01")  # the same day: no call at all
    assert len(state.prompts) - before == 3 and again.coded == 0 and again.stopped == "daily budget of 3 calls reached"
    tomorrow = open_code(store, settings, day="2026-03-02")
    assert len(state.prompts) - before == 5 and tomorrow.coded == 2 and tomorrow.left == 0 and tomorrow.stopped is None
    assert budget(store, settings, "2026-03-02").calls == 2
    assert candidates(store, settings, "fake-judge") == []  # each unit coded once per content

    store.add_units([chat_unit("angry/copy", user="This is ridiculous, my parcel 0 is late.")])  # as angry/0
    update_signals(store, settings.signals)
    cached = open_code(store, settings, day="2026-03-01")  # that day's budget is spent, but a cache hit is free
    assert (cached.coded, cached.cached, cached.notes, cached.stopped) == (1, 1, 1, None)
    assert len(state.prompts) - before == 5 and budget(store, settings, "2026-03-01").calls == 3


def test_the_dollar_budget_and_the_random_share(tmp_path: Path, fake: tuple[Fake, str]) -> None:
    state, url = fake
    settings, store = workspace(tmp_path, url, daily_usd=0.0002, daily_calls=100, random_share=1.0)
    assert len(candidates(store, settings, "fake-judge")) == 7  # every unit in the random share at 1.0
    before = len(state.prompts)
    report = open_code(store, settings, day="2026-03-01")
    spent = report.budget.usd
    assert 0 < spent <= 0.0002 and report.budget.calls == len(state.prompts) - before
    assert report.stopped is not None and report.stopped.startswith("daily budget of $0.0002 reached")
    assert report.coded == report.budget.calls < 7


def test_the_command_line_runs_and_reports_it(tmp_path: Path, fake: tuple[Fake, str]) -> None:
    _, url = fake
    workspace(tmp_path, url, daily_calls=2)[1].close()
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "signals", "update", "--json"])
    assert result.exit_code == 0, result.output
    coding = json.loads(result.stdout)["open_coding"]
    assert coding["coded"] == 2 and coding["left"] == 3 and coding["budget"]["calls"] == 2
    assert coding["stopped"] == "daily budget of 2 calls reached"


def test_the_local_model_and_a_dollar_budget_without_prices_are_refused(tmp_path: Path) -> None:
    settings = Settings.model_validate({"signals": {"open_coding": {"enabled": True}}})
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(ConfigError, match="needs an API judge"):
        open_code(store, settings)
    priced = Settings.model_validate({"signals": {"open_coding": {"enabled": True, "judge": {
        "provider": "openai", "model": "m", "api_key": "k"}}}})
    with pytest.raises(ConfigError, match="daily_usd budget needs the judge's prices"):
        open_code(store, priced)
    assert Settings.model_validate({"signals": {"open_coding": {"daily_usd": False}}}).signals.open_coding.daily_usd \
        is None
