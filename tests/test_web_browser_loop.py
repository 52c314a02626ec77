"""The annotation app's reading context, the loop and the queue tools in a real browser: Playwright driving
Debian's Chromium (offline). Skips with a reason when ``/usr/bin/chromium`` is missing.

- markdown safety: a trace holding ``<script>`` and ``**bold**`` shows bold text and the script as text, never
  runs it, under the app's CSP (no console error); a step note is written in place;
- the loop: from a criterion with enough labels to an active evaluator (draft, YAML, calibrate with its progress
  polled, the verdict, activation or a forced one with a reason, the lineage);
- search and filters over units: the filters are the URL, which another person opens to the same result; what a
  search finds goes to a queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from assay._store import Store
from assay._store.audit import list_audit
from assay._web.ui import install_ui
from assay.annotations.queue import queue_status
from assay.annotations.step_notes import step_notes
from assay.calibration.calibrate import evaluator_record
from assay.evaluators import load_evaluator
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS, _free_port
from tests.ui_fixtures import LOOP_CRITERION, PASSWORD, make_replayed_unit, seed, seed_loop, settings_for

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (/usr/bin/chromium)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """The app on a real uvicorn server on loopback, with :func:`seed` and a replayed unit: ``(base url, store)``."""
    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    seed(store)
    seed_loop(store)
    store.add_units([make_replayed_unit()])
    app = FastAPI()
    install_ui(app, settings, store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def _page(browser: Any, base: str, name: str, errors: list[str]) -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)  # the machine may be busy: waits, not speed, are what is checked
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#signatures")
    return page


def test_markdown_renders_safely_and_a_step_note_is_written_in_place(served: tuple[str, Store],
                                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = _page(browser, base, "ann", errors)
        page.goto(f"{base}/review/replayed")
        reply = page.locator("#step-3 .markdown")
        expect(reply.locator("strong")).to_have_text("Origin:")
        assert "<script>window.__xss = 5</script>" in reply.inner_text()
        assert reply.locator("script").count() == 0 and page.evaluate("typeof window.__xss") == "undefined"
        assert reply.locator("a").count() == 1 and reply.locator("a").get_attribute("href") == \
            "https://example.com/fares"
        assert page.locator("#step-5 table.j-table tbody tr").count() == 2
        page.screenshot(path=tmp_path / "review-markdown.png", full_page=True)

        # a corrected output on step 3, typed in place: the label shortcuts stay out of the note's way
        page.click("#step-3 a.note-link")
        form = page.locator("#step-3 form.note-form")
        expect(form).to_be_visible()
        form.locator("input[value=correction]").check()
        form.locator("textarea").fill("fp Book HAT001 for 120 dollars, then confirm.")
        expect(page.locator("input[name=label][value=fail]")).not_to_be_checked()
        form.locator("button").click()
        expect(page.locator("#step-3 .note-correction")).to_contain_text("Book HAT001 for 120 dollars")
        assert page.url.endswith("/review/replayed")  # no navigation: htmx swapped the notes in
        notes = step_notes(store, ["replayed"])
        assert [(n.step, n.kind, n.author) for n in notes] == [(3, "correction", "ann")]

        page.click("#policy-link")
        page.wait_for_timeout(300)
        policy = page.context.pages[-1]
        policy.wait_for_selector("#policy-q")
        policy.fill("#policy-q", "refunds go")  # htmx asks as one types: no submit
        expect(policy.locator("#policy-matches mark")).to_have_count(1)
        expect(policy.locator("#policy-matches")).to_contain_text("Refunds go to the original payment")
        browser.close()
    assert errors == []  # no script error, no CSP violation


def test_from_a_criterion_to_an_active_evaluator(served: tuple[str, Store], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    check = f"{LOOP_CRITERION}-no-cancel-reservation"
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = _page(browser, base, "admin", errors)
        page.goto(f"{base}/signatures/4")
        page.click("#criterion-loop")
        expect(page.locator("#label-counts")).to_contain_text("20 labelled items")
        with page.expect_navigation():
            page.click("#draft-form button")
        expect(page.locator("#loop-message")).to_contain_text(f"{check}: drafted")
        page.click(f"#criterion-evaluators a:text-is('{check}')")
        expect(page.locator("#evaluator-yaml")).to_contain_text("assay.evaluators.checks:tool_called")
        expect(page.locator("#verdict")).to_have_text("Not calibrated yet.")
        page.screenshot(path=tmp_path / "loop-1-drafted.png", full_page=True)

        with page.expect_navigation():
            page.click("#calibrate-form button")  # the job runs in the background; the page polls its progress
        assert "?job=" in page.url
        # polled until done, then sent to the result (or, when it finished first, the page shows it at once)
        expect(page.locator("#calibration-report")).to_be_visible(timeout=60_000)
        # the report is stored a moment before the job ends (its audit record): a page loaded in between polls on
        expect(page.locator("#job.job-running")).to_have_count(0, timeout=60_000)
        defn = load_evaluator(tmp_path / "evaluators" / f"{check}.yaml")
        report = evaluator_record(store, defn).calibration  # type: ignore[union-attr]
        assert report is not None
        verdict = page.inner_text("#verdict")
        assert verdict.startswith("Certified" if report.meets_threshold else "Not certified")
        if not report.meets_threshold:  # the activation rule decided against it: force it, with the reason
            page.fill("#force-reason", "pilot: the check matches every label we have")
            with page.expect_navigation():
                page.click("#force-form button")
        expect(page.locator("#evaluator-status")).to_have_text("active")
        rec = evaluator_record(store, defn)
        assert rec is not None and rec.status == "active"
        lineage = page.inner_text("#lineage")
        assert "active" in lineage and f"dataset v{report.dataset_version}" in lineage
        assert "evaluator.calibrate" in page.inner_text("#evaluator-audit")
        page.screenshot(path=tmp_path / "loop-2-active.png", full_page=True)
        actions = {a.action for a in list_audit(store, target=f"evaluator:{check}")}
        assert {"evaluator.draft", "evaluator.calibrate"} <= actions
        page.goto(f"{base}/evaluators")
        assert "active" in page.inner_text("#evaluators")
        browser.close()
    assert errors == []


def test_search_filters_are_a_shareable_url(served: tuple[str, Store], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        admin = _page(browser, base, "admin", errors)
        admin.click("header nav a:text-is('Units')")
        expect(admin.locator("#match-count")).to_contain_text(str(7 + 20 + 1))
        admin.fill("input[name=q]", "cancel_reservation")
        admin.select_option("select[name=label]", "fail")
        with admin.expect_navigation():
            admin.click("#unit-search button")
        assert "q=cancel_reservation" in admin.url and "label=fail" in admin.url
        expect(admin.locator("#units tbody tr")).to_have_count(10)
        share = admin.input_value("#share-url")
        assert share.endswith("/units?q=cancel_reservation&label=fail")
        admin.screenshot(path=tmp_path / "search.png", full_page=True)

        other = _page(browser, base, "ann", errors)  # someone else opens the link
        other.goto(share)
        expect(other.locator("#units tbody tr")).to_have_count(10)
        assert other.input_value("input[name=q]") == "cancel_reservation"
        assert other.locator("#add-to-queue").count() == 0  # annotators search; admins add to queues
        assert sorted(other.locator("#units tbody tr td:first-child").all_inner_texts()) == [
            f"loop-fail-{i:02d}" for i in range(10)]

        admin.select_option("#add-to-queue select[name=signature]", "1")
        with admin.expect_navigation():
            admin.click("#add-to-queue button")
        assert admin.url.startswith(f"{base}/signatures/1?message=")
        expect(admin.locator("#additions tbody tr")).to_have_count(10)
        assert [i.origin for i in queue_status(store, 1).items].count("search") == 10
        browser.close()
    assert errors == []
