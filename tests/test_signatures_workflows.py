"""Where failures concentrate: every unit grouped by workflow, the failure rate and each signal kind's share
with 95% Wilson intervals against the overall rate, in Python, `assay signatures --by-workflow` and the app.
Real SQLite stores; real tau-bench runs for the whole-store invariants."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from assay._cli._common import AppContext
from assay._cli.signatures import signatures_app
from assay._store import Store
from assay.settings import Settings
from assay.signals import update_signals
from assay.signatures.workflows import rate, workflow_label, workflow_report
from assay.stats import wilson_interval
from assay.traces import read_file
from tests.conftest import AIRLINE, RETAIL
from tests.test_signal_store import chat_unit
from tests.ui_fixtures import make_unit


def test_a_rate_is_flagged_only_when_its_interval_excludes_the_overall_rate() -> None:
    high = rate(18, 47, 0.09)  # "47 sessions, 38% escalated vs 9% overall"
    assert (high.low, high.high) == pytest.approx(wilson_interval(18, 47))
    assert high.direction == "higher" and high.flagged and high.low > 0.09
    assert rate(1, 3, 0.2).direction == "same" and not rate(1, 3, 0.2).flagged  # too few to tell
    assert rate(0, 60, 0.3).direction == "lower"


def test_labels_say_the_action_and_the_request() -> None:
    assert workflow_label("tau-bench:retail.json", "return_delivered_order_items", ["refund", "broken"], True) == \
        "return delivered order items, asked about refund, broken [retail.json]"
    assert workflow_label("prod", None, [], False) == "no action taken"


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Store]:
    """30 bookings whose tool call errors (failed) and 30 quiet chats (not failed); half scanned."""
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    bookings = [make_unit(f"book-{i:02d}", user_text=f"Please book the flight to Lisbon for order {i}.")
                for i in range(30)]
    chats = [chat_unit(f"chat-{i:02d}", user=f"Where is my parcel number {i}?") for i in range(30)]
    store.add_units(bookings + chats)
    update_signals(store, store.signals, unit_ids=[u.unit_id for u in bookings[:15] + chats[:15]])
    yield store
    store.close()


def test_failures_concentrate_where_the_tool_errors(mixed: Store) -> None:
    report = workflow_report(mixed)
    assert (report.units, report.unscanned) == (60, 30)
    assert report.failed == len(mixed.failed_unit_ids()) == 30 and report.overall_rate == 0.5
    book, chat = report.workflows
    assert (book.action, book.units, book.failed.units, book.failed.direction) == ("book_reservation", 30, 30, "higher")
    assert (chat.action, chat.units, chat.failed.units, chat.failed.direction) == (None, 30, 0, "lower")
    assert book.label.startswith("book reservation, asked about") and "lisbon" in book.label
    assert chat.label.startswith("no action taken, asked about") and "parcel" in chat.label
    assert report.flagged == [book]
    kinds = {k.kind: k for k in book.kinds}
    # 15 bookings scanned (their tool errors stored), 15 counted by what the source recorded (outcome fail)
    assert kinds["tool_error"].rate == 0.5 and kinds["tool_error"].overall == pytest.approx(15 / 60)
    assert kinds["outcome_fail"].units == 30 and kinds["outcome_fail"].direction == "higher"
    assert book.top_kind is not None and book.top_kind.kind == "outcome_fail"
    assert book.top_kind.text == "recorded failure in 100% vs 50% overall"


def test_every_unit_is_counted_once_on_real_runs(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_units(read_file(AIRLINE).units + read_file(RETAIL).units)
    update_signals(store, store.signals)
    report = workflow_report(store)
    assert report.units == 300 and report.unscanned == 0
    assert sum(w.units for w in report.workflows) == 300
    assert sum(w.failed.units for w in report.workflows) == report.failed == len(store.failed_unit_ids())
    assert report.overall_rate == pytest.approx(report.failed / 300)
    for w in report.workflows:
        low, high = wilson_interval(w.failed.units, w.units)
        assert w.failed.flagged == (low > report.overall_rate or high < report.overall_rate)
        assert " | " not in w.label and w.label.endswith("]")  # two sources: the source in brackets
    assert [w.failed.direction == "higher" for w in report.workflows] == sorted(
        (w.failed.direction == "higher" for w in report.workflows), reverse=True)  # flagged first
    store.close()


def test_cli_and_app_show_the_workflows(mixed: Store, tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = AppContext(settings=Settings(workspace=tmp_path), _store=mixed)

    app.add_typer(signatures_app, name="signatures")
    runner = CliRunner()
    out = runner.invoke(app, ["signatures", "--by-workflow", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["units"] == 60 and data["workflows"][0]["failed"]["direction"] == "higher"
    assert data["workflows"][0]["failed"]["flagged"] is True and data["workflows"][0]["kinds"][0]["text"]
    text = runner.invoke(app, ["signatures", "--by-workflow"], env={"COLUMNS": "250"})
    assert text.exit_code == 0, text.output
    assert "book reservation, asked about" in text.output and "⚑ higher" in text.output
    assert "30 units were never scanned" in text.output
