"""Errors as pages in the app's style for the browser; JSON stays JSON for the REST API and the receiver.
In process (``httpx.ASGITransport``), the whole app (``create_app``) on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from assay._store import Store
from assay._web.app import create_app
from assay._web.auth import create_api_key
from tests.test_web_ui import login
from tests.ui_fixtures import seed, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    return store


@pytest.fixture
def app(store: Store, tmp_path: Path) -> FastAPI:
    app = create_app(settings_for(tmp_path), store)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _page(resp: httpx.Response) -> str:
    assert resp.headers["content-type"].startswith("text/html"), resp.headers["content-type"]
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert '<link rel="stylesheet" href="/static/app.css">' in resp.text and 'id="error-detail"' in resp.text
    return resp.text


async def test_browser_errors_are_pages_in_the_app_s_style(client: httpx.AsyncClient) -> None:
    token = await login(client, "ann")
    missing = await client.get("/signatures/999")
    assert missing.status_code == 404 and "no signature 999" in _page(missing) and "Not Found" in missing.text
    assert 'href="/"' in missing.text and "Log out" in missing.text  # the header of a logged-in page
    nowhere = await client.get("/no/such/page")
    assert nowhere.status_code == 404 and "Not Found" in _page(nowhere)
    bad_type = await client.get("/signatures/abc")
    assert bad_type.status_code == 400 and "sid" in _page(bad_type)
    forbidden = await client.post("/signatures/1", data={"size": "5", "k": "2", "csrf_token": token})
    assert forbidden.status_code == 403 and "admins only" in _page(forbidden)
    no_csrf = await client.post("/review/unit-00?sig=1", data={"label": "fail"})
    assert no_csrf.status_code == 403 and "CSRF" in _page(no_csrf)
    bad_label = await client.post("/review/unit-00?sig=1", data={"label": "maybe", "csrf_token": token})
    assert bad_label.status_code == 400 and "bad label" in _page(bad_label)
    crash = await client.get("/boom")
    assert crash.status_code == 500 and "Internal server error" in _page(crash)
    assert "secret internals" not in crash.text and "RuntimeError" not in crash.text


async def test_redirects_pass_through_and_logged_out_errors_offer_the_login(client: httpx.AsyncClient) -> None:
    resp = await client.get("/signatures/1")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
    nowhere = await client.get("/no/such/page")
    assert nowhere.status_code == 404 and 'href="/login"' in _page(nowhere) and "Log out" not in nowhere.text


async def test_machines_keep_json(client: httpx.AsyncClient, store: Store) -> None:
    key = create_api_key(store, "ci")
    api = await client.get("/api/v1/units/no-such-unit", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 404 and api.json() == {"detail": "unit not found: 'no-such-unit'"}
    unknown = await client.get("/api/v1/nothing-here", headers={"Authorization": f"Bearer {key}"})
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/json"
    outside = await client.get("/api/nothing")
    assert outside.status_code == 404 and outside.json() == {"detail": "Not Found"}
    otlp = await client.get("/v1/traces")
    assert otlp.status_code == 405 and otlp.headers["content-type"] == "application/json"
    static = await client.get("/static/nope.css")
    assert static.status_code == 404 and "text/html" not in static.headers.get("content-type", "")
