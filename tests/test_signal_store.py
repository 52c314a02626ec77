"""Failure signals in a real SQLite store: idempotent writes, listings, the failure score per unit, what
``failed`` / ``passed`` select (units with no outcome included), detection of what is missing, and
retraction when the detectors change. Real tau-bench airline runs for the detection part."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from assay._store import Store
from assay._store.tables import SignalRow, SignalScanRow
from assay.signals import (
    DetectorLineage,
    FailureSignal,
    SignalSettings,
    add_signals,
    assess,
    failure_scores,
    list_signals,
    signal_counts,
    units_to_scan,
    update_signals,
)
from assay.traces import Message, Span, Unit, read_file
from tests.conftest import AIRLINE

T0 = 1_700_000_000_000_000_000


def chat_unit(unit_id: str, user: str = "Where is my parcel?", outcome: str = "unknown") -> Unit:
    """A one-turn conversation with no error and, by default, no recorded outcome (production)."""
    trace = hashlib.sha256(unit_id.encode()).hexdigest()[:32]
    span = Span(trace_id=trace, span_id="0" * 15 + "1", name="chat", kind="llm", start_ns=T0, end_ns=T0 + 5,
                input_messages=(Message(role="user", content=user),),
                output_messages=(Message(role="assistant", content="It is on its way."),))
    return Unit(unit_id=unit_id, kind="trace", source="prod", spans=(span,), outcome=outcome)  # type: ignore[arg-type]


def cue(unit_id: str, strength: float, evidence: str = "user: this is ridiculous", step: int | None = 1,
        kind: str = "user_frustration") -> FailureSignal:
    return FailureSignal(unit_id=unit_id, source="cue", kind=kind, strength=strength,  # type: ignore[arg-type]
                         evidence=evidence, step=step, time_ns=T0, lineage=DetectorLineage(name="x", version="1"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    yield s
    s.close()


def test_writes_are_idempotent_and_listed(store: Store) -> None:
    store.add_units([chat_unit("u1"), chat_unit("u2")])
    a, b = cue("u1", 0.4), cue("u1", 0.3, "user: I already told you", step=3, kind="user_correction")
    assert add_signals(store, [a, b, a]) == 2
    assert add_signals(store, [b]) == 0  # the same observation again: its key is stored
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(SignalRow)) == 2
    assert list_signals(store, unit_id="u1") == [a, b]
    assert list_signals(store, kind="user_correction") == [b] and list_signals(store, source="feedback") == []
    assert [(c.kind, c.signals, c.units) for c in signal_counts(store)] == [("user_correction", 1, 1),
                                                                          ("user_frustration", 1, 1)]
    scores = failure_scores(store, ["u1", "u2"])
    assert scores["u1"].score == pytest.approx(1 - 0.6 * 0.7) and scores["u1"].failed
    assert scores["u2"].score == 0.0 and not scores["u2"].failed


def test_failed_and_passed_on_units_with_no_outcome(store: Store) -> None:
    """Production units record no outcome and no error: only their signals make them failed."""
    ids = [f"prod/{i}" for i in range(5)]
    store.add_units([chat_unit(u) for u in ids])
    assert store.select_unit_ids("failed") == [] and store.select_unit_ids("passed") == ids
    add_signals(store, [cue(ids[0], 0.4),  # alone below fail_at 0.5
                        cue(ids[1], 0.4), cue(ids[1], 0.2, "user: no!", step=2),  # 1 - 0.6*0.8 = 0.52
                        cue(ids[2], 0.5),  # exactly fail_at
                        cue(ids[3], 1.0)])
    assert store.select_unit_ids("failed") == ids[1:4] == store.failed_unit_ids()
    assert store.select_unit_ids("passed") == [ids[0], ids[4]]
    assert store.select_unit_ids("failed,prefix:prod/2") == [ids[2]]
    strict = Store(store.url, SignalSettings(fail_at=0.6, ambiguous_high=0.6))
    assert strict.select_unit_ids("failed") == [ids[3]]  # fail_at is the workspace's setting
    by_sql = set(store.select_unit_ids("failed"))
    assert by_sql == {u for u, a in failure_scores(store, ids).items() if a.failed}


def test_sql_and_assess_agree_at_the_boundary(store: Store) -> None:
    """Noisy-OR summed as -ln(1 - strength) in SQL gives the same verdict as assess() next to fail_at."""
    ids = [f"b/{i}" for i in range(6)]
    store.add_units([chat_unit(u) for u in ids])
    pairs = [(0.3, 0.2857), (0.3, 0.2858), (0.3, 0.28571), (0.25, 0.3333), (0.25, 0.33334), (0.49999, 0.0)]
    for uid, (x, y) in zip(ids, pairs, strict=True):
        add_signals(store, [cue(uid, x), cue(uid, y, "other", step=2)])
    expected = {u for u, (x, y) in zip(ids, pairs, strict=True)
                if assess(u, [cue(u, x), cue(u, y, "other", step=2)]).failed}
    assert set(store.select_unit_ids("failed")) == expected and 0 < len(expected) < len(ids)


def test_recorded_outcome_stands_in_until_a_unit_is_scanned(store: Store) -> None:
    units = [chat_unit("o/fail", outcome="fail"), chat_unit("o/pass", outcome="pass"), chat_unit("o/unknown")]
    store.add_units(units)
    assert store.select_unit_ids("failed") == ["o/fail"]  # the definition before signals, for unscanned units
    report = update_signals(store, SignalSettings())
    assert report.units == 3 and report.signals == 1  # the outcome signal
    assert store.select_unit_ids("failed") == ["o/fail"]
    assert [s.kind for s in list_signals(store, unit_id="o/fail")] == ["outcome_fail"]


@pytest.fixture(scope="module")
def airline() -> list[Unit]:
    return read_file(AIRLINE).units


def test_update_computes_what_is_missing(store: Store, airline: list[Unit]) -> None:
    store.add_units(airline)
    before = store.select_unit_ids("failed")
    assert len(before) == 116  # outcome fail, until signals exist
    first = update_signals(store, SignalSettings())
    assert first.units == 200 and first.signals > 200 and first.up_to_date == 0
    failed = store.select_unit_ids("failed")
    assert set(before) <= set(failed)  # every recorded failure is a signal of strength 1
    assert set(failed) == {u for u, a in failure_scores(store, store.select_unit_ids()).items() if a.failed}
    assert {s.kind for s in list_signals(store)} >= {"outcome_fail", "tool_error", "escalation", "long_session"}
    again = update_signals(store, SignalSettings())
    assert (again.units, again.signals, again.up_to_date) == (0, 0, 200)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(SignalScanRow)) == 200


def test_changed_detectors_retract_and_restore(store: Store, airline: list[Unit]) -> None:
    store.add_units(airline[:60])
    update_signals(store, SignalSettings())
    escalated = {s.unit_id for s in list_signals(store, kind="escalation")}
    assert escalated
    quiet = SignalSettings.model_validate({"escalation": {"enabled": False}})
    assert len(units_to_scan(store, quiet)) == 60  # other detectors, other hash: everything again
    report = update_signals(store, quiet)
    assert report.retracted == len(escalated) and report.signals == 0
    assert list_signals(store, kind="escalation") == []
    assert {s.unit_id for s in list_signals(store, kind="escalation", include_retracted=True)} == escalated
    update_signals(store, SignalSettings())  # back as it was: the same signals count again
    assert {s.unit_id for s in list_signals(store, kind="escalation")} == escalated


def test_units_scanned_before_a_length_norm_existed_are_scanned_again(store: Store, airline: list[Unit]) -> None:
    settings = SignalSettings.model_validate({"long_session": {"min_group": 10}})
    store.add_units(airline[:5])
    update_signals(store, settings)  # 5 scanned: too few for a workflow's length norm
    early = [u.unit_id for u in airline[:5]]
    assert units_to_scan(store, settings) == []  # still no norm: nothing to do
    store.add_units(airline[5:25])
    update_signals(store, settings)
    assert set(early) <= set(units_to_scan(store, settings))  # a norm exists now: the early ones again
    update_signals(store, settings)
    assert units_to_scan(store, settings) == [] and units_to_scan(store, settings, early) == []
