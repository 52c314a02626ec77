"""The lifecycle of a failure signature: each transition rule on its facts, then the whole path
new -> escalating -> criterion written -> monitored -> resolved -> regressed -> resolved on a real SQLite
store (members, criteria, an active evaluator and its production scores written through the real write
paths, back-dated as a worker over weeks would have written them), the history kept, and the changes
that are drift alerts posted to a real local webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from assay._store import Store
from assay._store.scores import Lineage, new_run
from assay._store.tables import MemberRow, ScoreRow, SignatureRow
from assay.annotations import add_criterion
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, save_evaluator
from assay.evaluators.lineage import write_results
from assay.settings import DriftSettings, LifecycleSettings, Settings
from assay.signals import list_signals
from assay.signatures import lifecycle_history, list_signatures, map_points, update_lifecycle
from assay.signatures.lifecycle import Facts, decide, fail_rate, growth_p
from assay.suite.drift import check_drift, compute_drift
from assay.suite.online import OnlineParams, OnlineWorker
from assay.traces import Step, Unit
from tests.test_drift import _Hook, webhook  # noqa: F401 - the webhook fixture: a real local HTTP server
from tests.test_signal_sources import POLICY, REFUND, support_units
from tests.test_signal_store import chat_unit
from tests.ui_fixtures import make_unit

CFG = LifecycleSettings()  # window 7 days, 5 members to escalate, alpha 0.05, resolved under 5%, 20 scores
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


# --- the rules, one by one ---------------------------------------------------------------------
def test_new_until_members_rise_significantly_after_a_window() -> None:
    assert decide(None, Facts(), CFG) == ("new", "no criterion yet")
    rising = Facts(recent=6, before=0, old_enough=True)
    assert growth_p(6, 0) == pytest.approx(0.5 ** 6)
    assert decide("new", rising, CFG)[0] == "escalating"
    assert "6 members in the last 7 days vs 0" in decide("new", rising, CFG)[1]
    assert decide("new", Facts(recent=6, before=0, old_enough=False), CFG)[0] == "new"  # first seen: new
    assert decide("new", Facts(recent=4, before=0, old_enough=True), CFG)[0] == "new"  # too few
    assert growth_p(6, 4) > 0.05 and decide("new", Facts(recent=6, before=4, old_enough=True), CFG)[0] == "new"
    assert decide("escalating", Facts(recent=1, before=6, old_enough=True), CFG) == (
        "new", "no criterion yet; members not rising")


def test_a_criterion_then_an_active_evaluator() -> None:
    assert decide("escalating", Facts(recent=9, old_enough=True, criteria=("refunds",)), CFG)[0] == \
        "criterion_written"
    covered = Facts(criteria=("refunds",), evaluators=("refund-check",))
    state, why = decide("criterion_written", covered, CFG)
    assert state == "monitored" and "fewer than 20 production scores of refund-check" in why
    busy = Facts(criteria=("refunds",), evaluators=("refund-check",), fail=fail_rate("refund-check", 12, 40))
    state, why = decide("monitored", busy, CFG)
    assert state == "monitored" and "refund-check fails 12 of 40 production scores (30.0%" in why


def test_resolved_under_the_threshold_and_regressed_when_clearly_above_again() -> None:
    def covered(failed: int, scored: int) -> Facts:
        return Facts(criteria=("c",), evaluators=("e",), fail=fail_rate("e", failed, scored))

    assert decide("monitored", covered(1, 40), CFG)[0] == "resolved"  # 2.5% < 5%
    assert fail_rate("e", 10, 40).low > 0.05 and decide("resolved", covered(10, 40), CFG)[0] == "regressed"
    assert fail_rate("e", 3, 40).low < 0.05 and decide("resolved", covered(3, 40), CFG)[0] == "resolved"  # noise
    assert decide("regressed", covered(3, 40), CFG)[0] == "regressed"
    assert decide("regressed", covered(0, 40), CFG)[0] == "resolved"
    quiet = Facts(criteria=("c",), evaluators=("e",))  # too few scores this window: the state is kept
    assert decide("resolved", quiet, CFG)[0] == "resolved" and decide("regressed", quiet, CFG)[0] == "regressed"
    assert decide("monitored", covered(10, 40), CFG)[0] == "monitored"  # never resolved: not a regression
    assert decide("resolved", Facts(criteria=("c",)), CFG)[0] == "criterion_written"  # evaluator deactivated


# --- the whole path on a store ---------------------------------------------------------------------
CHECK = EvaluatorDef.model_validate({
    "name": "amount-check", "kind": "code", "dimension": "payments",
    "criterion": {"name": "booked-amount", "text": "The booked amount matches the fare."},
    "code": {"callable": "assay.evaluators.checks:no_tool_errors"}})


def _members(store: Store, prefix: str, n: int, seen: datetime) -> None:
    ids = [f"{prefix}-{i:02d}" for i in range(n)]
    store.add_units([make_unit(u) for u in ids])
    with store.session() as s:
        for u in ids:
            s.add(MemberRow(unit_id=u, signature_id=1, structural_key="tool=book_reservation", distance=0.1,
                            seen_at=seen.replace(tzinfo=None), assignment="assigned"))


def _scores(store: Store, prefix: str, failed: int, scored: int, at: datetime) -> None:
    """``scored`` production (online) scores of the evaluator, ``failed`` of them fail, created at ``at``."""
    ids = [f"{prefix}-{i:02d}" for i in range(scored)]
    store.add_units([make_unit(u) for u in ids])
    version = content_version(CHECK)
    run_id = new_run(store, "online", OnlineParams())
    write_results(store, Lineage(evaluator=CHECK.name, evaluator_version=version, run_id=run_id, run_kind="online"),
                  [EvaluationResult(evaluator=CHECK.name, evaluator_version=version, unit_id=u,
                                    score=float(i >= failed), verdict="pass" if i >= failed else "fail")
                   for i, u in enumerate(ids)])
    with store.session() as s:
        s.execute(update(ScoreRow).where(ScoreRow.unit_id.in_(ids)).values(created_at=at.replace(tzinfo=None)))


def _state(store: Store) -> str:
    return next(s.lifecycle for s in list_signatures(store) if s.id == 1)


def test_a_signature_moves_through_its_lifecycle_and_the_history_is_kept(
        tmp_path: Path, webhook: tuple[str, type[_Hook]]) -> None:  # noqa: F811 - the fixture imported above
    settings = Settings(workspace=tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    created = (T0 - timedelta(days=20)).replace(tzinfo=None)
    with store.session() as s:
        s.add(SignatureRow(id=1, structural_key="tool=book_reservation", label="book_reservation: amount wrong",
                           keywords=[], size=0, status="new", created_at=created))
    _members(store, "old", 3, T0 - timedelta(days=16))
    steps = []

    def step(now: datetime) -> str:
        changes = update_lifecycle(store, settings, now)
        steps.append([(c.from_state, c.to_state) for c in changes])
        return _state(store)

    assert step(T0) == "new"  # 3 members 16 days ago, none since
    assert step(T0 + timedelta(hours=1)) == "new" and steps[-1] == []  # nothing changed: nothing recorded
    _members(store, "burst", 8, T0 + timedelta(days=1))
    assert step(T0 + timedelta(days=2)) == "escalating"  # 8 in the last week vs 0 the week before
    add_criterion(store, "The booked amount matches the fare.", name="booked-amount", signature_id=1)
    assert step(T0 + timedelta(days=2, hours=1)) == "criterion_written"
    save_evaluator_record(store, CHECK, "active", None, override_reason="test")
    assert step(T0 + timedelta(days=2, hours=2)) == "monitored"  # no production score yet
    _scores(store, "wk1", 12, 30, T0 + timedelta(days=3))
    assert step(T0 + timedelta(days=4)) == "monitored"  # 40% fail
    _scores(store, "wk3", 0, 30, T0 + timedelta(days=12))
    assert step(T0 + timedelta(days=13)) == "resolved"  # the week's scores: 0 of 30 fail
    _scores(store, "wk5", 9, 30, T0 + timedelta(days=26))
    assert step(T0 + timedelta(days=27)) == "regressed"  # 30% fail, the interval well above 5%
    assert step(T0 + timedelta(days=40)) == "regressed"  # no score for two weeks: kept
    history = lifecycle_history(store, 1)
    assert [(c.from_state, c.to_state) for c in history] == [
        (None, "new"), ("new", "escalating"), ("escalating", "criterion_written"),
        ("criterion_written", "monitored"), ("monitored", "resolved"), ("resolved", "regressed")]
    assert history[-1].details["fail_rate"]["failed"] == 9 and "amount-check fails 9 of 30" in history[-1].reason
    assert history[1].details["members_recent"] == 8 and history[0].at == T0

    url, hook = webhook
    report = check_drift(store, DriftSettings(webhook_url=url), "week", now=T0 + timedelta(days=27, hours=1))
    assert [(c.from_state, c.to_state) for c in report.lifecycle] == [("resolved", "regressed")]
    [alert] = [a for a in report.alerts if a.kind == "signature_lifecycle"]
    assert alert.signature_id == 1 and alert.evaluator == "amount-check" and "resolved -> regressed" in alert.message
    assert report.exit_code == 1
    [posted] = hook.received
    assert posted["json"]["lifecycle"][0]["to_state"] == "regressed"
    # the evaluator's pass rate fell too (1.00 -> 0.70): that drift alert comes with it
    assert [a["kind"] for a in posted["json"]["alerts"]] == ["pass_rate", "signature_lifecycle"]
    quiet = compute_drift(store, DriftSettings(lifecycle_alerts=[]), "week", now=T0 + timedelta(days=27, hours=1))
    assert quiet.lifecycle and [a.kind for a in quiet.alerts] == ["pass_rate"]  # in the report, not an alert
    with store.session() as s:
        assert s.scalar(select(SignatureRow.lifecycle).where(SignatureRow.id == 1)) == "regressed"
    store.close()


# --- the online worker: failed scores reach the signatures on its next pass -------------------------
COMPETITOR = "You could also try CompetitorCo, they handle this better."


def recommends_no_competitor(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """Fail when the agent sends the user to a competitor."""
    at = next((s.index for s in steps if "CompetitorCo" in s.text), None)
    return (0.0, f"recommended a competitor at step {at}") if at else (1.0, "no competitor named")


def _answered(unit_id: str, user: str, answer: str) -> Unit:
    unit = chat_unit(unit_id, user=user)
    span = unit.spans[0]
    out = span.output_messages[0].model_copy(update={"content": answer})
    return unit.model_copy(update={"spans": (span.model_copy(update={"output_messages": (out,)}),)})


def test_failed_online_scores_join_or_create_signatures_on_the_next_pass(tmp_path: Path) -> None:
    settings = Settings.model_validate({"workspace": tmp_path, "store_url": f"sqlite:///{tmp_path / 'a.db'}",
                                        "min_cluster_size": 3, "online": {"signatures_interval_s": 0}})
    store = Store(settings.resolved_store_url(), settings.signals)
    rival = EvaluatorDef.model_validate({
        "name": "no-competitor", "kind": "code", "dimension": "policy", "sample_rate": 1.0,
        "criterion": {"name": "no-competitor", "text": "The agent never sends the user to a competitor."},
        "code": {"callable": "tests.test_signatures_lifecycle:recommends_no_competitor"}})
    for defn in (POLICY.model_copy(update={"sample_rate": 1.0}), rival):
        save_evaluator(defn, settings.evaluators_path() / f"{defn.name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="test")
    store.add_units(support_units())  # six delay complaints, three refused with the default policy
    worker = OnlineWorker(store, settings)
    first = worker.run_pass()
    assert first.scored == 12 and store.select_unit_ids("failed") == ["support/0", "support/2", "support/4"]
    assert first.signatures_created == 1  # nothing was built: the worker builds
    [refusals] = list_signatures(store)
    assert sorted(refusals.unit_ids) == ["support/0", "support/2", "support/4"]
    assert refusals.signal_mix["evaluator_fail"] == 3 and refusals.lifecycle == "new"

    late = [_answered(f"support/late-{i}", f"My parcel {i} arrived a week late, the delay ruined the gift.",
                      REFUND if i % 2 == 0 else "Sorry to hear that, here is a voucher.") for i in range(3)]
    store.add_units(late)  # the same failure again: support/late-0 and late-2 are refused
    joined = worker.run_pass()
    assert joined.signatures_assigned == 2 and joined.signatures_created == 0
    assert set(next(iter(list_signatures(store))).unit_ids) >= {"support/late-0", "support/late-2"}

    store.add_units([_answered(f"rival/{i}", f"Can you fix my router {i}?", COMPETITOR) for i in range(4)])
    created = worker.run_pass()
    assert created.signatures_created == 1 and created.signatures_assigned == 0
    rivals = next(s for s in list_signatures(store) if s.id != refusals.id)
    assert sorted(rivals.unit_ids) == [f"rival/{i}" for i in range(4)]
    assert "recommended a competitor" in " ".join(s.evidence for s in list_signals(store, unit_id="rival/0"))
    assert worker.run_pass().did_work is False  # nothing new: the next pass is idle
    assert {c.signature_id for c in lifecycle_history(store)} == {refusals.id, rivals.id}
    store.close()


def test_the_worker_updates_signatures_at_most_once_per_interval(tmp_path: Path) -> None:
    settings = Settings.model_validate({"workspace": tmp_path, "store_url": f"sqlite:///{tmp_path / 'a.db'}",
                                        "min_cluster_size": 3, "online": {"signatures_interval_s": 3600}})
    store = Store(settings.resolved_store_url(), settings.signals)
    defn = POLICY.model_copy(update={"sample_rate": 1.0})
    save_evaluator(defn, settings.evaluators_path() / f"{defn.name}.yaml")
    save_evaluator_record(store, defn, "active", None, override_reason="test")
    store.add_units(support_units()[:2])
    worker = OnlineWorker(store, settings)
    worker.run_pass()  # the first pass updates: the build knows support/0 (alone: in no signature)
    assert {p[0] for p in map_points(store)} == {"support/0"}
    store.add_units([_answered(f"x/{i}", f"My parcel {i} was late, the delay ruined it.", REFUND) for i in range(3)])
    later = worker.run_pass()
    assert later.scored == 3 and len(store.select_unit_ids("failed")) == 4
    assert {p[0] for p in map_points(store)} == {"support/0"}  # within the hour: not yet
    never = settings.model_copy(update={"online": settings.online.model_copy(update={"signatures_interval_s": None})})
    OnlineWorker(store, never).run_pass()
    assert {p[0] for p in map_points(store)} == {"support/0"}
    OnlineWorker(store, settings).run_pass()  # another worker's first pass
    assert {p[0] for p in map_points(store)} == {"support/0", "x/0", "x/1", "x/2"}
    store.close()


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000


def test_a_dated_worker_pass_dates_scores_signals_signatures_and_lifecycle(tmp_path: Path) -> None:
    """A replay of past traffic: each pass runs as of its day, and everything it writes carries that day."""
    settings = Settings.model_validate({"workspace": tmp_path, "store_url": f"sqlite:///{tmp_path / 'a.db'}",
                                        "min_cluster_size": 3, "online": {"signatures_interval_s": 0}})
    store = Store(settings.resolved_store_url(), settings.signals)
    rival = EvaluatorDef.model_validate({
        "name": "no-competitor", "kind": "code", "dimension": "policy", "sample_rate": 1.0,
        "criterion": {"name": "no-competitor", "text": "The agent never sends the user to a competitor."},
        "code": {"callable": "tests.test_signatures_lifecycle:recommends_no_competitor"}})
    for defn in (POLICY.model_copy(update={"sample_rate": 1.0}), rival):
        save_evaluator(defn, settings.evaluators_path() / f"{defn.name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="test")
    day1, day2 = T0, T0 + timedelta(days=1)
    store.add_units(support_units())  # day 1: three refused delay refunds
    first = OnlineWorker(store, settings).run(_Never(), once=True, now_ns=_ns(day1))
    assert first.scored == 12
    store.add_units([_answered(f"rival/{i}", f"Can you fix my router {i}?", COMPETITOR) for i in range(4)])
    second = OnlineWorker(store, settings).run(_Never(), once=True, now_ns=_ns(day2))  # a new worker: day 2
    assert second.scored == 8 and second.signatures_created == 1

    with store.session() as s:
        scored = {(r.unit_id, r.evaluator_name): r.created_at for r in s.scalars(select(ScoreRow))}
    assert {_aware(at) for (u, _), at in scored.items() if u.startswith("support/")} == {day1}
    assert {_aware(at) for (u, _), at in scored.items() if u.startswith("rival/")} == {day2}
    fails = [sig for sig in list_signals(store) if sig.kind == "evaluator_fail"]
    assert {(sig.unit_id, sig.time_ns) for sig in fails} == {
        *((f"support/{i}", _ns(day1)) for i in (0, 2, 4)), *((f"rival/{i}", _ns(day2)) for i in range(4))}
    rivals = next(s for s in list_signatures(store) if "rival/0" in s.unit_ids)
    with store.session() as s:
        row = s.get(SignatureRow, rivals.id)
        assert row is not None and _aware(row.created_at) == day2  # formed by the day-2 pass
    changes = {c.signature_id: c for c in lifecycle_history(store)}
    assert changes[rivals.id].at == day2 and changes[rivals.id].from_state is None
    assert {c.at for c in changes.values()} == {day1, day2}  # the day-1 signature was evaluated on day 1
    # drift reads the days the passes ran, not when the test ran
    daily = compute_drift(store, window="day", now=day2 + timedelta(hours=1))
    windows = {ev.evaluator: [(w.start, w.n_scored) for w in ev.windows] for ev in daily.evaluators}
    assert windows["no-competitor"] == [(day1.date(), 6), (day2.date(), 4)]
    store.close()


class _Never:
    """A stop flag never set (``once`` drains)."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        return False


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
