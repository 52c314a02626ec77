"""Queues beside the peers': search and filters over units (shareable URLs), adding what a search finds to a
queue (from a search, a signature, failed scores), reviewers assigned to a queue, reservations and their release,
and contrast items (units of the nearest signatures and passing units). In process, real SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from assay._store import Store
from assay._store.audit import list_audit
from assay._store.scores import RunParams, new_run
from assay._store.tables import MemberRow, ScoreRow, SignatureRow
from assay._web.auth import add_user
from assay._web.ui import install_ui
from assay.annotations import Annotation, add_annotations, get_criterion
from assay.annotations.queue import queue_status
from assay.annotations.queue_tools import contrast_items, neighbour_signatures
from assay.calibration.dataset import consolidate
from assay.signatures.embeddings import vector_to_bytes
from tests.test_web_ui import csrf, login
from tests.ui_fixtures import PASSWORD, make_replayed_unit, make_unit, seed, seed_loop, settings_for

pytestmark = pytest.mark.anyio
PASSING = [f"ok-{i}" for i in range(4)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """:func:`seed` (signature 1), :func:`seed_loop` (signature 4), a replayed unit, four units that passed, and
    scores of an evaluator ``amounts-check``: unit-00 fail then pass, unit-01 fail, unit-02 an error."""
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    seed_loop(store)
    store.add_units([make_replayed_unit()] + [make_unit(u, tool="search_flights").model_copy(update={
        "outcome": "pass", "spans": make_unit(u, tool="search_flights").spans[:1]}) for u in PASSING])
    first, later = new_run(store, "gate", RunParams()), new_run(store, "gate", RunParams())
    with store.session() as s:
        for run, unit, status, verdict in ((first, "unit-00", "scored", "fail"), (first, "unit-01", "scored", "fail"),
                                           (first, "unit-02", "error", None), (later, "unit-00", "scored", "pass")):
            s.add(ScoreRow(run_id=run, unit_id=unit, evaluator_name="amounts-check", evaluator_version="v1",
                           status=status, score=None if verdict is None else float(verdict == "pass"),
                           verdict=verdict))
            s.flush()
    add_user(store, "cat", PASSWORD, "annotator")
    return store


@pytest.fixture
async def app(store: Store, tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        await login(c, "admin")
        yield c


def _found(html: str) -> list[str]:
    table = html[html.index('id="units"'):html.index("</table>", html.index('id="units"'))]
    return re.findall(r'<tr><td><a href="/review/[^"]+">([^<]+)</a>', table)


async def test_search_and_filters_with_shareable_urls(admin: httpx.AsyncClient) -> None:
    async def found(**params: str) -> list[str]:
        r = await admin.get("/units", params=params)
        assert r.status_code == 200, r.text
        count = re.search(r'<p id="match-count"><strong>(\d+)</strong>', r.text)
        assert count and int(count.group(1)) == len(_found(r.text))
        return sorted(_found(r.text))

    loop_fail = [f"loop-fail-{i:02d}" for i in range(10)]
    loop_pass = [f"loop-pass-{i:02d}" for i in range(10)]
    sig1 = sorted(["unit-xss"] + [f"unit-{i:02d}" for i in range(6)])
    assert len(await found()) == 7 + 20 + 1 + len(PASSING)
    assert await found(q="cancel_reservation") == loop_fail  # text inside the steps (a tool name)
    assert await found(q="LOOP-PASS") == loop_pass  # the unit id, any case
    assert await found(q="100%") == []  # LIKE wildcards are text
    assert await found(source="replay") == ["replayed"]
    assert await found(signature="1") == sig1
    assert await found(signal="human_fail") == loop_fail
    assert await found(label="pass") == loop_pass
    assert await found(label="unlabelled") == sorted(sig1 + ["replayed"] + PASSING)
    assert await found(evaluator="amounts-check", verdict="fail") == ["unit-01"]  # unit-00's latest says pass
    assert await found(verdict="pass") == ["unit-00"]
    assert await found(verdict="error") == ["unit-02"]
    assert await found(state="passed") == PASSING
    assert await found(state="failed", label="fail") == loop_fail
    assert await found(since="2023-11-14", until="2023-11-14", signature="4") == sorted(loop_fail + loop_pass)
    today = datetime.now(UTC).date().isoformat()
    assert await found(since=today) == ["replayed"]  # numbered steps: dated by ingestion; the rest ran in 2023
    assert await found(since="2023-11-15", until="2024-01-01") == []
    page = await admin.get("/units", params={"q": "cancel_reservation", "label": "fail", "state": ""})
    share = re.search(r'id="share-url" readonly value="([^"]+)"', page.text)
    assert share and parse_qs(urlsplit(share.group(1).replace("&amp;", "&")).query) == {
        "q": ["cancel_reservation"], "label": ["fail"]}
    assert (await admin.get("/units", params={"since": "yesterday"})).status_code == 400
    assert (await admin.get("/units", params={"label": "maybe"})).status_code == 400


async def test_add_what_a_search_finds_to_a_queue(admin: httpx.AsyncClient, app: FastAPI, store: Store) -> None:
    page = await admin.get("/units", params={"q": "cancel_reservation", "to": "1"})
    assert '<option value="1" selected>' in page.text
    token = csrf(page.text)
    r = await admin.post("/units/add-to-queue", data={"filter": "q=cancel_reservation", "signature": "1",
                                                      "csrf_token": token})
    assert r.status_code == 303 and "added 10 unit(s)" in unquote(r.headers["location"])
    await admin.post("/units/add-to-queue", data={"filter": "verdict=error", "signature": "1", "csrf_token": token})
    await admin.post("/units/add-to-queue", data={"filter": "signature=4", "signature": "1", "csrf_token": token})
    origins = {i.unit_id: i.origin for i in queue_status(store, 1).items}
    assert origins["unit-00"] == "sample" and origins["loop-fail-00"] == "search" and origins["loop-pass-00"] == \
        "signature"
    assert len(origins) == 7 + 20  # unit-02 (the error) is in the sample already
    queue = (await admin.get("/signatures/1")).text
    assert "<td>search</td>" in queue and 'id="additions"' in queue and "q=cancel_reservation" in queue
    added = [(a.details["origin"], a.details["added"]) for a in list_audit(store) if a.action == "queue.add"]
    assert added == [("signature", 10), ("evaluator", 1), ("search", 10)]
    removed = await admin.post("/signatures/1/remove", data={"unit_id": "loop-fail-00", "csrf_token": token})
    assert removed.status_code == 303 and "loop-fail-00" not in {i.unit_id for i in queue_status(store, 1).items}
    async with _client(app) as ann:
        token_ann = await login(ann, "ann")
        denied = await ann.post("/units/add-to-queue", data={"filter": "", "signature": "1", "csrf_token": token_ann})
        assert denied.status_code == 403
    assert (await admin.post("/units/add-to-queue", data={"filter": "", "signature": "99",
                                                          "csrf_token": token})).status_code == 404


async def test_reviewers_decide_who_is_handed_items(admin: httpx.AsyncClient, app: FastAPI, store: Store) -> None:
    token = csrf((await admin.get("/signatures/4")).text)
    r = await admin.post("/signatures/1/reviewers", data={"reviewer": ["cat"], "csrf_token": token})
    assert r.status_code == 303
    async with _client(app) as ann, _client(app) as cat:
        await login(ann, "ann")
        await login(cat, "cat")
        refused = await ann.get("/signatures/1/next")
        assert refused.status_code == 303 and "assigned to cat" in unquote(refused.headers["location"])
        assert (await cat.get("/signatures/1/next")).headers["location"].startswith("/review/")
        assert (await admin.get("/signatures/1/next")).headers["location"].startswith("/review/")
        assert '<span class="badge">yours</span>' in (await cat.get("/")).text
        assert '<span class="badge">yours</span>' not in (await ann.get("/")).text
        assert "Assigned: cat" in (await ann.get("/signatures/1")).text
    await admin.post("/signatures/1/reviewers", data={"csrf_token": token})  # none: anyone again
    async with _client(app) as ann:
        await login(ann, "ann")
        assert (await ann.get("/signatures/1/next")).headers["location"].startswith("/review/")
    assigned = [a.details["reviewers"] for a in list_audit(store) if a.action == "queue.assign"]
    assert assigned == [[], ["cat"]]
    assert (await admin.post("/signatures/4/reviewers", data={"reviewer": ["nobody"],
                                                              "csrf_token": token})).status_code == 404


async def test_reservations_are_shown_and_an_admin_releases_them(admin: httpx.AsyncClient, app: FastAPI,
                                                                  store: Store) -> None:
    async with _client(app) as ann:
        await login(ann, "ann")
        first = (await ann.get("/signatures/1/next")).headers["location"]
        unit = unquote(first.split("/review/")[1].split("?")[0])
        queue = (await ann.get("/signatures/1")).text
        reserved = queue[queue.index('id="reservations"'):queue.index("</table>", queue.index('id="reservations"'))]
        assert f"<td>{unit}</td><td>ann</td>" in reserved and "Release" not in reserved  # annotators only see
        token = csrf((await admin.get("/signatures/1")).text)
        assert "Release" in (await admin.get("/signatures/1")).text
        r = await admin.post("/signatures/1/release", data={"unit_id": unit, "annotator": "ann", "csrf_token": token})
        assert r.status_code == 303 and "No item is reserved." in (await admin.get("/signatures/1")).text
        again = await admin.post("/signatures/1/release", data={"unit_id": unit, "annotator": "ann",
                                                               "csrf_token": token})
        assert again.status_code == 404
        assert (await ann.post("/signatures/1/release", data={"unit_id": unit, "annotator": "ann",
                                                              "csrf_token": csrf(queue)})).status_code == 403
    released = [a.details for a in list_audit(store) if a.action == "queue.release"]
    assert released == [{"unit_id": unit, "annotator": "ann"}]


def test_neighbours_by_centroid_else_by_structural_key(store: Store) -> None:
    with store.session() as s:
        s.add(SignatureRow(id=5, structural_key="tool=cancel_reservation | error=timeout", label="timeouts",
                           keywords=[], size=1, representative_unit="replayed", status="new"))
        s.flush()
        s.add(MemberRow(unit_id="replayed", signature_id=5, structural_key="tool=cancel_reservation",
                        distance=0.0, assignment="cluster"))
    assert neighbour_signatures(store, 4) == [5, 1]  # shares tool=cancel_reservation
    with store.session() as s:
        for sid, vector in ((4, [1.0, 0.0]), (1, [0.9, 0.1]), (5, [0.0, 1.0])):
            row = s.get(SignatureRow, sid)
            assert row is not None
            row.centroid, row.embedding_model = vector_to_bytes(np.array(vector, dtype=np.float32)), "m"
    assert neighbour_signatures(store, 4) == [1, 5]  # the centroids decide when they exist


async def test_contrast_items_give_the_calibration_set_both_classes(admin: httpx.AsyncClient,
                                                                      store: Store) -> None:
    picked = contrast_items(store, 1, neighbours=3, passing=2)
    assert [o for _, o, _ in picked] == ["contrast-neighbour"] * 3 + ["contrast-passing"] * 2
    assert all(u.startswith("loop-") and d == "signature 4" for u, o, d in picked if o == "contrast-neighbour")
    assert {u for u, o, _ in picked if o == "contrast-passing"} <= set(PASSING)
    assert picked == contrast_items(store, 1, neighbours=3, passing=2)  # deterministic
    token = csrf((await admin.get("/signatures/1")).text)
    await admin.post("/signatures/1/criterion", data={"text": "Amounts add up.", "name": "amounts",
                                                      "csrf_token": token})
    r = await admin.post("/signatures/1/contrast", data={"neighbours": "3", "passing": "2", "csrf_token": token})
    assert r.status_code == 303 and "added 5 contrast item(s)" in unquote(r.headers["location"])
    items = queue_status(store, 1).items
    assert [i.origin for i in items].count("contrast-passing") == 2
    page = (await admin.get("/signatures/1")).text
    assert "<td>contrast-neighbour</td>" in page and "<td>contrast-passing</td>" in page
    add_annotations(store, [Annotation(unit_id=i.unit_id, annotator="ann", criterion="amounts",
                                       label="pass" if i.origin == "contrast-passing" else "fail") for i in items])
    labelled, _, _ = consolidate(store, get_criterion(store, "amounts"))
    assert {str(i.target) for i in labelled} == {"pass", "fail"}
    bad = await admin.post("/signatures/1/contrast", data={"neighbours": "-1", "passing": "0", "csrf_token": token})
    assert bad.status_code == 400
    assert [a.details["added"] for a in list_audit(store) if a.action == "queue.contrast"] == [5]
