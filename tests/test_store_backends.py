"""The store on SQLite and PostgreSQL: migrations, append-only labels, concurrent review queues.

PostgreSQL runs when ``ASSAY_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one on
loopback with ``.ci/postgres.sh``); each test gets a fresh database there.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from assay._store import Store
from assay._store.migrate import current_revision, head_revision
from assay._store.tables import Base
from assay._web.auth import add_user, authenticate
from assay.annotations import Annotation, add_annotations, add_criterion, list_annotations
from assay.annotations.queue import claim_next, queue_status, set_queue
from assay.signals import DetectorLineage, FailureSignal, SignalSettings, add_signals, list_signals, update_signals
from tests.ui_fixtures import PASSWORD, make_unit, seed

PG_ENV = "ASSAY_TEST_POSTGRES_URL"

# The synthetic units of ui_fixtures call tools with ids no earlier step mentions: the action detectors
# (docs/signals.md) rightly flag every call. These tests are about storage and display, so they leave them off.
NO_ACTION_CUES = SignalSettings.model_validate({k: {"enabled": False} for k in (
    "ungrounded_argument", "unconfirmed_action", "action_retry", "many_actions")})


def _postgres(tmp_path: Path) -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL store tests need a server: set {PG_ENV} (e.g. "
                    "postgresql+psycopg://postgres@127.0.0.1:55432/postgres; .ci/postgres.sh starts one)")
    name = f"assay_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'assay.db'}"
    else:
        yield from _postgres(tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.close()


def test_migrations_reach_head_and_match_the_tables(store: Store) -> None:
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"tables.py and migrations/versions differ: add a revision ({diff[:3]})"
    Store(store.url).close()  # opening again is a no-op


def test_a_store_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    Base.metadata.tables["units"].create(engine)
    engine.dispose()
    store = Store(url)
    assert current_revision(store.engine) == head_revision()
    assert {"annotations", "accounts", "queue_claims"} <= set(inspect(store.engine).get_table_names())
    store.close()


def test_units_labels_criteria_accounts_round_trip(store: Store) -> None:
    store.add_units([make_unit("u1", 3), make_unit("u2")])
    assert len(store.unit("u1").spans) == 4
    crit = add_criterion(store, "Amounts add up.", name="amounts")
    add_annotations(store, [Annotation(unit_id="u1", annotator="ann", label="fail", severity=3, criterion="amounts")])
    assert add_criterion(store, "Amounts and fees add up.", name="amounts").version == crit.version + 1
    add_annotations(store, [Annotation(unit_id="u1", annotator="ann", label="pass", criterion="amounts")])
    assert [(a.label, a.criterion_version) for a in list_annotations(store)] == [("fail", 1), ("pass", 2)]
    add_user(store, "ann", PASSWORD, "admin")
    assert authenticate(store, "ann", PASSWORD) is not None


def test_failure_signals_and_the_failed_selection(store: Store) -> None:
    """Signals are written once per key and ``failed`` is the noisy-OR in SQL, on both databases; a unit
    not scanned yet counts by its recorded outcome or error."""
    units = [make_unit(f"p{i}").model_copy(update={"outcome": "unknown"}) for i in range(3)]
    store.add_units(units)
    assert store.select_unit_ids("failed") == ["p0", "p1", "p2"]  # error spans, no outcome, not scanned yet
    update_signals(store, NO_ACTION_CUES)
    assert store.select_unit_ids("failed") == []  # one tool error (0.4) is below fail_at
    frustrated = FailureSignal(unit_id="p1", source="cue", kind="user_frustration", strength=0.4, step=1,
                               evidence="this is ridiculous", time_ns=1, lineage=DetectorLineage(name="x", version="1"))
    assert add_signals(store, [frustrated, frustrated]) == 1 and add_signals(store, [frustrated]) == 0
    assert store.select_unit_ids("failed") == ["p1"] and store.select_unit_ids("passed") == ["p0", "p2"]
    assert [s.kind for s in list_signals(store, unit_id="p1")] == ["user_frustration", "tool_error"]


def test_unit_search_queue_additions_notes_and_audit(store: Store) -> None:
    """The review tools' queries on both databases: search over units (text in the span JSON, labels, signals,
    time range), queue additions and reviewers, step notes, the audit log."""
    from datetime import date

    from assay._store.audit import list_audit, record_audit
    from assay._store.unit_search import UnitFilter, unit_query
    from assay.annotations.queue_additions import add_to_queue
    from assay.annotations.queue_tools import assign_reviewers, queue_reviewers, reservations
    from assay.annotations.step_notes import StepNote, add_step_note, step_notes
    from tests.ui_fixtures import seed_loop

    seed(store)
    seed_loop(store, n=3)

    def found(**given: Any) -> list[str]:
        with store.session() as s:
            return sorted(s.scalars(unit_query(UnitFilter.model_validate(given), store.signals.fail_at)))

    fails = ["loop-fail-00", "loop-fail-01", "loop-fail-02"]
    assert found(q="Cancel_Reservation") == fails
    assert found(label="fail", signal="human_fail", state="failed") == fails
    assert found(signature=4, label="unlabelled") == []
    assert len(found(since=date(2023, 11, 14), until=date(2023, 11, 14))) == 7 + 6
    assert add_to_queue(store, 1, fails, "search", "q=cancel_reservation", "admin") == 3
    assert [i.origin for i in queue_status(store, 1).items][-3:] == ["search"] * 3
    assert assign_reviewers(store, 1, ["ann"], "admin") == ["ann"] and queue_reviewers(store, 1) == ["ann"]
    assert claim_next(store, 1, "ann") is not None and len(reservations(store, 1)) == 1
    note = add_step_note(store, StepNote(unit_id="unit-00", step=2, kind="correction", text="Ask first.",
                                         author="ann", criterion="no-cancel"))
    assert step_notes(store, ["unit-00"]) == [note] and note.criterion_version == 1
    record_audit(store, "admin", "queue.add", "signature:1", {"added": 3})
    assert [(a.who, a.details) for a in list_audit(store, target="signature:1")] == [("admin", {"added": 3})]


def _concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_claims_never_oversubscribe_an_item(store: Store) -> None:
    ids = seed(store, n_units=5)
    set_queue(store, 1, size=len(ids), k=2)
    add_annotations(store, [Annotation(unit_id=ids[0], annotator="first", label="fail")])
    for round_ in range(len(ids) - 1):
        # items before ids[round_] are full; ids[round_] needs one more label, the next ones two
        names = [f"ann-{round_}-{i}" for i in range(2)]
        got = _concurrently(2, lambda i, names=names: claim_next(store, 1, names[i]))
        assert sorted(got) == sorted([ids[round_], ids[round_ + 1]]), got
        add_annotations(store, [Annotation(unit_id=u, annotator=who, label="pass") for who, u in zip(names, got,
                                                                                                     strict=True)])
        status = queue_status(store, 1)
        assert [len(item.annotators) for item in status.items[:round_ + 2]] == [2] * (round_ + 1) + [1]


def test_concurrent_labelling_loses_no_label(store: Store) -> None:
    store.add_units([make_unit(f"u{i}") for i in range(4)])
    n = 8

    def label(i: int) -> int:
        return sum(add_annotations(store, [Annotation(unit_id=f"u{j % 4}", annotator=f"ann{i}", label="fail")])
                   for j in range(10))

    assert sum(_concurrently(n, label)) == n * 10
    assert len(list_annotations(store)) == n * 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_two_annotators_at_the_same_moment_over_http(store: Store, tmp_path: Path) -> None:
    """Concurrent requests through the app: each item gets at most K labels, none is lost."""
    import asyncio

    import httpx
    from fastapi import FastAPI

    from assay._web.ui import install_ui
    from tests.test_web_ui import login
    from tests.ui_fixtures import settings_for

    ids = seed(store, n_units=5)
    set_queue(store, 1, size=len(ids), k=1)
    app = FastAPI()
    install_ui(app, settings_for(tmp_path), store)

    async def annotate(client: httpx.AsyncClient, name: str) -> list[str]:
        token = await login(client, name)
        done: list[str] = []
        while True:
            nxt = await client.get("/signatures/1/next")
            location = nxt.headers["location"]
            if not location.startswith("/review/"):
                return done
            done.append(location.split("/review/")[1].split("?")[0])
            resp = await client.post(location, data={"label": "fail", "csrf_token": token})
            assert resp.status_code == 303

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as a, \
            httpx.AsyncClient(transport=transport, base_url="http://t") as b:
        got_a, got_b = await asyncio.gather(annotate(a, "ann"), annotate(b, "admin"))
    assert sorted(got_a + got_b) == sorted(ids), (got_a, got_b)  # K=1: every item exactly once
    labels = list_annotations(store)
    assert sorted(a.unit_id for a in labels) == sorted(ids)


def test_stores_opened_at_the_same_moment_migrate_once(store_url: str) -> None:
    stores = _concurrently(4, lambda _i: Store(store_url))
    assert {current_revision(s.engine) for s in stores} == {head_revision()}
    for s in stores:
        s.close()
