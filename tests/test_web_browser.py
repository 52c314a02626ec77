"""The annotation app in a real browser: Playwright driving Debian's Chromium (offline).

Skips with a reason when ``/usr/bin/chromium`` is missing (``.ci/run`` installs it).
Screenshots of each page go to ``<tmp_path>/screenshots``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from assay._store import Store
from assay._web.ui import install_ui, shown_order
from assay.annotations import Annotation, add_annotations, list_annotations
from tests.ui_fixtures import ANCHORS, PASSWORD, XSS_UNIT, seed, seed_scales, settings_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (/usr/bin/chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """The app on a real uvicorn server on loopback: ``(base url, store)``."""
    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    seed(store)
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


def test_label_five_units_by_keyboard_edit_criterion_agreement_xss(served: tuple[str, Store], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{base}/")
        assert "/login" in page.url
        page.screenshot(path=shots / "01-login.png")
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector("#signatures")
        page.screenshot(path=shots / "02-signatures.png")

        page.goto(f"{base}/signatures/1/criterion")
        page.fill("#criterion-input", "The booked amount matches the fare.")
        page.click("#criterion-form button")
        page.wait_for_selector("#criterion-version")
        assert page.inner_text("#criterion-version") == "1"
        page.screenshot(path=shots / "03-criterion-v1.png")

        # Label five units with the keyboard alone, starting at the queue's first item (the XSS unit).
        page.goto(f"{base}/signatures/1/next")
        page.wait_for_selector("#label-form")
        assert page.url.endswith(f"/review/{XSS_UNIT}?sig=1")
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert "<script>window.__xss = 1</script>" in page.inner_text(".timeline")
        page.screenshot(path=shots / "04-review-xss.png", full_page=True)
        labelled = []
        for i in range(5):
            current = page.url
            labelled.append(current.split("/review/")[1].split("?")[0])
            page.keyboard.press("f" if i % 2 == 0 else "p")
            page.keyboard.press(str(1 + i % 4))
            page.keyboard.press("/")
            page.keyboard.type(f"keyboard label {i}")
            with page.expect_navigation():
                page.keyboard.press("Enter")
            page.wait_for_load_state()
            assert page.url != current
        labels = [a for a in list_annotations(store) if a.annotator == "admin"]
        assert [(a.unit_id, a.label, a.severity, a.rationale, a.criterion_version) for a in labels] == [
            (u, "fail" if i % 2 == 0 else "pass", 1 + i % 4, f"keyboard label {i}", 1)
            for i, u in enumerate(labelled)]
        assert len(set(labelled)) == 5

        # j / k move through the queue
        page.goto(f"{base}/review/unit-01?sig=1")
        with page.expect_navigation():
            page.keyboard.press("j")
        assert "/review/unit-02?sig=1" in page.url
        with page.expect_navigation():
            page.keyboard.press("k")
        assert "/review/unit-01?sig=1" in page.url

        # The queue page's progress refreshes itself (htmx polling) when another annotator labels.
        page.goto(f"{base}/signatures/1")
        assert "ann: " not in page.inner_text("#progress")
        add_annotations(store, [Annotation(unit_id=u, annotator="ann", label="fail", severity=2,
                                           criterion=labels[0].criterion) for u in labelled])
        expect(page.locator("#progress")).to_contain_text("ann: 5", timeout=15_000)
        assert "5 of 7 items have 2 labels" in page.inner_text("#progress")
        page.screenshot(path=shots / "05-queue.png", full_page=True)

        # The second annotator's labels (same units) feed the agreement page.
        page.goto(f"{base}/agreement")
        row = page.inner_text("#agreement tbody tr")
        assert "nan" not in row.lower()
        page.screenshot(path=shots / "06-agreement.png", full_page=True)
        page.click("#agreement tbody a")
        page.wait_for_selector("#kappa")
        assert page.inner_text("#raw") == "60%"
        page.screenshot(path=shots / "07-agreement-detail.png", full_page=True)

        # Editing the criterion marks the older labels stale.
        page.goto(f"{base}/signatures/1/criterion")
        page.fill("#criterion-input", "The booked amount matches the fare plus fees.")
        page.click("#criterion-form button")
        page.wait_for_selector("#criterion-version")
        assert page.inner_text("#criterion-version") == "2"
        assert page.inner_text("#stale-count") == "10"
        page.screenshot(path=shots / "08-criterion-v2.png")
        page.goto(f"{base}/review/{labelled[1]}?sig=1")
        # admin's label is stale: the item is theirs to label again, blind, the old labels shown after that
        assert page.locator("#stale-note").count() == 1 and page.locator(".labels").count() == 0
        page.keyboard.press("p")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.goto(f"{base}/review/{labelled[1]}?sig=1")
        assert page.locator(".labels .badge-stale").count() == 2
        page.screenshot(path=shots / "09-review-stale.png", full_page=True)
        page.goto(f"{base}/agreement")
        assert "undefined" in page.inner_text("#agreement tbody tr")

        page.goto(f"{base}/review/{XSS_UNIT}?sig=1")
        page.wait_for_timeout(300)
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert dialogs == []
        assert errors == []  # no script error, no CSP violation (htmx and app.js load under script-src 'self')
        browser.close()
    assert sorted(p.name for p in shots.iterdir())[0] == "01-login.png"


@pytest.fixture
def served_scales(tmp_path: Path) -> Iterator[tuple[str, Store, dict[str, list[str]]]]:
    """The app with :func:`seed` plus a pairwise (signature 2) and an ordinal (signature 3) criterion."""
    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    seed(store)
    ids = seed_scales(store)
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
    yield f"http://127.0.0.1:{port}", store, ids
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def _login(browser: Any, base: str, name: str, errors: list[str]) -> Any:
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


def _label_by_keyboard(page: Any, keys: list[str]) -> list[str]:
    """Press each key then Enter on the page's current item, following the queue; returns the URLs labelled."""
    seen = []
    for key in keys:
        current = page.url
        seen.append(current)
        page.keyboard.press(key)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.wait_for_load_state()
        assert page.url != current
    return seen


