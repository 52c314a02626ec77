"""The loop from the browser, in process (``httpx.ASGITransport``) on a real SQLite workspace: draft evaluators
from a criterion with enough labels, read the YAML and the diff to the last version, calibrate in the background
(progress polled), activate or force with a reason, the lineage, a dataset export, accounts and keys, the worker
and an upload; every action audited. Code evaluators only, so calibration is fast and deterministic."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import yaml
from fastapi import FastAPI

from assay._store import Store
from assay._store.audit import list_audit
from assay._web.auth import authenticate, check_api_key
from assay._web.ui import install_ui
from assay.annotations.step_notes import StepNote, add_step_note
from assay.calibration.calibrate import evaluator_record
from assay.evaluators import EvaluatorDef, content_version, load_evaluator, save_evaluator
from tests.conftest import AIRLINE
from tests.test_web_ui import csrf, login
from tests.ui_fixtures import LOOP_CRITERION, LOOP_TEXT, PASSWORD, make_unit, seed, seed_loop, settings_for

pytestmark = pytest.mark.anyio
CHECK = f"{LOOP_CRITERION}-no-cancel-reservation"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(settings_for(tmp_path).store_url)
    seed(store)
    seed_loop(store)
    return store


@pytest.fixture
async def app(store: Store, tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)
    return app


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ADMIN_ADDRESS, 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        await login(c, "admin")
        yield c


@pytest.fixture
async def ann(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        await login(c, "ann")
        yield c


EXTRA = 50
ADMIN_ADDRESS = "203.0.113.7"  # the admin's client address (TEST-NET-3): every audit record of theirs names it
"""Labelled units per class added before a calibration that should certify: with seed_loop's 10, the 30% test
split holds 18 of each, whose 95% Wilson lower bound (18/18: 0.82) clears the 0.80 threshold (10 would not)."""


def _enough_to_certify(store: Store) -> int:
    """Add :data:`EXTRA` more pass and fail units labelled on the loop criterion; returns the items now labelled."""
    from assay.annotations import Annotation, add_annotations

    more = {"pass": [f"more-pass-{i:02d}" for i in range(EXTRA)], "fail": [f"more-fail-{i:02d}" for i in range(EXTRA)]}
    store.add_units([make_unit(u, tool="search_flights") for u in more["pass"]]
                    + [make_unit(u, tool="cancel_reservation") for u in more["fail"]])
    add_annotations(store, [Annotation(unit_id=u, annotator="ann", label=label, criterion=LOOP_CRITERION)
                            for label, units in more.items() for u in units])
    return 2 * (10 + EXTRA)


async def _token(client: httpx.AsyncClient) -> str:
    return csrf((await client.get(f"/criteria/{LOOP_CRITERION}")).text)


async def _finish(client: httpx.AsyncClient, location: str) -> str:
    """Poll the job a redirect names until it is finished (as the page's htmx does); returns its fragment."""
    job_id = re.search(r"job=([\w-]+)", location)
    assert job_id, location
    for _ in range(600):
        r = await client.get(f"/jobs/{job_id.group(1)}", headers={"HX-Request": "true"})
        assert r.status_code == 200
        if "HX-Redirect" in r.headers:
            assert r.headers["HX-Redirect"] == location.split("?")[0]
            return r.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job did not finish: {r.text[:600]}")


async def test_draft_from_a_criterion_with_enough_labels(admin: httpx.AsyncClient, ann: httpx.AsyncClient,
                                                         store: Store, tmp_path: Path) -> None:
    page = await admin.get(f"/criteria/{LOOP_CRITERION}")
    assert page.status_code == 200 and "<strong>20</strong> labelled items" in page.text and "pass 10" in page.text
    assert 'id="draft-form"' in page.text
    token = csrf(page.text)
    assert (await ann.post(f"/criteria/{LOOP_CRITERION}/draft",
                           data={"csrf_token": csrf((await ann.get("/")).text)})).status_code == 403
    r = await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    assert r.status_code == 303 and "drafted, version" in unquote(r.headers["location"])
    folder = tmp_path / "evaluators"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{CHECK}.yaml", f"{LOOP_CRITERION}-judge.yaml"])
    check = load_evaluator(folder / f"{CHECK}.yaml")
    assert check.kind == "code" and check.criterion.name == LOOP_CRITERION
    rec = evaluator_record(store, check)
    assert rec is not None and rec.status == "draft" and rec.calibration is None
    drafted = [a for a in list_audit(store) if a.action == "evaluator.draft"]
    assert {a.target for a in drafted} == {f"evaluator:{CHECK}", f"evaluator:{LOOP_CRITERION}-judge"}
    assert all(a.who == "admin" and a.details["previous_version"] is None for a in drafted)
    again = await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    assert "unchanged" in again.headers["location"]
    assert len([a for a in list_audit(store) if a.action == "evaluator.draft"]) == 2
    edited = check.model_copy(update={"code": check.code.model_copy(update={  # type: ignore[union-attr]
        "args": {"tool": "cancel_booking", "expected": False}})})
    save_evaluator(edited, folder / f"{CHECK}.yaml")  # someone edited the file by hand
    kept = await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    assert "kept the existing file" in unquote(kept.headers["location"])
    assert content_version(load_evaluator(folder / f"{CHECK}.yaml")) == content_version(edited)
    replaced = await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token, "replace": "1"})
    assert f"new version {content_version(check)} (was {content_version(edited)})" in unquote(
        replaced.headers["location"])
    assert evaluator_record(store, edited) is not None  # the version it replaced stays in the store
    listing = await ann.get("/evaluators")
    assert CHECK in listing.text and "uncalibrated" not in listing.text and "draft" in listing.text


