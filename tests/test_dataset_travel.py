"""Ground-truth datasets that travel: calibrate in store A, export, import into an empty store B (SQLite and
PostgreSQL), calibrate there: the identical report and dataset version. Import is idempotent, checks the file
whole before writing, and refuses what would not rebuild the same dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from assay._cli.main import app as cli
from assay._store import Store
from assay._store.scores import get_run, read_params
from assay._store.tables import AnnotationRow, DatasetRow, UnitRow
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.calibration import (
    CalibrationReport,
    build_dataset,
    calibrate,
    export_dataset_file,
    import_dataset_file,
    read_dataset_file,
)
from assay.calibration.splits import CalibrationParams
from assay.evaluators import EvaluatorDef
from assay.exceptions import UsageError
from assay.settings import JudgeSettings
from assay.traces import read_file
from assay.traces.environment import Environment, with_environment
from tests.conftest import AIRLINE
from tests.test_store_backends import _postgres

CRITERION = "tool-calls-valid"
CHECK = EvaluatorDef.model_validate({
    "name": "no-tool-errors", "kind": "code", "dimension": "tool use", "threshold": 0.8,
    "criterion": {"name": CRITERION, "version": 2, "text": "Every tool call is valid and succeeds."},
    "code": {"callable": "assay.evaluators.checks:no_tool_errors"}})


def _tool_error(run: dict[str, Any]) -> bool:
    return any(m["role"] == "tool" and str(m["content"]).startswith("Error") for m in run["traj"])


@pytest.fixture(params=["sqlite", "postgresql"])
def url_b(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b' / 'assay.db'}"
    else:
        yield from _postgres(tmp_path)


@pytest.fixture
def store_a(tmp_path: Path) -> Iterator[Store]:
    """The shared store: 30 airline runs (half of them named production, release 1.4), a criterion edited once
    (v2), labels by two people (one stale under v1), an llm annotation, a correction."""
    store = Store(f"sqlite:///{tmp_path / 'a' / '.assay' / 'assay.db'}")
    runs = {r["task_id"]: r for r in json.loads(AIRLINE.read_text()) if r["trial"] == 0}
    units = [u for u in read_file(AIRLINE).units if u.unit_id.endswith("/trial-0")][:30]
    store.add_units([with_environment(u, Environment("production", "1.4")) if i % 2 else u
                     for i, u in enumerate(units)])
    add_criterion(store, "Every tool call is valid.", name=CRITERION)
    add_annotations(store, [Annotation(unit_id=units[0].unit_id, annotator="ann-1", label="pass",
                                       criterion=CRITERION)])  # made under v1: stale
    add_criterion(store, CHECK.criterion.text, name=CRITERION)
    labels = []
    for i, u in enumerate(units):
        failed = _tool_error(runs[int(u.unit_id.split("task-")[1].split("/")[0])])
        labels.append(Annotation(unit_id=u.unit_id, annotator="ann-1", label="fail" if failed else "pass",
                                 criterion=CRITERION, severity=2 if failed else None, rationale=f"run {i}"))
        if i % 3 == 0:  # a second person, who disagrees now and then
            flip = i % 9 == 0
            labels.append(Annotation(unit_id=u.unit_id, annotator="ann-2", criterion=CRITERION,
                                     label=("pass" if failed else "fail") if flip else ("fail" if failed else "pass")))
    labels.append(Annotation(unit_id=units[1].unit_id, annotator="gpt", annotator_kind="llm", label="fail",
                             criterion=CRITERION))
    add_annotations(store, labels)
    add_annotations(store, [labels[2].model_copy(update={"rationale": "corrected"})])  # a later record wins
    yield store
    store.close()


def _same(report: CalibrationReport) -> dict[str, Any]:
    return report.model_dump(mode="json", exclude={"run_id"})


def test_export_import_round_trip_reproduces_calibration_exactly(store_a: Store, url_b: str, tmp_path: Path) -> None:
    report_a = calibrate(store_a, CHECK, None, JudgeSettings())
    path = tmp_path / "repo" / "datasets" / f"{CRITERION}.jsonl"
    manifest = export_dataset_file(store_a, CRITERION, path)
    assert manifest.dataset_version == report_a.dataset_version and manifest.criterion_version == 2
    assert manifest.counts == {"criterion": 1, "unit": 30, "label": len(_labels(store_a))}
    first = path.read_bytes()
    export_dataset_file(store_a, CRITERION, path)
    assert path.read_bytes() == first  # the same content writes the same bytes (a clean git diff)

    store_b = Store(url_b)
    try:
        done = import_dataset_file(store_b, path)
        assert (done.units_new, done.labels_new, done.dataset_created) == (30, manifest.counts["label"], True)
        again = import_dataset_file(store_b, path)
        assert (again.units_new, again.labels_new, again.dataset_created) == (0, 0, False)  # idempotent
        assert _labels(store_b) == _labels(store_a)  # annotators, criterion versions, times: as made
        assert _units(store_b) == _units(store_a)  # same ids, content hashes, environments, releases

        report_b = calibrate(store_b, CHECK, None, JudgeSettings())
        assert _same(report_b) == _same(report_a)  # agreement, kappa, CIs, split, human ceiling, version
        assert report_b.dataset_version == report_a.dataset_version and report_b.human_ceiling is not None
        params = read_params(get_run(store_b, report_b.run_id), CalibrationParams)
        assert (params.dataset_version, params.dataset_hash) == (manifest.dataset_version, manifest.content_hash)
        # versions are a sequence in each store: the next dataset here follows the imported one
        add_criterion(store_b, "Answers are polite.", name="polite")
        add_annotations(store_b, [Annotation(unit_id=_units(store_b)[0][0], annotator="x", label="pass",
                                             criterion="polite")])
        assert build_dataset(store_b, "polite").version == manifest.dataset_version + 1
    finally:
        store_b.close()


def _labels(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as s:
        return [(r.unit_id, r.annotator, r.annotator_kind, r.label, r.severity, r.rationale, r.criterion_version,
                 r.source, r.created_at.replace(tzinfo=None)) for r in s.scalars(select(AnnotationRow)
                                                                               .order_by(AnnotationRow.id))]


def _units(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as s:
        return [(r.unit_id, r.kind, r.source, r.outcome, r.content_hash, r.env, r.release)
                for r in s.scalars(select(UnitRow).order_by(UnitRow.unit_id))]


def test_a_changed_file_or_a_conflicting_store_is_refused_before_anything_is_written(store_a: Store,
                                                                                   tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    m = export_dataset_file(store_a, CRITERION, path)
    lines = path.read_text().splitlines()
    label = next(i for i, line in enumerate(lines) if '"record":"label"' in line)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines[:label] + [lines[label].replace('"pass"', '"fail"', 1)] + lines[label + 1:]))
    fresh = Store(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(UsageError, match="label lines do not match the manifest"):
        import_dataset_file(fresh, edited)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-1]))
    with pytest.raises(UsageError, match="edited or cut"):
        import_dataset_file(fresh, cut)
    add_criterion(fresh, "Something else.", name=CRITERION)  # the same name, another text
    with pytest.raises(UsageError, match="would not mean the same"):
        import_dataset_file(fresh, path)
    with fresh.session() as s:
        assert s.scalar(select(func.count()).select_from(UnitRow)) == 0  # nothing was written
    other = Store(f"sqlite:///{tmp_path / 'd.db'}")
    import_dataset_file(other, path)
    lone = [x for x in _labels(other) if x[1] == "ann-1" and x[6] == 2][4]  # a unit only ann-1 labelled
    add_annotations(other, [Annotation(unit_id=lone[0], annotator="ann-3", label="pass" if lone[3] == "fail" else
                                       "fail", criterion=CRITERION)])
    other_ds = build_dataset(other, CRITERION)  # other labels make another dataset version here (a tie now)
    assert other_ds.version == m.dataset_version + 1
    with pytest.raises(UsageError, match="would not rebuild dataset version 1"):
        import_dataset_file(other, path)  # a store with other labels on the criterion
    taken = Store(f"sqlite:///{tmp_path / 'e.db'}")
    taken.add_units(store_a.units([_units(store_a)[0][0]]))
    add_criterion(taken, "Answers are polite.", name="polite")
    add_annotations(taken, [Annotation(unit_id=_units(store_a)[0][0], annotator="x", label="pass",
                                       criterion="polite")])
    assert build_dataset(taken, "polite").version == 1
    with pytest.raises(UsageError, match="version 1 is another dataset in this store"):
        import_dataset_file(taken, path)
    assert _labels(taken)[-1][1] == "x" and len(_labels(taken)) == 1  # nothing of the file was written
    with pytest.raises(UsageError, match="not a dataset record|first line must be the manifest"):
        (tmp_path / "junk.jsonl").write_text('{"record": "label"}\n')
        read_dataset_file(tmp_path / "junk.jsonl")


def test_the_cli_exports_to_datasets_and_imports(store_a: Store, tmp_path: Path) -> None:
    ws_a, ws_b = tmp_path / "a", tmp_path / "b"
    ws_b.mkdir()
    store_a.close()
    result = CliRunner().invoke(cli, ["--workspace", str(ws_a), "dataset", "export", CRITERION])
    assert result.exit_code == 0, result.output
    path = ws_a / "datasets" / f"{CRITERION}.jsonl"
    assert "dataset version 1" in result.stdout and path.is_file()
    result = CliRunner().invoke(cli, ["--workspace", str(ws_b), "dataset", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["dataset_version"] == 1
    listed = CliRunner().invoke(cli, ["--workspace", str(ws_b), "dataset", "list", "--json"])
    assert [(d["version"], d["criterion"]) for d in json.loads(listed.stdout)] == [(1, CRITERION)]
    bad = CliRunner().invoke(cli, ["--workspace", str(ws_b), "dataset", "import", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 2 and "no such file" in bad.output
    with Store(f"sqlite:///{ws_b / '.assay' / 'assay.db'}").session() as s:
        assert s.scalar(select(func.count()).select_from(DatasetRow)) == 1