def test_pairwise_and_ordinal_criteria_label_by_keyboard_agreement_adjudicate(
        served_scales: tuple[str, Store, dict[str, list[str]]], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, store, ids = served_scales
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        admin = _login(browser, base, "admin", errors)

        # Ordinal: the anchors are on the page, digits pick levels.
        admin.goto(f"{base}/signatures/3/next")
        admin.wait_for_selector("#label-form")
        anchors = admin.inner_text("#anchors")
        assert all(a in anchors for a in ANCHORS)
        assert admin.locator("#verdict input[name=value]").count() == 5
        admin.screenshot(path=shots / "01-ordinal-review.png", full_page=True)
        _label_by_keyboard(admin, ["4", "2", "5", "1"])
        graded = {a.unit_id: a.value for a in list_annotations(store, "quality")}
        assert graded == dict(zip(ids["ordinal"], [4, 2, 5, 1], strict=True))

        # Pairwise: both runs side by side, the order random per annotator and recorded.
        admin.goto(f"{base}/signatures/2/next")
        admin.wait_for_selector("#left")
        first, second = ids["pairwise"][:2]
        assert "second=" in admin.url and admin.locator(".sides .side").count() == 2
        order = shown_order("admin", first, second)
        left = admin.get_attribute("#left", "data-unit")
        assert left == (first if order == "first-second" else second)
        admin.screenshot(path=shots / "02-pairwise-review.png", full_page=True)
        _label_by_keyboard(admin, ["1", "2", "3"])  # left better, right better, tie
        pairs = [a for a in list_annotations(store, "better") if a.annotator == "admin"]
        assert [(a.unit_id, a.second_unit_id) for a in pairs] == [(ids["pairwise"][i], ids["pairwise"][i + 1])
                                                                  for i in (0, 2, 4)]
        for a, key in zip(pairs, ("1", "2", "3"), strict=True):
            assert a.shown_order == shown_order("admin", a.unit_id, a.second_unit_id or "")
            on_left = "first" if a.shown_order == "first-second" else "second"
            expected = {"1": on_left, "2": "second" if on_left == "first" else "first", "3": "tie"}[key]
            assert a.value == expected

        # A second annotator sees task-b the other way round, labels by keyboard too.
        ann = _login(browser, base, "ann", errors)
        ann.goto(f"{base}/signatures/2/next")
        ann.wait_for_selector("#left")
        _label_by_keyboard(ann, ["1", "2", "3"])
        theirs = {a.unit_id: a for a in list_annotations(store, "better") if a.annotator == "ann"}
        assert all(t.shown_order == shown_order("ann", t.unit_id, t.second_unit_id or "") for t in theirs.values())
        assert [theirs[a.unit_id].shown_order != a.shown_order for a in pairs] == [False, True, False]
        assert [theirs[a.unit_id].value for a in pairs] == ["second", "second", "tie"]  # task-b: admin said first
        add_annotations(store, [Annotation(unit_id=u, annotator="ann", value=v, criterion="quality")
                                for u, v in zip(ids["ordinal"], [4, 3, 5, 1], strict=True)])

        # Agreement: the ordinal page shows weighted kappa, the pairwise one Cohen's kappa, nothing NaN.
        admin.goto(f"{base}/agreement")
        table = admin.inner_text("#agreement")
        assert "ordinal" in table and "pairwise" in table and "nan" not in table.lower()
        admin.screenshot(path=shots / "03-agreement.png", full_page=True)
        admin.goto(f"{base}/agreement/quality")
        assert admin.locator("#weighted-matrix").count() == 1 and admin.locator("#alpha-interval").count() == 1
        assert "nan" not in admin.inner_text("main").lower()
        disagreements = admin.inner_text("#disagreements")
        assert f"{ids['ordinal'][1]}" in disagreements and "admin: 2; ann: 3" in disagreements
        admin.click(f"#disagreements a.adjudicate[href*='{ids['ordinal'][1]}']")
        admin.wait_for_selector("#adjudicate-form")
        admin.check("#adjudicate-form input[name=value][value='3']")
        admin.fill("#reason", "the booking is right, the wording clumsy")
        with admin.expect_navigation():
            admin.click("#adjudicate-form button")
        final = [a for a in list_annotations(store, "quality") if a.source == "adjudication"]
        assert [(a.unit_id, a.value) for a in final] == [(ids["ordinal"][1], 3)]

        admin.goto(f"{base}/agreement/better")
        assert "nan" not in admin.inner_text("main").lower()
        admin.screenshot(path=shots / "04-pairwise-agreement.png", full_page=True)
        open_links = admin.locator("#disagreements a.adjudicate")
        assert open_links.count() >= 1
        open_links.first.click()
        admin.wait_for_selector("#adjudicate-form")
        assert admin.locator("#adjudicate-form input[name=value]").count() == 3  # first, second, tie
        admin.check("#adjudicate-form input[name=value][value='second']")
        admin.fill("#reason", "the second run books the right fare")
        with admin.expect_navigation():
            admin.click("#adjudicate-form button")
        settled = [a for a in list_annotations(store, "better") if a.source == "adjudication"]
        assert len(settled) == 1 and settled[0].value == "second" and settled[0].second_unit_id is not None
        assert "final" not in admin.inner_text("#disagreements") or "second by admin" in admin.inner_text(
            "#disagreements")
        admin.screenshot(path=shots / "05-adjudicated.png", full_page=True)
        browser.close()
    assert errors == []  # no script error, no CSP violation
