"""Signals that come from the loop itself: every failed score of an active evaluator (gate, online,
backfill; never calibration, never a draft), human ``fail`` labels and a person's flag. Real SQLite store,
real gate and online worker, real code evaluators."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from assay._store import Store
from assay._store.scores import Lineage, NewScore, RunParams, new_run, write_scores
from assay._store.tables import RunRow
from assay.annotations import Annotation, add_annotations
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluatorDef, content_version, save_evaluator
from assay.settings import Settings
from assay.signals import list_signals, units_to_scan
from assay.signatures import flag_unit
from assay.suite import run_gate
from assay.traces import Step, Unit
from tests.test_online import NAME, _hex, ingest, make_workspace, otlp_trace, run_cli
from tests.test_signal_store import chat_unit

REFUND = "I have applied our default refund policy: no refund."


def follows_delay_policy(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """Fail when the agent applies the default refund policy to a shipping delay (the seed's example)."""
    text = " ".join(s.text for s in steps)
    if "delay" in text and "default refund policy" in text:
        step = next(s.index for s in steps if "default refund policy" in s.text)
        return 0.0, f"default refund policy applied to a shipping delay at step {step}"
    return 1.0, "no refund decision on a delay"


POLICY = EvaluatorDef.model_validate({
    "name": "delay-refunds", "kind": "code", "dimension": "policy",
    "criterion": {"name": "delay-refunds", "text": "A shipping delay gets the delay refund, not the default policy."},
    "code": {"callable": "tests.test_signal_sources:follows_delay_policy"}, "min_pass_rate": 0.0})


def support_units() -> list[Unit]:
    """Six conversations with no outcome and no error: three wrongly refused refunds."""
    units = []
    for i in range(6):
        unit = chat_unit(f"support/{i}", user=f"My parcel {i} arrived a week late, the delay ruined the gift.")
        if i % 2 == 0:
            span = unit.spans[0]
            out = span.output_messages[0].model_copy(update={"content": REFUND})
            unit = unit.model_copy(update={"spans": (span.model_copy(update={"output_messages": (out,)}),)})
        units.append(unit)
    return units


def _workspace(tmp_path: Path, status: str = "active") -> tuple[Settings, Store]:
    settings = Settings(workspace=tmp_path, store_url=f"sqlite:///{tmp_path / 'assay.db'}")
    store = Store(settings.resolved_store_url(), settings.signals)
    store.add_units(support_units())
    save_evaluator(POLICY, settings.evaluators_path() / "delay-refunds.yaml")
    save_evaluator_record(store, POLICY, status, None, override_reason="test")
    return settings, store


def test_a_failed_gate_score_is_a_signal(tmp_path: Path) -> None:
    settings, store = _workspace(tmp_path)
    assert store.select_unit_ids("failed") == []  # no outcome, no error: nothing says they failed
    report = run_gate(store, settings, None)
    signals = list_signals(store, kind="evaluator_fail")
    assert [s.unit_id for s in signals] == ["support/0", "support/2", "support/4"]
    version = content_version(POLICY)
    assert all(s.source == "evaluator" and s.strength == 0.6 and s.step is None for s in signals)
    assert all(s.lineage.model_dump() == {"type": "evaluator", "name": "delay-refunds", "version": version,
                                          "run_id": report.run_id} for s in signals)
    assert "default refund policy applied to a shipping delay at step 2" in signals[0].evidence
    assert store.select_unit_ids("failed") == ["support/0", "support/2", "support/4"]
    run_gate(store, settings, None)  # a second gate run: the same evaluator version's fail, no second signal
    assert len(list_signals(store, kind="evaluator_fail")) == 3


def test_drafts_and_calibration_runs_make_no_signal(tmp_path: Path) -> None:
    settings, store = _workspace(tmp_path, status="draft")
    version = content_version(POLICY)
    for kind in ("backfill", "calibration"):
        run = new_run(store, kind, RunParams())
        write_scores(store, Lineage(evaluator="delay-refunds", evaluator_version=version, run_id=run, run_kind=kind),
                     [NewScore("support/0", "delay-refunds", version, None, "scored", 0.0, "fail", "refused", None)])
    assert list_signals(store) == []  # a draft evaluator's fail is not evidence yet
    save_evaluator_record(store, POLICY, "active", None, override_reason="test")
    cal = new_run(store, "calibration", RunParams())
    write_scores(store, Lineage(evaluator="delay-refunds", evaluator_version=version, run_id=cal,
                                run_kind="calibration"),
                 [NewScore("support/2", "delay-refunds", version, None, "scored", 0.0, "fail", "refused", None)])
    assert list_signals(store) == []  # calibration scores the ground truth: no new evidence
    backfill = new_run(store, "backfill", RunParams())
    write_scores(store, Lineage(evaluator="delay-refunds", evaluator_version=version, run_id=backfill,
                                run_kind="backfill"),
                 [NewScore("support/4", "delay-refunds", version, None, "scored", 0.0, "fail", "refused", None),
                  NewScore("support/5", "delay-refunds", version, None, "error", None, None, "boom", None)])
    assert [(s.unit_id, s.evidence) for s in list_signals(store)] == [("support/4", "delay-refunds failed: refused")]


def test_a_failed_online_score_is_a_signal(tmp_path: Path) -> None:
    settings, store, defn = make_workspace(tmp_path, rate=1.0, audit_share=0.0)
    keys = [f"order-{i}" for i in range(6)]
    ingest(settings, store, [_trace_without_error_status(k, error=i % 2 == 0) for i, k in enumerate(keys)])
    result = run_cli(tmp_path, "worker", "--once", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    failed = sorted(f"trace/{_hex(k, 32)}" for i, k in enumerate(keys) if i % 2 == 0)
    signals = list_signals(store, kind="evaluator_fail")
    assert sorted(s.unit_id for s in signals) == failed
    assert {json.dumps(s.lineage.model_dump(), sort_keys=True) for s in signals} == {json.dumps(
        {"type": "evaluator", "name": NAME, "version": content_version(defn), "run_id": run_id}, sort_keys=True)}
    with store.session() as s:
        assert s.scalar(select(RunRow.kind).where(RunRow.run_id == run_id)) == "online"
    assert set(failed) <= set(store.select_unit_ids("failed"))


def _trace_without_error_status(key: str, error: bool) -> list[dict[str, object]]:
    """An OTLP trace whose tool result reads as an error but whose spans carry no error status."""
    spans = otlp_trace(key, error=error)
    for span in spans:
        span.pop("status", None)
    return spans


def test_human_fail_labels_and_person_flags_are_signals(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    store.add_units([chat_unit(f"u{i}") for i in range(4)])
    add_annotations(store, [
        Annotation(unit_id="u0", annotator="alice", label="fail", severity=3, rationale="refused a valid refund"),
        Annotation(unit_id="u1", annotator="alice", label="pass"),
        Annotation(unit_id="u2", annotator="judge", annotator_kind="llm", label="fail"),
    ])
    flag_unit(store, "u3", "leaked a card number", flagged_by="bob")
    flag_unit(store, "u3", "leaked a card number", flagged_by="bob")  # idempotent: one flag, one signal
    signals = list_signals(store)
    assert [(s.unit_id, s.kind, s.source, s.strength) for s in signals] == [
        ("u0", "human_fail", "label", 0.9), ("u3", "flag", "flag", 0.8)]
    assert signals[0].evidence == "labelled fail by alice, severity 3: refused a valid refund"
    assert signals[0].lineage.model_dump() == {"type": "annotator", "annotator": "alice"}
    assert signals[1].evidence == "flagged severe by bob: leaked a card number"
    assert store.select_unit_ids("failed") == ["u0", "u3"]


def test_evaluator_signals_follow_the_settings(tmp_path: Path) -> None:
    from assay.settings.signals import SignalSettings

    quiet = SignalSettings.model_validate({"evaluator": {"enabled": False}})
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}", quiet)
    store.add_units(support_units())
    save_evaluator_record(store, POLICY, "active", None, override_reason="test")
    version = content_version(POLICY)
    run = new_run(store, "gate", RunParams())
    write_scores(store, Lineage(evaluator="delay-refunds", evaluator_version=version, run_id=run, run_kind="gate"),
                 [NewScore("support/0", "delay-refunds", version, None, "scored", 0.0, "fail", "refused", None)])
    assert list_signals(store) == []


def test_the_worker_detects_signals_of_complete_units_only(tmp_path: Path) -> None:
    settings, store, _ = make_workspace(tmp_path, rate=0.0, audit_share=0.0)  # no unit sampled: signals only
    ingest(settings, store, [otlp_trace("done", error=True), otlp_trace("open", root=False, error=True)])
    done, waiting = f"trace/{_hex('done', 32)}", f"trace/{_hex('open', 32)}"
    assert set(store.select_unit_ids("failed")) == {done, waiting}  # error spans, before any scan
    result = run_cli(tmp_path, "worker", "--once", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signals_scanned"] == 1
    assert {s.kind for s in list_signals(store, unit_id=done)} == {"tool_error"}
    assert list_signals(store, unit_id=waiting) == []  # its root span has not arrived: not complete
    assert units_to_scan(store, settings.signals) == [waiting]
    assert set(store.select_unit_ids("failed")) == {waiting}  # one tool error (0.4) alone is below fail_at
