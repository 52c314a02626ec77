"""Runs and scores with lineage: every score records evaluator version, judge model,
ground-truth dataset version and run id."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select

from assay._store import Store
from assay._store.tables import EvaluatorRow, RunRow, ScoreRow, utcnow
from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, content_version, evaluate_many
from assay.exceptions import NotFoundError
from assay.models import JudgeClient
from assay.settings import JudgeSettings

Result = EvaluationResult | EvaluatorFailure


def new_run(store: Store, kind: str, params: dict[str, Any]) -> str:
    """Create a run record; returns its id (``kind-<12 hex>``)."""
    run_id = f"{kind}-{uuid.uuid4().hex[:12]}"
    with store.session() as s:
        s.add(RunRow(run_id=run_id, kind=kind, params=params))
    return run_id


def finish_run(store: Store, run_id: str, summary: dict[str, Any]) -> None:
    """Store a run's summary and finish time."""
    with store.session() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise NotFoundError("run", run_id)
        row.summary, row.finished_at = summary, utcnow()


def get_run(store: Store, run_id: str) -> RunRow:
    """Load a run record.

    Raises:
        NotFoundError: no such run.
    """
    with store.session() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise NotFoundError("run", run_id)
        return row


def record_scores(store: Store, run_id: str, results: Sequence[Result], dataset_version: int | None) -> None:
    """Write results as score rows (unscored and errors too, with their raw reply)."""
    with store.session() as s:
        for r in results:
            ok = isinstance(r, EvaluationResult)
            s.add(ScoreRow(
                run_id=run_id, unit_id=r.unit_id, evaluator_name=r.evaluator, evaluator_version=r.evaluator_version,
                judge_model=r.judge_model, dataset_version=dataset_version,
                status="scored" if ok else r.status,  # type: ignore[union-attr]
                score=r.score if ok else None, verdict=r.verdict if ok else None,  # type: ignore[union-attr]
                reason=r.reason if ok else r.error, raw=r.raw))  # type: ignore[union-attr]


def evaluator_record(store: Store, defn: EvaluatorDef) -> EvaluatorRow | None:
    """The stored record (status, calibration) of this exact evaluator version, if any."""
    with store.session() as s:
        return s.get(EvaluatorRow, (defn.name, content_version(defn)))


def save_evaluator_record(store: Store, defn: EvaluatorDef, status: str, calibration: dict[str, Any],
                          override_reason: str | None = None) -> None:
    """Create or update the record of this evaluator version."""
    version = content_version(defn)
    with store.session() as s:
        row = s.get(EvaluatorRow, (defn.name, version))
        if row is None:
            row = EvaluatorRow(name=defn.name, version=version, kind=defn.kind,
                               definition=defn.model_dump(mode="json"))
            s.add(row)
        row.status, row.calibration, row.override_reason = status, calibration, override_reason


def score_units(store: Store, defn: EvaluatorDef, unit_ids: list[str], judge: JudgeClient | None,
                judge_settings: JudgeSettings, progress: Callable[[int], None] | None = None) -> list[Result]:
    """Run one evaluator over stored units; one failure never stops the batch."""
    units = store.units(unit_ids)
    return list(evaluate_many(defn, units, judge, judge_settings, progress=progress))


def run_scores(store: Store, run_id: str) -> list[ScoreRow]:
    """All score rows of a run."""
    with store.session() as s:
        return list(s.scalars(select(ScoreRow).where(ScoreRow.run_id == run_id).order_by(ScoreRow.id)))