async def test_not_enough_labels_no_draft(admin: httpx.AsyncClient, store: Store) -> None:
    from assay.annotations import add_criterion

    add_criterion(store, "Amounts add up.", name="amounts", signature_id=1)
    page = await admin.get("/criteria/amounts")
    assert 'id="draft-form"' not in page.text and "3 more pass and 3 more fail" in page.text
    r = await admin.post("/criteria/amounts/draft", data={"csrf_token": csrf(page.text)})
    assert r.status_code == 400 and "cannot draft yet" in r.text
    assert (await admin.get("/criteria/nope")).status_code == 404


async def test_yaml_and_the_diff_to_the_last_version(admin: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await _token(admin)
    await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    path = tmp_path / "evaluators" / f"{CHECK}.yaml"
    first = load_evaluator(path)
    page = (await admin.get(f"/evaluators/{CHECK}")).text
    assert "tool_called" in page and "No earlier version is stored." in page
    edited = first.model_copy(update={"code": first.code.model_copy(update={  # type: ignore[union-attr]
        "args": {"tool": "cancel_booking", "expected": False}})})
    save_evaluator(edited, path)
    page = (await admin.get(f"/evaluators/{CHECK}")).text
    diff = page[page.index('id="evaluator-diff"'):page.index('id="lineage"')]
    assert re.search(r'<span class="del">-\s+tool: cancel_reservation</span>', diff)
    assert re.search(r'<span class="add">\+\s+tool: cancel_booking</span>', diff)
    assert content_version(first) in diff and content_version(edited) in diff
    assert (await admin.get("/evaluators/nope")).status_code == 404


async def test_calibrate_in_the_background_then_it_is_active(admin: httpx.AsyncClient, ann: httpx.AsyncClient,
                                                              store: Store, tmp_path: Path) -> None:
    token = await _token(admin)
    await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    n = _enough_to_certify(store)
    assert (await ann.post(f"/evaluators/{CHECK}/calibrate",
                           data={"csrf_token": csrf((await ann.get("/")).text)})).status_code == 403
    r = await admin.post(f"/evaluators/{CHECK}/calibrate", data={"csrf_token": token})
    assert r.status_code == 303 and "?job=" in r.headers["location"]
    progress = await admin.get(r.headers["location"])
    assert 'id="job"' in progress.text and "Calibrating" in progress.text
    fragment = await _finish(admin, r.headers["location"])
    assert "done" in fragment and f"{n} / {n}" in fragment
    page = (await admin.get(f"/evaluators/{CHECK}")).text
    defn = load_evaluator(tmp_path / "evaluators" / f"{CHECK}.yaml")
    rec = evaluator_record(store, defn)
    assert rec is not None and rec.calibration is not None
    report = rec.calibration
    assert ("<strong>Certified</strong>" in page) == report.meets_threshold
    assert f'<strong id="evaluator-status" class="status-{rec.status}">{rec.status}</strong>' in page
    assert 'id="calibration-report"' in page and "Test: agreement [95% CI]" in page
    shown = re.search(r'<pre id="report-json">(.*?)</pre>', page, re.S)
    assert shown and json.loads(html.unescape(shown.group(1)))["run_id"] == report.run_id
    calibrated = [a for a in list_audit(store, target=f"evaluator:{CHECK}") if a.action == "evaluator.calibrate"]
    assert [(a.who, a.details["meets_threshold"], a.details["status"]) for a in calibrated] == [
        ("admin", report.meets_threshold, rec.status)]
    assert report.meets_threshold and rec.status == "active"  # a code check that agrees with every label
    lineage = page[page.index('id="lineage"'):]
    assert "certified · dataset v" in lineage and "evaluator.calibrate" in lineage


async def test_force_needs_a_reason_and_is_recorded(admin: httpx.AsyncClient, store: Store, tmp_path: Path) -> None:
    never = EvaluatorDef.model_validate({
        "name": "says-sorry", "kind": "code", "dimension": LOOP_CRITERION,
        "criterion": {"name": LOOP_CRITERION, "version": 1, "text": LOOP_TEXT},
        "code": {"callable": "assay.evaluators.checks:phrase_present", "args": {"phrase": "we are so sorry"}}})
    save_evaluator(never, tmp_path / "evaluators" / "says-sorry.yaml")
    token = await _token(admin)
    early = await admin.post("/evaluators/says-sorry/activate", data={"csrf_token": token, "reason": "x"})
    assert early.status_code == 400 and "calibrate it first" in early.text
    r = await admin.post("/evaluators/says-sorry/calibrate", data={"csrf_token": token})
    await _finish(admin, r.headers["location"])
    page = (await admin.get("/evaluators/says-sorry")).text
    assert "<strong>Not certified</strong>" in page and 'id="force-form"' in page
    rec = evaluator_record(store, never)
    assert rec is not None and rec.status == "draft"
    cert = rec.calibration.certification if rec.calibration else None
    assert cert is not None and not cert.certified
    for b in cert.bounds:  # each bound with its count and whether it clears, as the CLI prints them
        shown = re.search(rf'id="bound-{b.name.lower()}">(.*?)</td>', page, re.S)
        assert shown, b.name
        if b.low is not None:
            assert f"{b.low:.3f}" in shown.group(1) and f"({b.k} / {b.n})" in shown.group(1)
            assert ("clears" if b.clears else "short") in shown.group(1)
    plan = rec.calibration.plan if rec.calibration else None
    shown_plan = re.search(r'id="plan">(.*?)</td>', page, re.S)
    assert plan is not None and shown_plan and "assay calibrate says-sorry --plan" in shown_plan.group(1)
    for r in plan.rates:
        assert (f"{r.of}: {r.more} more" if r.more is not None else f"{r.of}: ") in html.unescape(shown_plan.group(1))
    no_reason = await admin.post("/evaluators/says-sorry/activate", data={"csrf_token": token, "reason": " "})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    forced = await admin.post("/evaluators/says-sorry/activate",
                              data={"csrf_token": token, "reason": "the team accepts it for the pilot"})
    assert forced.status_code == 303
    rec = evaluator_record(store, never)
    assert rec is not None and rec.status == "active" and rec.override_reason == "the team accepts it for the pilot"
    assert rec.calibration is not None and rec.calibration.override_reason == rec.override_reason
    page = (await admin.get("/evaluators/says-sorry")).text
    assert "forced: the team accepts it for the pilot" in page
    force = [a for a in list_audit(store, target="evaluator:says-sorry") if a.action == "evaluator.force"]
    assert [(a.who, a.details["reason"], a.details["version"]) for a in force] == [
        ("admin", "the team accepts it for the pilot", content_version(never))]


async def test_export_the_labels_as_a_versioned_dataset(admin: httpx.AsyncClient, ann: httpx.AsyncClient,
                                                        store: Store, tmp_path: Path) -> None:
    add_step_note(store, StepNote(unit_id="loop-fail-00", step=3, kind="correction", author="ann",
                                  text="Ask before cancelling."))
    token = await _token(admin)
    r = await admin.post(f"/criteria/{LOOP_CRITERION}/export", data={"csrf_token": token})
    assert r.status_code == 303 and "exported dataset version 1" in unquote(r.headers["location"])
    files = sorted((tmp_path / "datasets").iterdir())
    assert [p.name for p in files] == [f"{LOOP_CRITERION}.v1.jsonl", f"{LOOP_CRITERION}.v1.notes.jsonl"]
    lines = files[0].read_text().splitlines()
    assert json.loads(lines[0])["dataset_version"] == 1 and len(lines) == 21
    assert {json.loads(line)["label"] for line in lines[1:]} == {"pass", "fail"}
    notes = [json.loads(line) for line in files[1].read_text().splitlines()]
    assert [(n["unit_id"], n["kind"], n["text"]) for n in notes] == [("loop-fail-00", "correction",
                                                                      "Ask before cancelling.")]
    download = await ann.get(f"/datasets/{LOOP_CRITERION}.v1.jsonl")
    assert download.status_code == 200 and download.text == files[0].read_text()
    assert "attachment" in download.headers["content-disposition"]
    assert (await ann.get("/datasets/..%2Fassay.db")).status_code == 404
    assert (await ann.get("/datasets/nope.jsonl")).status_code == 404
    page = (await ann.get(f"/criteria/{LOOP_CRITERION}")).text
    assert f'href="/datasets/{LOOP_CRITERION}.v1.jsonl"' in page
    exported = [a for a in list_audit(store) if a.action == "dataset.export"]
    assert [(a.who, a.details["dataset_version"], a.details["items"], a.details["notes"]) for a in exported] == [
        ("admin", 1, 20, 1)]
    assert (await ann.post(f"/criteria/{LOOP_CRITERION}/export",
                           data={"csrf_token": csrf((await ann.get("/")).text)})).status_code == 403


async def test_accounts_and_keys_from_the_admin_page(admin: httpx.AsyncClient, ann: httpx.AsyncClient,
                                                     store: Store) -> None:
    assert (await ann.get("/admin")).status_code == 403
    page = await admin.get("/admin")
    token = csrf(page.text)
    r = await admin.post("/admin/users", data={"name": "carol", "role": "annotator", "password": "long enough pw",
                                               "csrf_token": token})
    assert r.status_code == 303 and authenticate(store, "carol", "long enough pw") is not None
    short = await admin.post("/admin/users", data={"name": "dave", "role": "annotator", "password": "short",
                                                   "csrf_token": token})
    assert short.status_code == 400 and "at least 8 characters" in short.text
    created = await admin.post("/admin/keys", data={"owner": "ingest-bot", "csrf_token": token})
    key = re.search(r"<code>(assay_[\w-]+)</code>", created.text)
    assert key and check_api_key(store, key.group(1))
    assert key.group(1) not in (await admin.get("/admin")).text  # shown once
    revoked = await admin.post("/admin/keys/revoke", data={"prefix": key.group(1)[:12], "csrf_token": token})
    assert revoked.status_code == 303 and not check_api_key(store, key.group(1))
    actions = [(a.action, a.target) for a in list_audit(store) if not a.action.startswith("signin.")][::-1]
    assert actions == [("user.add", "user:carol"), ("key.create", f"key:{key.group(1)[:12]}"),
                       ("key.revoke", f"key:{key.group(1)[:12]}")]
    assert all(key.group(1) not in json.dumps(a.details) and "long enough" not in json.dumps(a.details)
               for a in list_audit(store))
    assert {a.client for a in list_audit(store) if a.who == "admin"} == {ADMIN_ADDRESS}
    assert (await ann.post("/admin/users", data={"name": "eve", "role": "admin", "password": PASSWORD,
                                                 "csrf_token": csrf((await ann.get("/")).text)})).status_code == 403


async def test_upload_a_trace_file_and_run_the_worker_once(admin: httpx.AsyncClient, store: Store,
                                                           tmp_path: Path) -> None:
    runs = json.loads(AIRLINE.read_text())[:3]
    token = csrf((await admin.get("/admin")).text)
    r = await admin.post("/admin/ingest", data={"csrf_token": token},
                         files={"file": ("airline runs.json", json.dumps(runs).encode(), "application/json")})
    assert r.status_code == 200 and 'id="ingest-result"' in r.text and "units 3 new" in r.text
    assert len(store.select_unit_ids("prefix:tau-airline/")) == 3
    bad = await admin.post("/admin/ingest", data={"csrf_token": token},
                           files={"file": ("notes.exe", b"{}", "application/octet-stream")})
    assert bad.status_code == 400
    forged = await admin.post("/admin/ingest", data={"csrf_token": "nope"},
                              files={"file": ("a.json", b"[]", "application/json")})
    assert forged.status_code == 403
    nothing = await admin.post("/admin/ingest", data={"csrf_token": token},
                               files={"file": ("empty.jsonl", b"not json\n", "application/json")})
    assert nothing.status_code == 422 and "Nothing ingested" in nothing.text
    await admin.post(f"/criteria/{LOOP_CRITERION}/draft", data={"csrf_token": token})
    check = load_evaluator(tmp_path / "evaluators" / f"{CHECK}.yaml")
    save_evaluator(check.model_copy(update={"sample_rate": 1.0}), tmp_path / "evaluators" / f"{CHECK}.yaml")
    job = await admin.post(f"/evaluators/{CHECK}/calibrate", data={"csrf_token": token})
    await _finish(admin, job.headers["location"])
    # 20 labels do not certify (lower-bound rule); the worker scores with active evaluators only: force it
    await admin.post(f"/evaluators/{CHECK}/activate", data={"csrf_token": token, "reason": "worker test"})
    started = await admin.post("/admin/worker", data={"csrf_token": token})
    assert started.status_code == 303 and started.headers["location"].startswith("/admin?job=")
    fragment = await _finish(admin, started.headers["location"])
    assert "done" in fragment
    worked = [a for a in list_audit(store) if a.action == "worker.once"]
    assert len(worked) == 1 and worked[0].details["scored"] > 0
    ingested = [a for a in list_audit(store) if a.action == "ingest"]
    assert [(a.target, a.details["units_new"]) for a in ingested][-1] == ("file:airline_runs.json", 3)
    # the background jobs (calibrate, worker) record the address of the request that started them
    done = {a.action for a in list_audit(store) if a.who == "admin"}
    assert {"ingest", "evaluator.draft", "evaluator.calibrate", "evaluator.force", "worker.once"} <= done
    assert {a.client for a in list_audit(store) if a.who == "admin"} == {ADMIN_ADDRESS}
    assert yaml.safe_load((tmp_path / "evaluators" / f"{CHECK}.yaml").read_text())["sample_rate"] == 1.0
