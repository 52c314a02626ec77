"""The review page reads like the conversation: markdown rendered safely, tool results folded and tabled, the
task, first request and the source's outcome on top, the system prompt one click away with search, offsets only
when they mean something, step notes (comments, corrected outputs) with provenance, in the API, and the criterion
kept on links from adjudication and the severe inbox. In process (``httpx.ASGITransport``), real SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow
from assay._web.app import create_app
from assay._web.auth import create_api_key
from assay._web.ui import install_ui
from assay.annotations import Annotation, add_annotations, add_criterion, list_annotations
from assay.annotations.step_notes import step_notes
from tests.test_web_ui import csrf, login
from tests.ui_fixtures import FLIGHTS, make_replayed_unit, make_unit, seed, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    store.add_units([make_replayed_unit()])
    return store


@pytest.fixture
async def client(store: Store, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def _step(html: str, index: int) -> str:
    start = html.index(f'id="step-{index}"')
    end = html.find('<details class="step', start)
    return html[start:end if end != -1 else len(html)]


async def test_assistant_markdown_renders_without_raw_html(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    html = (await client.get("/review/replayed")).text
    reply = _step(html, 3)
    assert "assistant" in reply and "<strong>Origin:</strong>" in reply
    assert "&lt;script&gt;window.__xss = 5&lt;/script&gt;" in reply and "<script>window" not in html
    assert "javascript:" in reply and not re.search(r"""href\s*=\s*["']?\s*javascript:""", html, re.I)
    assert '<a href="https://example.com/fares" rel="noopener noreferrer nofollow">docs</a>' in reply
    assert "<table>" in reply and "<td>120</td>" in reply
    assert "style=" not in html  # table alignment would break the CSP (style-src 'self')
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/htmx.min.js" defer>',
                                                  '<script src="/static/app.js" defer>']


