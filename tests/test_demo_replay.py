"""The demo's production replay: copies of real tau-bench runs as production traffic of past days (same
content, new ids, timestamps in the day, no recorded outcome), drawn by a seeded random draw."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

from assay._cli.demo import AIRLINE, RETAIL
from assay._cli.demo_replay import BAD_SHARE, day_start, pass_ns, production_copy, replay_days
from assay._store import Store
from assay._store.tables import UnitRow
from assay.signatures.impact import unit_time
from assay.traces import Unit, read_file
from assay.traces.timeline import step_timeline

from .conftest import DATA

TODAY = date(2026, 12, 6)


def _runs() -> list[Unit]:
    return [u for rel in (AIRLINE, RETAIL) for u in read_file(DATA / rel).units]


def test_a_production_copy_is_the_same_run_on_its_day_without_a_verdict(tmp_path: Path) -> None:
    run = next(u for u in _runs() if u.outcome == "fail")
    day = TODAY - timedelta(days=3)
    copy = production_copy(run, day, random.Random(1))
    assert copy.unit_id == f"prod/{day}/{run.unit_id}" and copy.attributes["replay_of"] == run.unit_id
    assert copy.outcome == "unknown" and copy.reward is None
    assert [s.text for s in step_timeline(copy)] == [s.text for s in step_timeline(run)]  # nothing invented
    start, end = day_start(day).timestamp() * 1e9, pass_ns(day)
    assert all(start <= s.start_ns <= s.end_ns < end and not s.synthetic_time for s in copy.spans)
    gaps = [b.start_ns - a.start_ns for a, b in zip(run.spans, run.spans[1:], strict=False)]
    assert [b.start_ns - a.start_ns for a, b in zip(copy.spans, copy.spans[1:], strict=False)] == gaps
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_units([run, copy])
    with store.session() as s:
        row = s.get(UnitRow, copy.unit_id)
        assert row is not None and (row.env, row.outcome, row.reward) == ("production", "unknown", None)
    [stored] = store.units([copy.unit_id])
    seen = unit_time(stored, None)
    assert seen is not None and seen.date() == day  # a signature member's time is its day
    store.close()


def test_the_days_are_a_seeded_draw_with_one_bad_day() -> None:
    runs = _runs()
    days = replay_days(runs, TODAY, days=5, per_day=50, seed=17, fix_day=3, bad_day=4)
    assert [d.day for d in days] == [TODAY - timedelta(days=k) for k in (5, 4, 3, 2, 1)]
    assert all(len({c.unit_id for c in d.copies}) == 50 for d in days)
    assert [d.failed_runs for d in replay_days(runs, TODAY, seed=17)] == [d.failed_runs for d in days]
    assert [c.unit_id for c in replay_days(runs, TODAY, seed=18)[0].copies] != [c.unit_id for c in days[0].copies]
    assert not any(s.status == "error" for c in days[2].copies for s in c.spans)  # the release that fixed them
    assert days[3].failed_runs >= round(50 * BAD_SHARE)  # the bad release
    base = sum(u.outcome == "fail" for u in runs) / len(runs)
    assert all(abs(d.failed_runs / 50 - base) < 0.25 for d in days if d.number not in (3, 4))
    assert sum(any(s.status == "error" for s in c.spans) for c in days[0].copies) > 0
