"""``assay demo`` stage 8: production replayed over several days, so the loop closes in time.

Production carries no verdict, and a report of one day shows no drift. So the demo replays part of
the benchmark runs as a production stream: each replayed day holds copies of real runs (same content,
nothing invented) under new unit ids, in environment production, their timestamps shifted into that
day, their recorded outcome withheld. For each day the copies are ingested and the online worker runs
one drain **as of that day** (:meth:`assay.suite.online.OnlineWorker.run` with ``now_ns``), so scores,
failure signals, signatures formed and lifecycle changes carry the replayed day, not the wall clock.

Days are dated back from today: day 0 (the worker's first pass, over the 300 benchmark runs as before)
is :data:`REPLAY_DAYS` + 1 days ago, day k is ``REPLAY_DAYS + 1 - k`` days ago, each pass at
:data:`PASS_HOUR` UTC. A run's copy lands at a seeded random time of its day between
:data:`FIRST_HOUR` and :data:`LAST_HOUR` UTC.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, progress_bar
from assay._store import Store
from assay._store.scores import run_scores
from assay.annotations import add_annotations, list_annotations
from assay.settings import Settings
from assay.signals import signal_counts
from assay.signatures import lifecycle_history, list_signatures
from assay.signatures.embeddings import kept_encoder
from assay.suite.online import OnlineWorker, PassReport
from assay.traces import Unit

REPLAY_DAYS = 5
"""Days of replayed production traffic after day 0."""
RUNS_PER_DAY = 50
"""Runs drawn (without replacement within a day) for each replayed day."""
FIX_DAY = 3
"""The replayed day that stands in for a release that fixed the tool errors: its runs are drawn from the runs
with no error span."""
BAD_DAY = 4
"""The replayed day that stands in for a bad release: :data:`BAD_SHARE` of its runs are drawn from the runs
whose recorded outcome is a failure (as the gate stage's candidate does)."""
BAD_SHARE = 0.75
SEED = 17
FIRST_HOUR, LAST_HOUR, PASS_HOUR = 6, 20, 22
LABELLED = "tool-calls-valid"
"""The criterion of the active code check: a copy of a run the AgentRx annotators labelled gets that label."""


@dataclass(frozen=True)
class ReplayDay:
    """One replayed day: its number (1..), date, the copies and how many of their runs had failed."""

    number: int
    day: date
    copies: list[Unit]
    failed_runs: int
    drawn_from: str = ""
    """where the runs were drawn from, in words"""


def day_start(day: date) -> datetime:
    """Midnight UTC of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def production_copy(unit: Unit, day: date, rng: random.Random) -> Unit:
    """A copy of ``unit`` as production traffic of ``day``: unit id ``prod/DAY/ORIGINAL``, a trace id of its own,
    span times shifted to a random moment of the day (the source's step spacing kept), environment production,
    no recorded outcome; ``replay_of`` names the original."""
    unit_id = f"prod/{day.isoformat()}/{unit.unit_id}"
    trace_id = hashlib.sha256(unit_id.encode("utf-8")).hexdigest()[:32]
    seconds = rng.uniform(FIRST_HOUR * 3600, LAST_HOUR * 3600)
    base = int((day_start(day) + timedelta(seconds=seconds)).timestamp()) * 1_000_000_000
    spans = tuple(s.model_copy(update={"trace_id": trace_id, "start_ns": s.start_ns + base,
                                       "end_ns": s.end_ns + base if s.end_ns else 0, "synthetic_time": False})
                  for s in unit.spans)
    attributes = {**unit.attributes, "deployment.environment.name": "production", "replay_of": unit.unit_id}
    return unit.model_copy(update={"unit_id": unit_id, "spans": spans, "outcome": "unknown", "reward": None,
                                   "attributes": attributes})


def replay_days(units: Sequence[Unit], today: date, days: int = REPLAY_DAYS, per_day: int = RUNS_PER_DAY,
                seed: int = SEED, fix_day: int | None = FIX_DAY, bad_day: int | None = BAD_DAY) -> list[ReplayDay]:
    """The replayed days (see module docstring), the last one yesterday: a seeded random draw of ``per_day`` runs
    each; on ``fix_day`` from the runs with no error span, on ``bad_day`` :data:`BAD_SHARE` of them from the runs
    whose recorded outcome is a failure."""
    rng = random.Random(seed)
    out = []
    for number in range(1, days + 1):
        day = today - timedelta(days=days + 1 - number)
        drawn, source = _draw(units, rng, per_day, "fix" if number == fix_day else "bad" if number == bad_day else "")
        copies = [production_copy(u, day, rng) for u in drawn]
        out.append(ReplayDay(number, day, copies, sum(u.outcome == "fail" for u in drawn), source))
    return out


def _draw(units: Sequence[Unit], rng: random.Random, n: int, kind: str) -> tuple[list[Unit], str]:
    """``n`` runs without replacement, and where from in words."""
    if kind == "fix":
        clean = [u for u in units if not u.has_error]
        return rng.sample(clean, n), f"only from the {len(clean)} runs with no error span (a release that fixed the " \
                                     "tool errors)"
    if kind == "bad":
        failed = [u for u in units if u.outcome == "fail"]
        bad = rng.sample(failed, round(n * BAD_SHARE))
        taken = {u.unit_id for u in bad}
        return (bad + rng.sample([u for u in units if u.unit_id not in taken], n - len(bad)),
                f"{BAD_SHARE:.0%} of its runs from the {len(failed)} runs that failed (a bad release)")
    return rng.sample(list(units), n), f"from all {len(units)} runs"


def pass_ns(day: date) -> int:
    """The time of a day's worker pass, ns since the epoch."""
    return int((day_start(day) + timedelta(hours=PASS_HOUR)).timestamp()) * 1_000_000_000


def replay_worker(store: Store, settings: Settings, day: date) -> tuple[PassReport, int]:
    """One worker drain as of ``day``'s pass time: its totals and the fail verdicts it wrote. The worker scores
    a day in one batch, brings the signatures up to date after every pass and sends nothing to the judge audit
    (the human labels here are the AgentRx annotators', see :func:`label_copies`)."""
    online = settings.online.model_copy(update={"batch_size": 1000, "signatures_interval_s": 0.0,
                                                "audit_share": 0.0})
    with progress_bar(f"worker, {day.isoformat()}", None) as advance:
        worker = OnlineWorker(store, settings.model_copy(update={"online": online}), log=lambda _line: advance(1))
        totals = worker.run(threading.Event(), once=True, now_ns=pass_ns(day))
    fails = sum(r.verdict == "fail" for r in run_scores(store, totals.run_id)) if totals.run_id else 0
    return totals, fails


def label_copies(store: Store, day: ReplayDay) -> int:
    """Human labels on ``LABELLED`` for the day's copies of runs the AgentRx annotators labelled: their label,
    dated an hour before the day's pass (as an expert labelling the day's traffic). Returns how many."""
    human = {a.unit_id: a for a in list_annotations(store, LABELLED) if a.annotator_kind == "human"}
    at = day_start(day.day) + timedelta(hours=PASS_HOUR - 1)
    notes = [human[c.attributes["replay_of"]].model_copy(update={
        "unit_id": c.unit_id, "created_at": at, "source": f"replay: the label of {c.attributes['replay_of']}"})
        for c in day.copies if c.attributes["replay_of"] in human]
    add_annotations(store, notes)
    return len(notes)


def evaluator_fails(store: Store) -> int:
    """Units with a failure signal from a failed score."""
    return sum(c.units for c in signal_counts(store) if c.kind == "evaluator_fail")


def run_replay(store: Store, settings: Settings, units: Sequence[Unit], today: date) -> None:
    """Day 0 (the benchmark runs) and the replayed days, then the lifecycle table (see module docstring)."""
    days = replay_days(units, today)
    start = today - timedelta(days=REPLAY_DAYS + 1)
    _explain(days, start)
    before = evaluator_fails(store)
    with kept_encoder():  # the embedding model loads once for the signature updates of all days
        totals, fails = replay_worker(store, settings, start)
        console.print(f"day 0 ({start}): worker: {totals.line()}; "
                      f"{fails} fail verdicts")
        for day in days:
            _replay_day(store, settings, day)
    console.print(f"units with a failure signal from a failed score: {before} -> {evaluator_fails(store)}")
    _lifecycle(store, days[-1].day)


def _replay_day(store: Store, settings: Settings, day: ReplayDay) -> None:
    """Ingest a day's copies and their labels, run the day's worker pass, print one line."""
    store.add_units(day.copies)
    labels = label_copies(store, day)
    totals, fails = replay_worker(store, settings, day.day)
    failed = len({c.unit_id for c in day.copies} & set(store.select_unit_ids("failed")))
    console.print(f"day {day.number} ({day.day}): {len(day.copies)} units, {totals.scored} scored, {fails} fail "
                  f"verdicts, {failed} units count as failed by their signals, {labels} human labels; "
                  f"signatures: {totals.signatures_assigned} units assigned, {totals.signatures_created} new, "
                  f"{totals.lifecycle_changes} lifecycle changes")


def _explain(days: list[ReplayDay], start: date) -> None:
    console.print(
        f"Production replayed over {len(days) + 1} days ({start} to {days[-1].day}), each worker pass dated by its "
        f"day ({PASS_HOUR}:00 UTC). Day 0: the worker's first pass scores the 300 benchmark runs. Days 1-{len(days)}: "
        f"a seeded random draw (seed {SEED}) of {RUNS_PER_DAY} of the 300 runs a day, copied under new unit ids "
        f"(prod/DAY/RUN), same content, environment production, timestamps shifted into the day, the recorded "
        f"outcome withheld (production carries no verdict). Two days stand in for releases, as the gate stage's "
        f"candidate does: day {FIX_DAY} draws only runs with no error span (the tool errors fixed), day {BAD_DAY} "
        f"draws {BAD_SHARE:.0%} of its runs from the runs that failed (a bad release). A copy of a run the AgentRx "
        f"annotators labelled gets their label on '{LABELLED}', dated that day (no judge-audit sample). The "
        "workspace's \\[lifecycle] window_days = 1, so each day's scores move the lifecycle. (Stages 1-7 ran today; "
        "the replayed days lie before it.)")
    for d in days:
        console.print(f"day {d.number} draws {d.drawn_from}: {d.failed_runs} of its {len(d.copies)} runs "
                      "failed by their withheld outcome")


def _lifecycle(store: Store, last: date) -> None:
    history = lifecycle_history(store)
    per_day = Counter(c.at.date() for c in history)
    console.print("lifecycle changes by day: " + ", ".join(f"{d}: {n}" for d, n in sorted(per_day.items())))
    for c in history:
        if c.from_state is not None:
            console.print(f"  {c.at.date()}: signature {c.signature_id} {c.from_state} -> {c.to_state}: "
                          f"{escape(c.reason)}")
    latest = {c.signature_id: c for c in history}
    table = Table("#", "units", "lifecycle", "since", "why", "signal mix",
                  title=f"signatures after the worker's passes (as of {last})")
    for sig in list_signatures(store)[:6]:
        change = latest.get(sig.id)
        table.add_row(str(sig.id), str(sig.size), sig.lifecycle.replace("_", " "),
                      str(change.at.date()) if change else "-", escape(change.reason) if change else "-",
                      escape(sig.signal_mix_text))
    console.print(table)