async def test_tool_results_fold_by_key_and_records_become_a_table(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    html = (await client.get("/review/replayed")).text
    call, result = _step(html, 4), _step(html, 5)
    assert '<span class="j-key">origin</span></dt><dd><span class="j-str">SFO</span>' in call
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", result)
    assert header and re.findall(r"<th>(\w+)</th>", header.group(1)) == ["flight", "price", "seats", "note"]
    assert result.count("<tr><td>") == len(FLIGHTS)
    assert '<span class="j-key">economy</span> 3 · <span class="j-key">business</span> 1' in result  # inline
    long_value = re.search(r'<details class="fold long"><summary>(x+) … <span class="muted">\(400 characters\)', result)
    assert long_value and len(long_value.group(1)) == 120


async def test_task_request_outcome_and_the_policy_with_search(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    html = (await client.get("/review/replayed")).text
    context = html[html.index('id="reading-context"'):html.index('id="failure-signals"')]
    assert "Book the cheapest flight SFO to JFK" in context
    assert "I want to fly from SFO to JFK on May 20." in context
    assert "fail (reward 0) · ended by user" in context
    assert 'href="/policy/replayed"' in context and "characters): read and search it" in context
    system = _step(html, 1)
    assert "read and search it" in system and "Each extra baggage" not in system  # not repeated in the timeline
    policy = await client.get("/policy/replayed", params={"q": "BAGGAGE"})
    assert policy.status_code == 200 and "<h1>Airline policy</h1>" in policy.text
    matches = policy.text[policy.text.index('id="policy-matches"'):policy.text.index('class="policy"')]
    assert "<strong>2</strong> sections" in matches and "Each extra <mark>baggage</mark> costs" in matches
    fragment = await client.get("/policy/replayed", params={"q": "refund"},
                                headers={"HX-Request": "true", "HX-Target": "policy-matches"})
    assert fragment.text.startswith('<div id="policy-matches"') and "<mark>Refund</mark>s go" in fragment.text
    assert "<h1>" not in fragment.text
    none = await client.get("/policy/unit-00")
    assert "This unit has no system prompt." in none.text
    assert (await client.get("/policy/nope")).status_code == 404


async def test_offsets_only_when_the_times_are_real(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    replayed = (await client.get("/review/replayed")).text
    assert 'id="no-times"' in replayed and not re.search(r'<span class="time">\+', replayed)
    real = (await client.get("/review/unit-00")).text
    assert 'id="no-times"' not in real and '<span class="time">+0.002 s</span>' in real


async def test_step_notes_are_appended_with_provenance(client: httpx.AsyncClient, store: Store) -> None:
    token = await login(client, "admin")
    await client.post("/signatures/1/criterion", data={"text": "Amounts add up.", "name": "amounts",
                                                       "csrf_token": token})
    form = await client.get("/notes/3/unit-00?sig=1")
    assert form.status_code == 200 and 'name="kind" value="correction"' in form.text
    assert (await client.post("/notes/3/unit-00?sig=1", data={"kind": "comment", "text": "x"})).status_code == 403
    saved = await client.post("/notes/3/unit-00?sig=1", data={"kind": "correction", "csrf_token": token,
                                                             "text": "Charge 121, the fare plus the fee."})
    assert saved.status_code == 303 and saved.headers["location"] == "/review/unit-00?sig=1#step-3"
    fragment = await client.post("/notes/3/unit-00?sig=1", headers={"HX-Request": "true"},
                                 data={"kind": "comment", "text": "the fee was never shown", "csrf_token": token})
    assert fragment.text.startswith('<div class="step-notes">') and fragment.text.count('class="note ') == 2
    assert "Saved." in fragment.text
    bad = await client.post("/notes/3/unit-00", data={"kind": "opinion", "text": "x", "csrf_token": token})
    assert bad.status_code == 400 and "kind" in bad.text
    assert (await client.post("/notes/99/unit-00", data={"kind": "comment", "text": "x",
                                                         "csrf_token": token})).status_code == 404
    notes = step_notes(store, ["unit-00"])
    unit = store.unit("unit-00")
    assert [(n.step, n.kind, n.author, n.criterion, n.criterion_version, n.source) for n in notes] == [
        (3, "correction", "admin", "amounts", 1, "ui"), (3, "comment", "admin", "amounts", 1, "ui")]
    assert notes[0].span_id == unit.spans[1].span_id and len(notes[0].content_hash) == 64
    page = (await client.get("/review/unit-00?sig=1")).text
    step = _step(page, 3)
    assert "Corrected output" in step and "Charge 121, the fare plus the fee." in step and "✎ 2" in step


async def test_adjudication_and_severe_links_keep_the_criterion(client: httpx.AsyncClient, store: Store) -> None:
    from assay.signatures import flag_unit

    token = await login(client, "admin")
    await client.post("/signatures/1/criterion", data={"text": "Amounts add up.", "name": "amounts",
                                                       "csrf_token": token})
    add_annotations(store, [Annotation(unit_id="unit-01", annotator=who, label=label, criterion="amounts")
                            for who, label in (("ann", "pass"), ("bob", "fail"))])
    adjudicate = await client.get("/adjudicate/amounts/unit-01")
    link = re.search(r'id="read-unit" href="([^"]+)"', adjudicate.text)
    assert link and link.group(1) == "/review/unit-01?criterion=amounts"
    review = await client.get(link.group(1))
    assert 'id="criterion"' in review.text and 'action="/review/unit-01?criterion=amounts"' in review.text
    saved = await client.post("/review/unit-01?criterion=amounts",
                              data={"label": "fail", "severity": "3", "csrf_token": csrf(review.text)})
    assert saved.status_code == 303 and saved.headers["location"] == "/review/unit-01?criterion=amounts&saved=unit-01"
    mine = [a for a in list_annotations(store) if a.annotator == "admin"]
    assert [(a.unit_id, a.criterion, a.criterion_version) for a in mine] == [("unit-01", "amounts", 1)]
    flag_unit(store, "unit-02", "refund issued twice", flagged_by="ann")
    severe = (await client.get("/severe")).text
    assert 'href="/review/unit-02?sig=1"' in severe
    assert (await client.get("/review/unit-01?criterion=nope")).status_code == 404


async def test_finished_queue_points_to_the_next_signature_by_impact(client: httpx.AsyncClient,
                                                                     store: Store) -> None:
    store.add_units([make_unit(f"other-{i}") for i in range(3)])
    with store.session() as s:
        s.add(SignatureRow(id=2, structural_key="tool=x", label="another failure", keywords=[], size=3,
                           representative_unit="other-0", status="new"))
        s.flush()
        s.add_all([MemberRow(unit_id=f"other-{i}", signature_id=2, structural_key="tool=x", distance=i / 10,
                             assignment="cluster") for i in range(3)])
    add_criterion(store, "Amounts add up.", name="amounts", signature_id=1)
    queue = ["unit-xss"] + [f"unit-{i:02d}" for i in range(6)]
    add_annotations(store, [Annotation(unit_id=u, annotator="ann", label="fail", criterion="amounts") for u in queue])
    await login(client, "ann")
    page = (await client.get("/signatures/1")).text
    assert 'id="queue-finished"' in page and 'id="next-signature" href="/signatures/2/next"' in page
    assert "another failure" in page
    add_annotations(store, [Annotation(unit_id=f"other-{i}", annotator="ann", label="fail") for i in range(3)])
    page = (await client.get("/signatures/1")).text
    assert "nor in any other queue" in page and 'id="next-signature"' not in page


async def test_impact_and_severity_are_explained(client: httpx.AsyncClient) -> None:
    await login(client, "ann")
    home = (await client.get("/")).text
    assert 'id="impact-help"' in home and "severity weight × recency" in home and "4 for severity 4" in home
    review = (await client.get("/review/unit-00?sig=1")).text
    assert 'id="severity-help"' in review and "4 critical" in review and "harm: money" in review


def test_notes_in_the_rest_api(tmp_path: Path) -> None:
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    key = create_api_key(store, owner="ci-bot")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings_for(tmp_path), store)) as client:
        r = client.post("/api/v1/notes", headers=auth, json={"unit_id": "unit-00", "step": 2, "kind": "correction",
                                                              "text": "Ask for the booking id first."})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["author"] == "ci-bot" and made["source"] == "api" and made["span_id"] and made["id"] == 1
        assert client.post("/api/v1/notes", headers=auth, json={"unit_id": "unit-00", "step": 99, "kind": "comment",
                                                                 "text": "x"}).status_code == 422
        assert client.post("/api/v1/notes", headers=auth, json={"unit_id": "nope", "step": 1, "kind": "comment",
                                                                 "text": "x"}).status_code == 422
        assert client.post("/api/v1/notes", headers=auth, json={"unit_id": "unit-00", "step": 1, "kind": "rant",
                                                                 "text": "x"}).status_code == 422
        assert client.post("/api/v1/notes", json={"unit_id": "unit-00", "step": 1, "kind": "comment",
                                                  "text": "x"}).status_code == 401
        unit = client.get("/api/v1/units/unit-00", headers=auth).json()
        assert [(n["step"], n["kind"], n["text"]) for n in unit["notes"]] == [
            (2, "correction", "Ask for the booking id first.")]
        assert len(client.get("/api/v1/notes", headers=auth, params={"kind": "comment"}).json()) == 0
        assert len(client.get("/api/v1/notes", headers=auth, params={"unit_id": "unit-00"}).json()) == 1
    store.close()


def test_the_judge_audit_page_renders_steps_the_same_way() -> None:
    from types import SimpleNamespace

    from assay._web.pages import make_env, step_views
    from assay.traces import step_timeline

    unit = make_replayed_unit()
    item = SimpleNamespace(id=1, criterion="c", evaluator="e", evaluator_version="v", human_label=None)
    html = make_env().get_template("audit_review.html").render(
        csrf_token="x", user=None, unit=unit, steps=step_views(step_timeline(unit)), criterion_text="c", item=item,
        next_id=None)
    assert "<strong>Origin:</strong>" in html and "&lt;script&gt;" in html and "<script>window" not in html
    assert '<table class="grid j-table">' in html and 'href="/policy/replayed"' in html


def test_long_lists_are_cut_with_a_note() -> None:
    from assay._web.rendering import MAX_ITEMS, MAX_ROWS, json_html, parse_json

    rows = [{"id": i} for i in range(MAX_ITEMS + 500)]
    html = str(json_html(rows))
    assert html.count("<tr><td>") == MAX_ITEMS and "500 more not shown" in html
    assert f"{MAX_ITEMS - MAX_ROWS:,} more rows</summary>" in html
    assert str(json_html(list(range(MAX_ITEMS + 1)))).count("<li>") == MAX_ITEMS
    assert parse_json("Error: payment failed") is None and parse_json("42") is None and parse_json("[1") is None


async def test_other_peoples_notes_show_once_the_reader_labelled(store: Store, tmp_path: Path) -> None:
    from assay.annotations.step_notes import StepNote, add_step_note

    add_step_note(store, StepNote(unit_id="unit-00", step=3, kind="correction", author="admin",
                                  text="Charge the fare plus the fee."))
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as ann:
        token = await login(ann, "ann")
        before = (await ann.get("/review/unit-00")).text
        assert "Charge the fare" not in before and "✎" not in before  # blind: it would anchor the second opinion
        assert "Charge the fare" not in (await ann.get("/notes/3/unit-00")).text
        await ann.post("/review/unit-00", data={"label": "fail", "csrf_token": token})
        assert "Charge the fare plus the fee." in _step((await ann.get("/review/unit-00")).text, 3)


async def test_notes_are_hidden_under_the_same_rule_as_labels(store: Store, tmp_path: Path) -> None:
    """Blind review hides other people's step notes exactly when it hides their labels: shown in a queue that is
    not blind, hidden again when the reader's own label went stale (a new criterion version)."""
    from assay.annotations.queue import set_queue
    from assay.annotations.step_notes import StepNote, add_step_note

    add_criterion(store, "Amounts add up.", name="amounts", signature_id=1)
    add_step_note(store, StepNote(unit_id="unit-00", step=3, kind="comment", author="admin", text="Fee missing."))
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as ann:
        await login(ann, "ann")
        add_annotations(store, [Annotation(unit_id="unit-00", annotator="ann", label="fail", criterion="amounts")])
        assert "Fee missing." in (await ann.get("/notes/3/unit-00?sig=1")).text  # labelled: the reveal
        add_criterion(store, "Amounts add up, fees included.", name="amounts")  # v2: ann's label is stale
        page = (await ann.get("/review/unit-00?sig=1")).text
        assert 'id="stale-note"' in page and "Fee missing." not in page
        assert "Fee missing." not in (await ann.get("/notes/3/unit-00?sig=1")).text
        set_queue(store, 1, blind=False)
        assert "Fee missing." in _step((await ann.get("/review/unit-00?sig=1")).text, 3)
        assert "Fee missing." in (await ann.get("/notes/3/unit-00?sig=1")).text
