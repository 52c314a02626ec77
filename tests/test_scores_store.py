"""The one write path of runs, scores and lineage (``assay._store.scores``) on SQLite and PostgreSQL:
idempotent batch writes, lineage round trips, versioned stored records that older rows still read."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from assay import Lineage
from assay._store import Store
from assay._store.scores import (
    INSERT_CHUNK,
    NewScore,
    RunParams,
    add_scores,
    get_run,
    new_run,
    read_params,
    run_scores,
    write_scores,
)
from assay._store.tables import EvaluatorRow, RunRow, ScoreRow, UnitRow
from assay.calibration import CalibrationReport, agreement, metrics_with_ci
from assay.calibration.calibrate import evaluator_record, read_calibration, save_evaluator_record
from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, content_version
from assay.evaluators.lineage import lineage_for, new_score, write_results
from assay.exceptions import NotFoundError
from assay.suite.gate import GateParams
from tests.test_store_backends import _postgres

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"
N_UNITS = INSERT_CHUNK + 200  # more than one INSERT statement's worth
CHECK = EvaluatorDef.model_validate({
    "name": "no-tool-errors", "kind": "code", "dimension": "tool_use",
    "criterion": {"name": "no-tool-errors", "text": "Tools succeed."},
    "code": {"callable": "assay.evaluators.checks:no_tool_errors"}})
VERSION = content_version(CHECK)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store with N_UNITS bare units, on SQLite and on PostgreSQL (skipped without a server)."""
    server = _postgres(tmp_path) if request.param == "postgresql" else None
    store = Store(next(server) if server else f"sqlite:///{tmp_path / 'assay.db'}")
    with store.session() as s:
        s.add_all(UnitRow(unit_id=f"u{i:05d}", kind="trace", source="test") for i in range(N_UNITS))
    yield store
    store.close()
    if server:
        server.close()  # drops the test database


def results(n: int, start: int = 0) -> list[EvaluationResult | EvaluatorFailure]:
    """``n`` results of CHECK: every seventh unit an error, the rest scored."""
    out: list[EvaluationResult | EvaluatorFailure] = []
    for i in range(start, start + n):
        if i % 7 == 0:
            out.append(EvaluatorFailure(evaluator=CHECK.name, evaluator_version=VERSION, unit_id=f"u{i:05d}",
                                        status="error", error=f"check raised on {i}"))
        else:
            out.append(EvaluationResult(evaluator=CHECK.name, evaluator_version=VERSION, unit_id=f"u{i:05d}",
                                        score=float(i % 2), verdict="pass" if i % 2 else "fail", reason=f"r{i}"))
    return out


def count(store: Store, run_id: str) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(ScoreRow).where(ScoreRow.run_id == run_id)) or 0


def test_a_batch_is_written_once_with_its_lineage(store: Store) -> None:
    run_id = new_run(store, "backfill", RunParams())
    lineage = lineage_for(CHECK, run_id, "backfill", dataset_version=4, judge_model=None)
    batch = results(N_UNITS)
    assert write_results(store, lineage, batch) == N_UNITS
    assert write_results(store, lineage, batch) == 0  # a retried batch writes nothing
    assert write_results(store, lineage, results(300, start=N_UNITS - 100)[:100]) == 0
    assert count(store, run_id) == N_UNITS
    rows = {r.unit_id: r for r in run_scores(store, run_id)}
    error, scored = rows["u00007"], rows["u00009"]
    assert (error.status, error.score, error.verdict, error.reason) == ("error", None, None, "check raised on 7")
    assert (scored.status, scored.score, scored.verdict, scored.reason) == ("scored", 1.0, "pass", "r9")
    assert {(r.evaluator_name, r.evaluator_version, r.dataset_version, r.judge_model) for r in rows.values()} == {
        (CHECK.name, VERSION, 4, None)}
    assert read_params(get_run(store, run_id), RunParams).lineage == {lineage.key: lineage}


def test_add_scores_returns_the_new_ids_and_skips_what_is_there(store: Store) -> None:
    run_id = new_run(store, "online", RunParams())
    lineage = lineage_for(CHECK, run_id, "online", None, None, sample_rate=0.1)
    first = [new_score(r) for r in results(10)]
    with store.session() as s:
        ids = add_scores(s, lineage, first)
    assert sorted(ids) == [f"u{i:05d}" for i in range(10)]
    with store.session() as s:
        again = add_scores(s, lineage, [new_score(r) for r in results(15)])
        assert sorted(again) == [f"u{i:05d}" for i in range(10, 15)]
        assert {s.get(ScoreRow, sid).unit_id for sid in again.values()} == set(again)  # type: ignore[union-attr]


def test_a_bad_batch_writes_nothing(store: Store) -> None:
    run_id = new_run(store, "gate", GateParams(units="all"))
    lineage = lineage_for(CHECK, run_id, "gate", None, None)
    other = NewScore(unit_id="u00001", evaluator="other", evaluator_version="0" * 12, judge_model=None,
                     status="scored", score=1.0, verdict="pass", reason="", raw=None)
    with pytest.raises(ValueError, match="other@"):
        write_scores(store, lineage, [*map(new_score, results(3)), other])
    with pytest.raises(ValueError, match="run kind"):
        write_results(store, lineage.model_copy(update={"run_kind": "online"}), results(3))
    with pytest.raises(NotFoundError):
        write_results(store, lineage.model_copy(update={"run_id": "gate-nope"}), results(3))
    assert count(store, run_id) == 0


