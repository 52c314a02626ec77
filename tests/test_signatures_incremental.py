"""Incremental assignment, stable ids, impact from annotations, and the rare-severe channel,
on real runs (27 failed tau-bench retail runs, Magentic-One logs), the real embedding model
and a real SQLite file. Tests run in file order on one store: each step builds on the last."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from assay._cli._common import AppContext
from assay._cli.signatures import signatures_app
from assay._store import Store
from assay._store.tables import MemberRow, SevereFlagRow
from assay.annotations import Annotation, add_annotations
from assay.exceptions import NotFoundError, UsageError
from assay.settings import Settings, SevereRules
from assay.signatures import (
    EmbeddingStats,
    build_signatures,
    flag_unit,
    list_signatures,
    map_points,
    new_units,
    scan_severe,
    severe_queue,
    unseen_modes,
    update_signatures,
)
from assay.signatures.impact import recency, unit_time
from assay.traces import Span, Unit, read_file, step_timeline

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RETAIL = DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"
MAGENTIC = DATA / "agentrx" / "data" / "magentic_dataset"
# Magentic-One runs whose WebSurfer hit the same content-filter error (a dense group of its own)
FILTERED = ["2aa5dd83fbcd0dce9a3dd4592106e5b5edf738008d932e357d477bba80e59ccf",
            "56137764-b4e0-45b8-9c52-1866420c3df5", "72e110e7-464c-453c-a309-90a95aed6538",
            "73c1b9fe-ee1d-4cf4-96ca-35c08f97b054",
            "6b06d186921b8b390c65aebd0d16f09f60a47d2f1288ebe36953f734e84c0a3c",
            "52f7224e9c79431e7926afe317782711a0028750693e7456cde22ef6f4bd8bd5"]
SETTINGS = Settings.model_validate({"min_cluster_size": 3, "severe": {"tools": ["exchange_delivered_order_items"]}})


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def clone(unit: Unit, new_id: str) -> Unit:
    """The same run under another unit id (new trace and span ids, same content)."""
    trace_id = _hex(new_id, 32)
    spans = tuple(s.model_copy(update={"trace_id": trace_id, "span_id": _hex(new_id + s.span_id, 16),
                                       "parent_span_id": _hex(new_id + s.parent_span_id, 16)
                                       if s.parent_span_id else None}) for s in unit.spans)
    return unit.model_copy(update={"unit_id": new_id, "spans": spans})


def magentic(run_id: str) -> Unit:
    return read_file(MAGENTIC / f"{run_id}.json").units[0].model_copy(update={"outcome": "fail"})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store("sqlite:///" + str(tmp_path_factory.mktemp("inc") / "inc.db"))
    st.add_units(read_file(RETAIL).units)
    return st


@pytest.fixture(scope="module")
def built(store: Store) -> dict[int, list[str]]:
    sigs = build_signatures(store, SETTINGS)
    assert len(sigs) >= 2
    return {s.id: s.unit_ids for s in sigs}


# --- incremental assignment ----------------------------------------------------------------


def test_update_without_new_units_changes_nothing(store: Store, built: dict[int, list[str]]) -> None:
    stats = EmbeddingStats()
    result = update_signatures(store, SETTINGS, stats=stats)
    assert (result.assigned, result.new_units, result.new_signatures) == ({}, [], [])
    assert stats.computed == stats.cached == 0
    assert {s.id: s.unit_ids for s in list_signatures(store)} == built


def test_new_units_go_to_the_nearest_signature_or_are_marked_new(store: Store, built: dict[int, list[str]]) -> None:
    sid, members = max(built.items(), key=lambda kv: len(kv[1]))
    twin = clone(store.unit(members[0]), "retail-copy/1")
    far = magentic(FILTERED[0])
    store.add_units([twin, far])
    stats = EmbeddingStats()
    result = update_signatures(store, SETTINGS, stats=stats)
    assert stats.computed == 2  # only the unseen units are embedded
    assert result.assigned == {"retail-copy/1": sid}
    assert result.new_units == [far.unit_id] and result.new_signatures == []
    after = {s.id: s for s in list_signatures(store)}
    assert set(after) == set(built)  # nothing renumbered, nothing added
    # the twin has its original's text: the same distance up to float noise of the encoder's batch
    assert set(after[sid].unit_ids[:2]) == {members[0], "retail-copy/1"} and after[sid].unit_ids[2:] == members[1:]
    assert after[sid].assigned == 1 and after[sid].size == len(members) + 1
    assert all(after[k].unit_ids == v for k, v in built.items() if k != sid)
    assert new_units(store) == [far.unit_id]
    assert {p[0] for p in map_points(store)} >= {"retail-copy/1", far.unit_id}


def test_pending_new_units_that_group_become_new_signatures(store: Store, built: dict[int, list[str]]) -> None:
    store.add_units([magentic(r) for r in FILTERED[1:]])
    result = update_signatures(store, SETTINGS)
    assert result.assigned == {}
    assert len(result.new_signatures) >= 1 and min(result.new_signatures) > max(built)
    sigs = {s.id: s for s in list_signatures(store)}
    grouped = {u for sid in result.new_signatures for u in sigs[sid].unit_ids}
    assert grouped <= {f"magentic-one/{r}" for r in FILTERED}
    assert all(sigs[sid].status == "new" for sid in result.new_signatures)
    assert set(result.new_units) == {f"magentic-one/{r}" for r in FILTERED} - grouped
    assert set(sigs) == set(built) | set(result.new_signatures)
    assert sigs[result.new_signatures[0]].structural_key.startswith("tool=WebSurfer | error=openai.badrequesterror")


def test_a_full_rebuild_keeps_every_id_that_still_exists(store: Store, built: dict[int, list[str]]) -> None:
    before = {s.id: set(s.unit_ids) for s in list_signatures(store)}
    after = {s.id: s for s in build_signatures(store, SETTINGS)}
    kept = set(before) & set(after)
    assert set(built) <= kept
    for sid in kept:
        overlap = len(before[sid] & set(after[sid].unit_ids)) / len(before[sid] | set(after[sid].unit_ids))
        assert overlap >= 0.5 and after[sid].status == "existing"
    with store.session() as s:
        assert set(s.scalars(select(MemberRow.assignment))) <= {"cluster", "noise"}


# --- impact ----------------------------------------------------------------------------------


def test_annotated_severity_raises_impact_and_reorders(store: Store, built: dict[int, list[str]]) -> None:
    sigs = list_signatures(store)
    last = sigs[-1]
    assert last.impact < sigs[0].impact
    add_annotations(store, [Annotation(unit_id=u, annotator="expert", label="fail", severity=4) for u in last.unit_ids])
    ranked = list_signatures(store)
    boosted = next(s for s in ranked if s.id == last.id)
    assert boosted.impact == pytest.approx(4.0 * last.size, rel=1e-3)  # severity 4 weighs 4, recency ~1
    assert boosted.severity == pytest.approx(4.0)
    assert [s.impact for s in ranked] == sorted((s.impact for s in ranked), reverse=True)
    assert ranked.index(boosted) < sigs.index(last)
    add_annotations(store, [Annotation(unit_id=last.unit_ids[0], annotator="bot", annotator_kind="llm",
                                       label="fail", severity=1)])
    assert next(s for s in list_signatures(store) if s.id == last.id).impact == pytest.approx(boosted.impact)


def test_recency_halves_per_half_life() -> None:
    now = datetime(2025, 1, 31, tzinfo=UTC)
    assert recency(now, now) == 1.0
    assert recency(now - timedelta(days=14), now) == pytest.approx(0.5)
    assert recency(now - timedelta(days=28), now, half_life_days=14) == pytest.approx(0.25)
    assert recency(None, now) == recency(now + timedelta(days=1), now) == 1.0


def test_unit_time_prefers_real_timestamps(store: Store) -> None:
    tau = store.unit("tau-retail/task-0/trial-0")
    ingested = datetime(2025, 3, 1, tzinfo=UTC)
    assert unit_time(tau, ingested) == ingested  # synthetic step times are not dates
    real = Span(trace_id="b" * 32, span_id="c" * 16, name="chat", start_ns=1_700_000_000 * 10**9,
                end_ns=1_700_000_005 * 10**9)
    unit = Unit(unit_id="otel/1", kind="trace", source="t", spans=(real,))
    assert unit_time(unit, ingested) == datetime.fromtimestamp(1_700_000_005, tz=UTC)


# --- rare-severe channel -----------------------------------------------------------------------


def _calls(unit: Unit, tool: str) -> bool:
    return any(s.kind == "tool_call" and s.tool_name == tool for s in step_timeline(unit))


def test_the_build_flagged_failed_units_by_the_settings_rules(store: Store, built: dict[int, list[str]]) -> None:
    failed = [u for u in read_file(RETAIL).units if u.outcome == "fail"]
    expected = {u.unit_id for u in failed if _calls(u, "exchange_delivered_order_items")}
    queue = severe_queue(store, include_reviewed=True)  # the impact test annotated some of them
    assert expected and {i.unit_id for i in queue} == expected
    assert all(f.reason == "tool 'exchange_delivered_order_items' called" for i in queue for f in i.flags)
    assert all(i.signature_id is None or i.signature_size > 0 for i in queue)


def test_rules_flag_tools_and_keywords_and_follow_rule_changes(tmp_path: Path) -> None:
    rules = SevereRules(tools=["exchange_delivered_order_items"], keywords=["sneakers"])
    st = Store("sqlite:///" + str(tmp_path / "s.db"))
    units = read_file(RETAIL).units
    st.add_units(units)
    assert scan_severe(st, rules) == len(units)
    assert scan_severe(st, rules) == 0  # content and rules unchanged: nothing rescanned
    by_tool = {u.unit_id for u in units if _calls(u, "exchange_delivered_order_items")}
    by_word = {u.unit_id for u in units
               if any("sneakers" in s.text.lower() for s in step_timeline(u) if s.kind != "system")}
    queue = severe_queue(st)
    assert {i.unit_id for i in queue} == by_tool | by_word and by_tool and by_word
    for item in queue:
        reasons = {f.reason for f in item.flags}
        assert ("tool 'exchange_delivered_order_items' called" in reasons) == (item.unit_id in by_tool)
        assert ("keyword 'sneakers'" in reasons) == (item.unit_id in by_word)
        assert all(f.source == "rule" for f in item.flags)
    assert scan_severe(st, SevereRules(tools=["exchange_delivered_order_items"])) == len(units)  # rules changed
    assert {i.unit_id for i in severe_queue(st)} == by_tool  # stale keyword flags removed


def test_error_type_rule_matches_normalized_errors(tmp_path: Path) -> None:
    st = Store("sqlite:///" + str(tmp_path / "e.db"))
    units = read_file(RETAIL).units
    st.add_units(units)
    scan_severe(st, SevereRules(error_types=["User Not Found"]))
    expected = {u.unit_id for u in units if any(s.is_error and "user not found" in s.text.lower()
                                                for s in step_timeline(u))}
    assert expected and {i.unit_id for i in severe_queue(st)} == expected


def _with_feedback(unit: Unit, new_id: str, attributes: dict[str, object]) -> Unit:
    copy = clone(unit, new_id)
    root = copy.spans[0].model_copy(update={"attributes": {**copy.spans[0].attributes, **attributes}})
    return copy.model_copy(update={"spans": (root, *copy.spans[1:])})


def test_low_user_feedback_routes_even_a_passing_run(store: Store) -> None:
    passing = next(u for u in read_file(RETAIL).units
                   if u.outcome == "pass" and not _calls(u, "exchange_delivered_order_items"))
    low = _with_feedback(passing, "feedback/low", {"user.feedback.score": 0.1})
    high = _with_feedback(passing, "feedback/high", {"user.feedback.score": 0.9})
    thumbs = _with_feedback(passing, "feedback/thumbs", {"annotations.0.annotation.name": "user_feedback",
                                                         "annotations.0.annotation.score": 0,
                                                         "annotations.1.annotation.name": "relevance",
                                                         "annotations.1.annotation.score": 0.0})
    store.add_units([low, high, thumbs])
    scan_severe(store, SETTINGS.severe)
    queue = {i.unit_id: i for i in severe_queue(store)}
    assert set(queue) >= {"feedback/low", "feedback/thumbs"} and "feedback/high" not in queue
    assert queue["feedback/low"].flags[0].source == "feedback"
    assert queue["feedback/low"].flags[0].reason == "user.feedback.score = 0.1 < 0.3"
    assert [f.reason for f in queue["feedback/thumbs"].flags] == ["annotations.0 (user_feedback) = 0 < 0.3"]
    assert queue["feedback/low"].signature_id is None  # not a failed unit: in no signature, still queued


def test_a_person_flags_a_unit_of_a_large_signature(store: Store, built: dict[int, list[str]]) -> None:
    largest = max(list_signatures(store), key=lambda s: s.size)
    unit_id = largest.unit_ids[0]
    flag = flag_unit(store, unit_id, "leaked a customer's address", flagged_by="ana")
    assert flag_unit(store, unit_id, "leaked a customer's address", flagged_by="ana") == flag  # idempotent
    queue = severe_queue(store)
    item = next(i for i in queue if i.unit_id == unit_id)
    assert (item.signature_id, item.signature_size) == (largest.id, largest.size)
    assert [(f.source, f.flagged_by) for f in item.flags] == [("person", "ana")]
    assert queue[0].unit_id == unit_id  # person flags first
    build_signatures(store, SETTINGS)  # rule scans never remove a person's flag
    assert any(i.unit_id == unit_id for i in severe_queue(store))
    with pytest.raises(NotFoundError):
        flag_unit(store, "no/such/unit", "x")
    with pytest.raises(UsageError):
        flag_unit(store, unit_id, "  ")


def test_a_human_review_takes_a_unit_out_of_the_queue(store: Store, built: dict[int, list[str]]) -> None:
    unit_id = next(i.unit_id for i in severe_queue(store) if i.flags[0].source == "person")
    add_annotations(store, [Annotation(unit_id=unit_id, annotator="lead", label="fail", severity=4)])
    assert unit_id not in {i.unit_id for i in severe_queue(store)}
    reviewed = next(i for i in severe_queue(store, include_reviewed=True) if i.unit_id == unit_id)
    assert reviewed.reviewed
    with store.session() as s:
        assert s.scalar(select(SevereFlagRow).where(SevereFlagRow.unit_id == unit_id)) is not None


# --- command line ----------------------------------------------------------------------------


def test_cli_lists_flags_and_shows_the_severe_inbox(store: Store, built: dict[int, list[str]]) -> None:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = AppContext(settings=SETTINGS, _store=store)

    app.add_typer(signatures_app, name="signatures")
    runner = CliRunner()
    listed = runner.invoke(app, ["signatures", "--json", "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    assert [s["id"] for s in json.loads(listed.output)] == [s.id for s in list_signatures(store)[:2]]
    unseen = unseen_modes(store)  # the impact test labelled one signature's members fail, without a criterion
    assert unseen.uncovered == unseen.labelled_failures > 0 and unseen.estimate == 1.0
    footer = runner.invoke(app, ["signatures", "--limit", "1"], env={"COLUMNS": "250"})
    assert "Chance the next reviewed failure shows a mode no criterion covers yet: 100% (Good-Turing" in footer.output
    assert "representative unit" in footer.output and "show from 140 columns" not in footer.output
    narrow = runner.invoke(app, ["signatures", "--limit", "1"], env={"COLUMNS": "80"})  # a CI log, a pipe
    assert narrow.exit_code == 0 and " ".join(narrow.output.split()).count("representative unit") == 1  # the hint
    assert "lifecycle" in narrow.output and "signal mix" in narrow.output and "imp…" not in narrow.output
    assert "representative unit show from 140 columns" in " ".join(narrow.output.split())
    stop = runner.invoke(app, ["signatures", "unseen", "--json"])
    assert stop.exit_code == 0, stop.output
    assert json.loads(stop.output) == unseen.model_dump(mode="json")
    unit_id = list_signatures(store)[-1].unit_ids[-1]
    flagged = runner.invoke(app, ["signatures", "flag", unit_id, "--reason", "promised a refund", "--by", "li"])
    assert flagged.exit_code == 0, flagged.output
    inbox = runner.invoke(app, ["signatures", "severe", "--json"])
    assert inbox.exit_code == 0, inbox.output
    item = next(i for i in json.loads(inbox.output) if i["unit_id"] == unit_id)
    person = [f for f in item["flags"] if f["source"] == "person"]  # the unit may carry a rule's flag too
    assert person == [{**person[0], "source": "person", "reason": "promised a refund", "flagged_by": "li"}]
    missing = runner.invoke(app, ["signatures", "flag", "no/such/unit", "--reason", "x"])
    assert missing.exit_code == 2 and "unit not found" in missing.output
