"""Sign-in throttling and the audit record, in process (``httpx.ASGITransport``) on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from assay._store import Store
from assay._store.audit import list_audit, record_audit
from assay._web.signin import Backoff, SignInThrottle
from assay._web.ui import install_ui
from tests.test_web_ui import csrf
from tests.ui_fixtures import PASSWORD, seed, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A clock the test moves (the throttle's waits are counted on it, never slept)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(store: Store, tmp_path: Path, clock: Clock) -> FastAPI:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    app.state.assay_ui.throttle = SignInThrottle(clock=clock)
    return app


def _client(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 5000)),
                             base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


async def _try(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await client.get("/login")
    return await client.post("/login", data={"name": name, "password": password, "next": "/",
                                             "csrf_token": csrf(page.text)})


def test_backoff_doubles_after_the_free_failures_up_to_the_cap() -> None:
    backoff = Backoff(free=3, base_s=1, cap_s=300)
    assert [backoff.wait_s(n) for n in range(8)] == [0, 0, 0, 1, 2, 4, 8, 16]
    assert backoff.wait_s(40) == 300


async def test_thirty_wrong_passwords_slow_down_with_a_clear_message(client: httpx.AsyncClient, store: Store,
                                                                     clock: Clock) -> None:
    answers = [await _try(client, "ann", f"wrong-{i}") for i in range(30)]
    codes = [r.status_code for r in answers]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429] * 27  # the 4th attempt comes too early
    assert "Wrong name or password." in answers[0].text and "Wait" not in answers[0].text
    assert "Wrong name or password. Too many failed sign-ins. Wait 1 second, then try again." in answers[2].text
    assert "Too many failed sign-ins. Wait 1 second, then try again." in answers[3].text
    assert answers[3].headers["retry-after"] == "1"
    # even the right password waits: a throttled attempt is not checked at all
    assert (await _try(client, "ann", PASSWORD)).status_code == 429
    clock.now += timedelta(seconds=1)
    assert (await _try(client, "ann", "wrong-again")).status_code == 401  # failure 4: the next waits 2 s
    clock.now += timedelta(seconds=1)
    late = await _try(client, "ann", PASSWORD)
    assert late.status_code == 429 and late.headers["retry-after"] == "1"
    clock.now += timedelta(seconds=1)
    assert (await _try(client, "ann", PASSWORD)).status_code == 303  # a success clears the account's count
    actions = [e.action for e in reversed(list_audit(store, target="ann"))]
    assert actions == ["signin.failed"] * 3 + ["signin.throttled"] * 28 + ["signin.failed", "signin.throttled",
                                                                           "signin.ok"]
    assert {e.client for e in list_audit(store, target="ann")} == {"10.0.0.1"}
    assert (await _try(client, "ann", "one-typo")).status_code == 401  # a fresh start after the success


async def test_an_unknown_name_is_answered_like_a_known_one(app: FastAPI) -> None:
    async with _client(app, "10.0.0.2") as known, _client(app, "10.0.0.3") as unknown:
        a = [await _try(known, "ann", "wrong-pass") for _ in range(5)]
        b = [await _try(unknown, "nobody-here", "wrong-pass") for _ in range(5)]
    assert [r.status_code for r in a] == [r.status_code for r in b] == [401, 401, 401, 429, 429]

    def message(resp: httpx.Response) -> str:
        return resp.text.split('role="alert">')[1].split("<")[0]

    assert [message(r) for r in a] == [message(r) for r in b]


async def test_per_address_throttle_spans_accounts(app: FastAPI, store: Store, clock: Clock) -> None:
    app.state.assay_ui.throttle = SignInThrottle(account=Backoff(free=100), address=Backoff(free=4), clock=clock)
    async with _client(app, "192.0.2.7") as spray, _client(app, "192.0.2.8") as other:
        codes = [(await _try(spray, f"user-{i}", "wrong-pass")).status_code for i in range(6)]
        assert codes == [401, 401, 401, 401, 429, 429]  # one guess per name, one address: slowed down
        assert (await _try(other, "ann", PASSWORD)).status_code == 303  # another address is not
    throttled = list_audit(store, actions=("signin.throttled",))
    assert {e.client for e in throttled} == {"192.0.2.7"} and {e.who for e in throttled} == {"user-4", "user-5"}


def test_record_audit_is_a_general_append_only_log(store: Store) -> None:
    first = record_audit(store, "admin", "criterion.edit", "criterion:1", {"from_version": 1, "stale_labels": 3})
    second = record_audit(store, "admin", "user.add", "bob", {"role": "annotator"}, client="10.0.0.9")
    entries = list_audit(store)
    assert [e.id for e in entries] == [second, first]  # newest first
    assert entries[1].details == {"from_version": 1, "stale_labels": 3} and entries[1].client is None
    assert entries[0].at.tzinfo is not None and entries[0].who == "admin"
    assert [e.action for e in list_audit(store, actions=("user.add",))] == ["user.add"]
    assert list_audit(store, since=datetime.now(UTC) + timedelta(minutes=1)) == []
    record_audit(store, "x" * 500, "a" * 100, "t" * 500)
    long = list_audit(store, limit=1)[0]
    assert (len(long.who), len(long.action), len(long.target)) == (200, 60, 300)
