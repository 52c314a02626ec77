"""The annotation app in-process (``httpx.ASGITransport``) on a real SQLite store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from assay._store import Store
from assay._web.auth import add_user, authenticate, check_api_key, create_api_key
from assay._web.ui import install_ui
from assay.annotations import list_annotations
from tests.ui_fixtures import PASSWORD, XSS_UNIT, seed, settings_for

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
async def app(store: Store, tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def login(client: httpx.AsyncClient, name: str) -> str:
    """Log in; returns the session's CSRF token (from the page after login)."""
    page = await client.get("/login")
    resp = await client.post("/login", data={"name": name, "password": PASSWORD, "next": "/",
                                             "csrf_token": csrf(page.text)})
    assert resp.status_code == 303, resp.text
    home = await client.get("/")
    assert home.status_code == 200
    return csrf(home.text)


async def test_nothing_but_login_without_a_session(client: httpx.AsyncClient) -> None:
    for path in ("/", "/signatures/1", f"/review/{XSS_UNIT}", "/agreement", "/severe", "/signatures/1/criterion",
                 "/workflows", "/review-next"):
        resp = await client.get(path)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/login?next="), path
    page = await client.get("/login")
    assert page.status_code == 200 and "Log in" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_login_rejects_wrong_password_and_missing_csrf(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    token = csrf(page.text)
    no_token = await client.post("/login", data={"name": "ann", "password": PASSWORD})
    assert no_token.status_code == 403
    wrong = await client.post("/login", data={"name": "ann", "password": "nope-nope", "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    assert (await client.get("/")).status_code == 303


async def test_label_needs_csrf_and_is_append_only(client: httpx.AsyncClient, store: Store) -> None:
    token = await login(client, "ann")
    first = await client.get("/signatures/1/next")
    assert first.headers["location"] == f"/review/{XSS_UNIT}?sig=1"
    url = f"/review/{XSS_UNIT}?sig=1"
    rejected = await client.post(url, data={"label": "fail", "severity": "3"})
    assert rejected.status_code == 403
    forged = await client.post(url, data={"label": "fail", "csrf_token": "forged"})
    assert forged.status_code == 403
    assert list_annotations(store) == []
    ok = await client.post(url, data={"label": "fail", "severity": "3", "rationale": "wrong amount",
                                      "csrf_token": token})
    assert ok.status_code == 303 and ok.headers["location"].startswith("/signatures/1/next?after=")
    await client.post(url, data={"label": "pass", "severity": "1", "rationale": "changed my mind",
                                 "csrf_token": token})
    labels = list_annotations(store)
    assert [(a.annotator, a.label, a.severity, a.source) for a in labels] == [
        ("ann", "fail", 3, "ui"), ("ann", "pass", 1, "ui")]
    bad = await client.post(url, data={"label": "maybe", "csrf_token": token})
    assert bad.status_code == 400 and len(list_annotations(store)) == 2


async def test_queue_k_labels_from_different_people(app: FastAPI, store: Store) -> None:
    add_user(store, "cat", PASSWORD, "annotator")
    async with _client(app) as ann, _client(app) as admin, _client(app) as cat:
        tokens = {"ann": await login(ann, "ann"), "admin": await login(admin, "admin"), "cat": await login(cat, "cat")}
        for name, c in (("ann", ann), ("admin", admin)):
            nxt = await c.get("/signatures/1/next")
            assert nxt.headers["location"] == f"/review/{XSS_UNIT}?sig=1"
            await c.post(nxt.headers["location"], data={"label": "fail", "csrf_token": tokens[name]})
        # K = 2 reached on the first item: cat gets the second; ann never gets the first again.
        assert (await cat.get("/signatures/1/next")).headers["location"] == "/review/unit-00?sig=1"
        assert (await ann.get("/signatures/1/next")).headers["location"] == "/review/unit-00?sig=1"
        queue = await ann.get("/signatures/1")
        assert "1 of 7 items have 2 labels" in queue.text
        await admin.post("/signatures/1", data={"size": "7", "k": "3", "csrf_token": tokens["admin"]})
        assert (await cat.get("/signatures/1/next")).headers["location"] == f"/review/{XSS_UNIT}?sig=1"
        forbidden = await ann.post("/signatures/1", data={"size": "7", "k": "1", "csrf_token": tokens["ann"]})
        assert forbidden.status_code == 403


async def test_criterion_edit_marks_older_labels_stale(app: FastAPI, store: Store) -> None:
    async with _client(app) as admin, _client(app) as ann:
        admin_token, ann_token = await login(admin, "admin"), await login(ann, "ann")
        denied = await ann.post("/signatures/1/criterion", data={"text": "x", "csrf_token": ann_token})
        assert denied.status_code == 403
        await admin.post("/signatures/1/criterion", data={"text": "The booked amount matches the fare.",
                                                          "csrf_token": admin_token})
        await ann.post("/review/unit-00?sig=1", data={"label": "fail", "csrf_token": ann_token})
        assert [a.criterion_version for a in list_annotations(store)] == [1]
        page = await admin.get("/review/unit-00?sig=1")
        assert "badge-stale" not in page.text
        await admin.post("/signatures/1/criterion", data={"text": "The amount matches fare plus fees.",
                                                          "csrf_token": admin_token})
        editor = await admin.get("/signatures/1/criterion")
        assert '<span id="criterion-version">2</span>' in editor.text
        assert '<span id="stale-count">1</span>' in editor.text
        page = await admin.get("/review/unit-00?sig=1")  # blind: admin has not labelled unit-00
        assert "fare plus fees" in page.text and 'id="blind-note"' in page.text and "badge-stale" not in page.text
        mine = await ann.get("/review/unit-00?sig=1")  # the stale label shows only after the new one
        assert 'id="stale-note"' in mine.text and "badge-stale" not in mine.text and " checked" not in mine.text
        # re-confirming adds a current record; the stale one stays, shown beside it for comparison
        await ann.post("/review/unit-00?sig=1", data={"label": "fail", "csrf_token": ann_token})
        assert [a.criterion_version for a in list_annotations(store)] == [1, 2]
        mine = await ann.get("/review/unit-00?sig=1")
        assert "badge-stale" in mine.text and "your earlier label, for comparison" in mine.text


async def test_xss_unit_renders_inert(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    page = await client.get(f"/review/{XSS_UNIT}?sig=1")
    assert page.status_code == 200
    html = page.text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html
    assert "<script>window" not in html and "<img src=x" not in html and "onerror=\"window" not in html
    assert not re.search(r"""href\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/htmx.min.js" defer>',
                                                  '<script src="/static/app.js" defer>']
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    # tool arguments folded by key (and escaped), the error step highlighted
    assert '<span class="j-key">amount</span></dt><dd><span class="j-num">120</span>' in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'class="step kind-tool_result error"' in html


async def test_agreement_undefined_kappa_shows_raw_agreement(app: FastAPI) -> None:
    async with _client(app) as admin, _client(app) as ann:
        admin_token, ann_token = await login(admin, "admin"), await login(ann, "ann")
        await admin.post("/signatures/1/criterion", data={"text": "Amounts add up.", "name": "amounts",
                                                          "csrf_token": admin_token})
        for unit in ("unit-00", "unit-01", "unit-02"):
            for c, token in ((admin, admin_token), (ann, ann_token)):
                await c.post(f"/review/{unit}?sig=1", data={"label": "fail", "severity": "2", "csrf_token": token})
        page = await ann.get("/agreement")
        assert page.status_code == 200
        row = page.text.split('<tbody>')[1]
        assert "undefined" in row and "100%" in row and "nan" not in row.lower()
        detail = await ann.get("/agreement/amounts")
        assert "chance agreement is 1" in detail.text and "No disagreements." in detail.text


async def test_disagreement_is_adjudicated_by_an_admin(app: FastAPI, store: Store) -> None:
    async with _client(app) as admin, _client(app) as ann:
        admin_token, ann_token = await login(admin, "admin"), await login(ann, "ann")
        await admin.post("/signatures/1/criterion", data={"text": "Amounts add up.", "name": "amounts",
                                                          "csrf_token": admin_token})
        await admin.post("/review/unit-00?sig=1", data={"label": "fail", "csrf_token": admin_token})
        await ann.post("/review/unit-00?sig=1", data={"label": "pass", "csrf_token": ann_token})
        detail = await ann.get("/agreement/amounts")
        assert "/adjudicate/amounts/unit-00" in detail.text and "open" in detail.text
        denied = await ann.post("/adjudicate/amounts/unit-00", data={"label": "fail", "rationale": "r",
                                                                     "csrf_token": ann_token})
        assert denied.status_code == 403
        no_reason = await admin.post("/adjudicate/amounts/unit-00", data={"label": "fail", "csrf_token": admin_token})
        assert no_reason.status_code == 400
        done = await admin.post("/adjudicate/amounts/unit-00", data={
            "label": "fail", "rationale": "the fare excludes fees", "csrf_token": admin_token})
        assert done.status_code == 303
        final = list_annotations(store)[-1]
        assert (final.source, final.label, final.annotator) == ("adjudication", "fail", "admin")
        detail = await ann.get("/agreement/amounts")
        assert "<strong>fail</strong> by admin" in detail.text


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    token = await login(client, "ann")
    assert (await client.post("/logout", data={})).status_code == 403
    assert (await client.post("/logout", data={"csrf_token": token})).status_code == 303
    assert (await client.get("/")).status_code == 303


def test_passwords_and_api_keys(store: Store) -> None:
    assert authenticate(store, "ann", PASSWORD) is not None
    assert authenticate(store, "ann", PASSWORD + "x") is None
    assert authenticate(store, "nobody", PASSWORD) is None
    key = create_api_key(store, "ci")
    assert key.startswith("assay_") and check_api_key(store, key)
    assert not check_api_key(store, key[:-1] + ("A" if key[-1] != "A" else "B"))


async def test_rare_severe_inbox_lists_flagged_units(client: httpx.AsyncClient, store: Store) -> None:
    from assay.signatures import flag_unit

    await login(client, "ann")
    assert "Nothing flagged." in (await client.get("/severe")).text
    flag_unit(store, "unit-03", "refund <b>issued</b> twice", flagged_by="ann")
    page = await client.get("/severe")
    assert '<a href="/review/unit-03?sig=1">unit-03</a>' in page.text  # the signature's criterion kept
    assert "refund &lt;b&gt;issued&lt;/b&gt; twice" in page.text


async def test_unknown_unit_or_signature_is_404(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    assert (await client.get("/review/no-such-unit")).status_code == 404
    assert (await client.get("/review/unit-00?sig=99")).status_code == 404
    assert (await client.get("/signatures/99")).status_code == 404
    assert (await client.get("/signatures/99/next")).status_code == 404
    assert (await client.get("/agreement/nope")).status_code == 404


async def test_login_redirects_only_to_same_site_paths(client: httpx.AsyncClient) -> None:
    for target, expected in (("/agreement", "/agreement"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
                             ("https://evil.example/", "/")):
        client.cookies.clear()
        page = await client.get("/login", params={"next": target})
        resp = await client.post("/login", data={"name": "ann", "password": PASSWORD, "next": target,
                                                 "csrf_token": csrf(page.text)})
        assert resp.headers["location"] == expected, target


def _second_signature(store: Store) -> list[str]:
    """Signature 2: two more failed units (smaller than signature 1, so ranked after it)."""
    from datetime import UTC, datetime

    from assay._store.tables import MemberRow, SignatureRow
    from tests.ui_fixtures import make_unit

    ids = ["other-00", "other-01"]
    store.add_units([make_unit(u, user_text="Cancel my order.") for u in ids])
    with store.session() as s:
        s.add(SignatureRow(id=2, structural_key="tool=cancel", label="cancel failed", keywords=[], size=2,
                           representative_unit=ids[0], status="new"))
        s.flush()
        for rank, uid in enumerate(ids):
            s.add(MemberRow(unit_id=uid, signature_id=2, structural_key="tool=cancel", distance=rank / 10,
                            seen_at=datetime.now(UTC), assignment="cluster"))
    return ids


async def test_review_across_signatures_meets_one_of_each_in_turn(client: httpx.AsyncClient, store: Store) -> None:
    others = _second_signature(store)
    token = await login(client, "ann")
    home = await client.get("/")
    assert 'href="/review-next"' in home.text
    first = await client.get("/review-next")
    assert first.headers["location"] == f"/review/{XSS_UNIT}?sig=1&across=1"
    page = await client.get(first.headers["location"])
    assert f'action="/review/{XSS_UNIT}?sig=1&amp;across=1"' in page.text
    labelled = await client.post(first.headers["location"], data={"label": "fail", "csrf_token": token})
    assert labelled.headers["location"] == f"/review-next?after={XSS_UNIT}"
    second = await client.get(labelled.headers["location"])
    assert second.headers["location"] == f"/review/{others[0]}?sig=2&across=1"  # the next signature's first
    third = await client.get(f"/review-next?after={others[0]}")  # skipped: the first of signature 1's rest
    assert third.headers["location"].startswith("/review/unit-") and "sig=1" in third.headers["location"]
    assert [a.extra for a in list_annotations(store)] == [{"signature_id": 1}]


async def test_signatures_page_shows_the_signal_mix(client: httpx.AsyncClient, store: Store) -> None:
    from assay.signals import FailureSignal, FeedbackLineage, add_signals

    add_signals(store, [FailureSignal(unit_id="unit-00", source="feedback", kind="thumbs_down", strength=0.7,
                                      evidence="thumbs down", time_ns=0, lineage=FeedbackLineage(channel="api"))])
    await login(client, "ann")
    page = await client.get("/")
    assert "7 recorded failures, 1 thumbs-down" in page.text  # never-scanned members count by their outcome


async def test_workflows_page_groups_every_unit(client: httpx.AsyncClient, store: Store) -> None:
    from tests.test_signal_store import chat_unit

    store.add_units([chat_unit(f"chat-{i}", user="Where is my parcel?") for i in range(3)])
    await login(client, "ann")
    page = await client.get("/workflows")
    assert page.status_code == 200
    assert 'href="/workflows"' in page.text and "10 units, 7 failed" in page.text
    assert "book reservation, asked about" in page.text and "no action taken" in page.text


async def test_lifecycle_is_shown_with_its_history(client: httpx.AsyncClient, store: Store, tmp_path: Path) -> None:
    from assay.signatures import update_lifecycle

    await login(client, "ann")
    assert [c.to_state for c in update_lifecycle(store, settings_for(tmp_path))] == ["new"]
    home = await client.get("/")
    assert 'class="life life-new"' in home.text
    queue = await client.get("/signatures/1")
    assert 'id="lifecycle"' in queue.text and "no criterion yet" in queue.text


async def test_signatures_page_says_when_to_stop_reviewing(client: httpx.AsyncClient, store: Store) -> None:
    from assay.annotations import Annotation, add_annotations, add_criterion

    await login(client, "ann")
    assert "is unknown" in (await client.get("/")).text
    add_criterion(store, "The amount adds up.", name="amounts", signature_id=1)
    add_annotations(store, [Annotation(unit_id=u, annotator="ann", label="fail", criterion=c)
                            for u, c in (("unit-00", "amounts"), ("unit-01", "amounts"), ("unit-02", None))])
    page = await client.get("/")
    assert 'id="unseen-modes"' in page.text and "<strong>33%</strong>" in page.text  # 1 of 3 seen once
    assert "1 failure labelled without a criterion" in page.text


async def test_the_criterion_editor_sets_the_scale_and_labels_follow_it(app: FastAPI, store: Store) -> None:
    async with _client(app) as admin:
        token = await login(admin, "admin")
        made = await admin.post("/signatures/1/criterion", data={
            "text": "How good is the booking?", "name": "quality", "scale": "ordinal",
            "scale_items": "1 = wrong\n2 = right but clumsy\n3 = right and clear\n", "csrf_token": token})
        assert made.status_code == 303
        page = await admin.get("/signatures/1/criterion")
        assert 'id="criterion-scale">ordinal' in page.text and "right but clumsy" in page.text
        bad = await admin.post("/signatures/1/criterion", data={
            "text": "How good is the booking?", "scale": "ordinal", "scale_items": "high = good", "csrf_token": token})
        assert bad.status_code == 400 and "integer" in bad.text
        review = await admin.get("/review/unit-00?sig=1")
        assert 'id="anchors"' in review.text and 'data-key="3"' in review.text and "right and clear" in review.text
        for posted, status in (({"value": "4"}, 400), ({"label": "pass"}, 400), ({"value": "2"}, 303)):
            sent = await admin.post("/review/unit-00?sig=1", data=posted | {"csrf_token": token})
            assert sent.status_code == status, (posted, sent.text)
        assert [(a.value, a.label) for a in list_annotations(store, "quality")] == [(2, None)]
        again = await admin.post("/signatures/1/criterion", data={
            "text": "How good is the booking?", "scale": "binary", "scale_items": "", "csrf_token": token})
        assert again.status_code == 303
        page = await admin.get("/signatures/1/criterion")
        assert 'id="criterion-version">2' in page.text and 'id="stale-count">1' in page.text
