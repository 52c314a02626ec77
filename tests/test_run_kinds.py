"""Run kinds named once: ``assay score`` writes ``backfill`` runs (older ``score`` runs are migrated), drift and
the report read backfills by default, and ``assay drift``'s human output carries every caveat its JSON carries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from assay._cli.main import app as cli
from assay._store import Store
from assay._store.migrate import _config, current_revision, head_revision, upgrade
from assay._store.scores import RunParams, get_run, new_run, read_params
from assay._web.app import create_app
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.settings import Settings
from assay.settings.run_kinds import RunKind, run_kind
from tests.test_environments import send
from tests.test_online import NAME, make_workspace, otlp_trace


def _cli(ws: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--workspace", str(ws), *args])


def test_kinds_are_named_once_and_score_reads_as_backfill(tmp_path: Path) -> None:
    assert run_kind("score") is RunKind.BACKFILL and run_kind("online") is RunKind.ONLINE
    with pytest.raises(ValueError, match="unknown run kind 'scoring'"):
        run_kind("scoring")
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    assert get_run(store, new_run(store, "score", RunParams())).kind == "backfill"
    settings = Settings.model_validate({"drift": {"run_kinds": "online,score"},
                                        "signals": {"evaluator": {"run_kinds": ["gate", "score"]}}})
    assert settings.drift.run_kinds == ["online", "backfill"]
    assert settings.signals.evaluator.run_kinds == ("gate", "backfill")
    assert Settings().drift.run_kinds == ["online", "backfill"]


def test_the_migration_renames_score_runs_and_their_lineage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = _config(conn)
        command.upgrade(cfg, "0007_signals")
        lineage = {"no-tool-errors@abc": {"version": 1, "evaluator": "no-tool-errors", "evaluator_version": "abc",
                                          "run_id": "score-1", "run_kind": "score"}}
        conn.execute(text("INSERT INTO runs (run_id, kind, params, summary, started_at) VALUES "
                          "('score-1', 'score', :p, '{}', '2026-01-01'), ('online-1', 'online', '{}', '{}', "
                          "'2026-01-01')"), {"p": json.dumps({"version": 1, "lineage": lineage})})
    assert current_revision(engine) == "0007_signals"
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    store = Store(url)
    row = get_run(store, "score-1")
    assert row.kind == "backfill" and get_run(store, "online-1").kind == "online"
    assert read_params(row, RunParams).lineage["no-tool-errors@abc"].run_kind == "backfill"
    engine.dispose()


def _workspace_with_backfill(tmp_path: Path) -> tuple[Settings, Store]:
    """Production traces (a third fail a tool call), 4 evaluation traces, the code evaluator active and
    calibrated; `assay score` backfills every unit; two people labelled two units (not an audit sample)."""
    settings, store, defn = make_workspace(tmp_path, rate=0.0)
    app = create_app(settings, store)
    for i in range(24):
        send(app, otlp_trace(f"prod-{i}", error=i % 3 == 0), {"deployment.environment.name": "production"})
    for i in range(4):
        send(app, otlp_trace(f"eval-{i}", error=True), {"deployment.environment.name": "evaluation"})
    result = _cli(tmp_path, "score", "--evaluator", NAME, "--units", "all", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    assert run_id.startswith("backfill-") and get_run(store, run_id).kind == "backfill"
    add_criterion(store, defn.criterion.text, name=defn.criterion.name)
    units = store.select_unit_ids("env:production")
    add_annotations(store, [Annotation(unit_id=units[0], annotator="ann", label="pass", criterion=defn.criterion.name),
                            Annotation(unit_id=units[1], annotator="ann", label="fail", criterion=defn.criterion.name)])
    return settings, store


def test_drift_includes_a_backfill_of_production_only(tmp_path: Path) -> None:
    settings, store = _workspace_with_backfill(tmp_path)
    result = _cli(tmp_path, "drift", "--json")
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    (ev,) = report["evaluators"]
    assert report["run_kinds"] == ["online", "backfill"] and report["environment"] == "production"
    assert sum(w["n_scored"] for w in ev["windows"]) == 24  # the backfill counts; evaluation runs do not
    failing = sum(w["n_scored"] - w["n_pass"] for w in ev["windows"])
    assert failing == 8
    every = json.loads(_cli(tmp_path, "drift", "--json", "--env", "all").stdout)
    assert sum(w["n_scored"] for w in every["evaluators"][0]["windows"]) == 28
    assert json.loads(_cli(tmp_path, "drift", "--json", "--env", "evaluation").stdout)["evaluators"][0][
        "windows"][0]["n_pass"] == 0


def _notes(data: Any) -> list[str]:
    """Every non-empty ``note`` string anywhere in the drift JSON."""
    if isinstance(data, dict):
        return [n for k, v in data.items() for n in ([v] if k == "note" and v else _notes(v))]
    if isinstance(data, list):
        return [n for v in data for n in _notes(v)]
    return []


def test_the_human_drift_output_carries_every_caveat_of_the_json(tmp_path: Path) -> None:
    _workspace_with_backfill(tmp_path)
    data = json.loads(_cli(tmp_path, "drift", "--json").stdout)
    ppi = data["evaluators"][0]["estimates"]["ppi"]
    assert ppi["value"] is not None and ppi["n_labelled"] == 2
    assert "not a random audit sample" in ppi["note"] and "only 2 human labels" in ppi["note"]
    human = _cli(tmp_path, "drift")
    assert human.exit_code == data["exit_code"]
    flat = re.sub(r"\s+", " ", human.stdout)
    notes = _notes(data)
    assert notes and all(part.strip() in flat for note in notes for part in note.split(";")), (notes, flat)
    assert "agreement is measured on every human label" in flat  # audit_source all_labels, in words