def test_lineage_round_trips_and_keeps_the_kinds_own_parameters(store: Store) -> None:
    params = GateParams(units="failed", baseline="passed", repeat=3, alpha=0.01, pair_by="unit",
                        evaluators={CHECK.name: VERSION})
    run_id = new_run(store, "gate", params)
    judged = Lineage(evaluator="helpful", evaluator_version="a" * 12, judge_model="gpt-x",
                     judge_parameters={"provider": "openai", "temperature": 0.0, "max_prompt_chars": 6000},
                     dataset_version=2, run_id=run_id, run_kind="gate")
    code = lineage_for(CHECK, run_id, "gate", None, None)
    write_results(store, judged, [EvaluationResult(evaluator="helpful", evaluator_version="a" * 12, unit_id="u00001",
                                                   judge_model="gpt-x", score=1.0, verdict="pass")])
    write_results(store, code, results(2))
    got = read_params(get_run(store, run_id), GateParams)
    assert got.lineage == {judged.key: judged, code.key: code}
    assert got.model_dump(exclude={"lineage"}) == params.model_dump(exclude={"lineage"})
    stored = get_run(store, run_id).params
    assert stored["version"] == 1 and stored["lineage"][judged.key]["version"] == 1
    # a later write with changed lineage of the same version (recalibrated) replaces it
    recalibrated = judged.model_copy(update={"dataset_version": 3})
    assert write_results(store, recalibrated, [EvaluationResult(
        evaluator="helpful", evaluator_version="a" * 12, unit_id="u00002", judge_model="gpt-x", score=0.0,
        verdict="fail")]) == 1
    assert read_params(get_run(store, run_id), GateParams).lineage[judged.key].dataset_version == 3


def test_rows_written_before_records_had_versions_still_read(store: Store) -> None:
    old_lineage = {"evaluator": "e", "evaluator_version": "b" * 12, "judge_model": None, "judge_parameters": {},
                   "dataset_version": 3, "sample_rate": 0.5}  # an online run's lineage before it was versioned
    with store.session() as s:
        s.add(RunRow(run_id="online-old", kind="online", params={"worker": {"host": "h", "pid": 1},
                     "audit_share": 0.02, "evaluators": {"e": "b" * 12}, "lineage": {f"e@{'b' * 12}": old_lineage}}))
        s.add(RunRow(run_id="gate-old", kind="gate", params={"units": "all", "baseline": None, "baseline_run": None,
                                                             "repeat": 1, "alpha": 0.05, "pair_by": "auto",
                                                             "evaluators": {}}))
    lin = read_params(get_run(store, "online-old"), RunParams).lineage[f"e@{'b' * 12}"]
    assert (lin.version, lin.run_id, lin.run_kind, lin.dataset_version, lin.sample_rate) == (
        1, "online-old", "online", 3, 0.5)
    gate = read_params(get_run(store, "gate-old"), GateParams)
    assert (gate.version, gate.role, gate.units, gate.alpha, gate.lineage) == (1, "candidate", "all", 0.05, {})


def _report(dataset_version: int) -> CalibrationReport:
    human, judge = ["pass"] * 6 + ["fail"] * 4, ["pass"] * 5 + ["fail"] * 5
    return CalibrationReport(evaluator=CHECK.name, evaluator_version=VERSION, judge_model=None,
                             dataset_version=dataset_version, dataset_balance={"pass": 6, "fail": 4}, n_labelled=10,
                             n_unscored=0, n_errors=0, agreement=agreement(human, judge), threshold=0.8,
                             min_kappa=0.0, meets_threshold=True, status="active", run_id="calibration-1",
                             test=metrics_with_ci(human, judge, n_boot=20))


def test_an_old_unversioned_calibration_report_still_reads(store: Store) -> None:
    report = _report(dataset_version=5)
    # as the first release stored it: no version, none of the fields added since (splits, CIs, ceiling)
    first_release = report.model_dump(mode="json", include={
        "evaluator", "evaluator_version", "judge_model", "dataset_version", "dataset_balance", "n_labelled",
        "n_unscored", "n_errors", "agreement", "threshold", "min_kappa", "meets_threshold", "notes", "status",
        "run_id", "override_reason"})
    assert "version" not in first_release
    with store.session() as s:
        s.add(EvaluatorRow(name=CHECK.name, version=VERSION, kind="code", definition=CHECK.model_dump(mode="json"),
                           status="active", calibration=first_release))
    rec = evaluator_record(store, CHECK)
    assert rec is not None and rec.calibration is not None
    assert (rec.status, rec.dataset_version, rec.calibration.version, rec.calibration.test) == ("active", 5, 1, None)
    assert rec.calibration.agreement == report.agreement
    # written now: versioned, and read back whole
    save_evaluator_record(store, CHECK, "active", report)
    rec = evaluator_record(store, CHECK)
    assert rec is not None and rec.calibration == report
    with store.session() as s:
        assert s.get(EvaluatorRow, (CHECK.name, VERSION)).calibration["version"] == 1  # type: ignore[union-attr]
    save_evaluator_record(store, CHECK, "draft", None)
    rec = evaluator_record(store, CHECK)
    assert rec is not None and (rec.status, rec.calibration, rec.dataset_version) == ("draft", None, None)
    with pytest.raises(ValidationError):
        read_calibration({"dataset_version": 3})  # not a report: an error, never a silent "uncalibrated"


def _imports(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    return names


def test_the_writer_sits_below_calibration_and_suite() -> None:
    assert not {n for n in _imports(SRC / "calibration") if n == "assay.suite" or n.startswith("assay.suite.")}
    above = {"evaluators", "models", "annotations", "signatures", "calibration", "suite", "reports", "_web", "_cli"}
    assert not {n for n in _imports(SRC / "_store") if n.startswith("assay.") and n.split(".")[1] in above}
