"""Runs, scores and their lineage: the one write path, below calibration and suite.

A **run** (``runs`` table) is one job that writes scores: a calibration, a gate and its
baseline, a backfill (``assay score``), an online worker; its kind is one of
:class:`~assay.settings.run_kinds.RunKind`, named once there. Its parameters (``runs.params``) are
a typed, versioned :class:`RunParams` stored as JSON; each kind of run extends it with its own
fields (``GateParams`` in :mod:`assay.suite.gate`, ...) and :func:`read_params` is the one way to
read them back. Among them, ``lineage``: for every evaluator version that wrote scores into the
run, its :class:`Lineage` (evaluator name and version, judge model and parameters, ground-truth
dataset version, run id and kind).

A **score** (``scores`` table) is one evaluator's result on one unit, keyed (run id, unit id,
evaluator version). :func:`add_scores` writes a batch with its lineage: the lineage is recorded
on the run, then the rows go in with ``INSERT ... ON CONFLICT DO NOTHING`` on that key (SQLite,
PostgreSQL; multi-row statements of up to :data:`INSERT_CHUNK` scores), so a retried batch (a
Ray task that ran twice, a resumed ``assay score --run-id ID``) never writes a second score.
Every writer (gate, online worker, backfill, calibration, Ray executor) goes through it.

Stored JSON written before records had a ``version`` reads as version 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from assay._store.signal_rows import add_evaluator_fails
from assay._store.store import Store
from assay._store.tables import RunRow, ScoreRow, utcnow
from assay.exceptions import NotFoundError
from assay.settings.run_kinds import RENAMED, RunKind, run_kind

ScoreStatus = Literal["scored", "unscored", "error", "not_applicable"]
ParseStatus = Literal["ok", "repaired", "failed"]
"""How the verdict was read: ``ok`` as given (a judge reply that is valid JSON, a code check's value),
``repaired`` (a judge reply that needed repair: a code fence, comments, raw newlines, trailing text; see
:mod:`assay.evaluators.verdict`), ``failed`` (no verdict could be read: no reply, or none in it)."""
INSERT_CHUNK = 1000
"""Score rows per multi-row INSERT statement (12 bound values each: within SQLite's and PostgreSQL's limits)."""


class Lineage(BaseModel):
    """Where the scores of one evaluator version in one run came from: no score without lineage.

    Stored as JSON in the run's parameters (``runs.params["lineage"]["NAME@VERSION"]``); each score
    row also carries evaluator name and version, judge model, dataset version and run id.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = Field(default=1, description="schema version of this record")
    evaluator: str = Field(description="evaluator name")
    evaluator_version: str = Field(description="content version of the evaluator definition (12 hex)")
    judge_model: str | None = Field(default=None, description="the judge model that scored; None for code checks")
    judge_parameters: dict[str, JsonValue] = Field(
        default_factory=dict, description="what else shaped the judge's replies: provider, generation parameters, "
                                          "prompt budget (empty for code checks)")
    dataset_version: int | None = Field(
        default=None, description="the ground-truth dataset version the evaluator was calibrated on (None: never)")
    run_id: str = Field(description="the run the scores belong to")
    run_kind: str = Field(description="its kind (RunKind): calibration, gate, gate-baseline, backfill, online, "
                                      "import")
    sample_rate: float | None = Field(default=None, description="share of production units sampled (online runs)")

    @field_validator("run_kind", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        """An older kind name (``score``, before ``backfill``) reads as the new one."""
        return RENAMED[value].value if isinstance(value, str) and value in RENAMED else value

    @property
    def key(self) -> str:
        """``NAME@VERSION``: the key of this lineage among the run's."""
        return f"{self.evaluator}@{self.evaluator_version}"


class RunParams(BaseModel):
    """What a run was asked to do, stored as JSON in ``runs.params``.

    The base of every run kind's parameters. Read as the base, a run keeps its kind's own
    fields as extras (so recording lineage never drops them); each kind's subclass ignores
    keys it no longer knows, so older rows still read.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    version: Literal[1] = Field(default=1, description="schema version of this record")
    lineage: dict[str, Lineage] = Field(default_factory=dict,
                                        description="NAME@VERSION -> lineage of each evaluator version that scored")


P = TypeVar("P", bound=RunParams)


class NewScore(NamedTuple):
    """One score row to write (its run, dataset version and judge parameters come from the batch's lineage).

    ``status`` is ``scored`` (``score`` in [0, 1] and ``verdict`` set) or the failure's status
    (``score`` and ``verdict`` None); ``reason`` is the judge's reason, the check's message or the error;
    ``parse_status`` how the verdict was read (:data:`ParseStatus`).
    """

    unit_id: str
    evaluator: str
    evaluator_version: str
    judge_model: str | None
    status: ScoreStatus
    score: float | None
    verdict: str | None
    reason: str
    raw: str | None
    parse_status: ParseStatus = "ok"


# --- runs ---------------------------------------------------------------------------------------
def read_params(row: RunRow, model: type[P]) -> P:
    """A run's parameters as ``model`` (:class:`RunParams`, or its kind's subclass): the one reader of
    ``runs.params``.

    Lineage entries written before they carried run id and kind (online runs) take them from the row.

    Raises:
        pydantic.ValidationError: the stored JSON does not fit ``model``.
    """
    data = dict(row.params or {})
    data["lineage"] = {key: {"run_id": row.run_id, "run_kind": row.kind, **entry}
                       for key, entry in (data.get("lineage") or {}).items()}
    return model.model_validate(data)


def new_run(store: Store, kind: RunKind | str, params: RunParams, run_id: str | None = None) -> str:
    """Create a run record; returns its id (``run_id``, default ``KIND-<12 hex>``).

    Raises:
        ValueError: ``kind`` is not a :class:`RunKind` (an older name such as ``score`` is stored as its new one).
    """
    kind = run_kind(kind)
    run_id = run_id or f"{kind}-{uuid.uuid4().hex[:12]}"
    with store.session() as s:
        s.add(RunRow(run_id=run_id, kind=kind.value, params=params.model_dump(mode="json")))
    return run_id


def ensure_run(store: Store, run_id: str | None, kind: RunKind | str, params: RunParams) -> str:
    """The run to write into: a new one (``run_id`` None), or ``run_id`` (created with that id when missing).

    Raises:
        ValueError: ``kind`` is not a :class:`RunKind`.
    """
    kind = run_kind(kind)
    if run_id is None:
        return new_run(store, kind, params)
    with store.session() as s:
        if s.get(RunRow, run_id) is None:
            s.add(RunRow(run_id=run_id, kind=kind.value, params=params.model_dump(mode="json")))
    return run_id


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


def finish_run(store: Store, run_id: str, summary: dict[str, Any]) -> None:
    """Store a run's summary (JSON-ready) and finish time.

    Raises:
        NotFoundError: no such run.
    """
    with store.session() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise NotFoundError("run", run_id)
        row.summary, row.finished_at = summary, utcnow()


def _record_lineage(s: OrmSession, lineage: Lineage) -> None:
    """Put ``lineage`` among its run's (the latest one of an evaluator version wins: a sample rate or
    calibration can change while an online worker runs)."""
    row = s.get(RunRow, lineage.run_id)
    if row is None:
        raise NotFoundError("run", lineage.run_id)
    if row.kind != lineage.run_kind:
        raise ValueError(f"lineage names run kind {lineage.run_kind!r}, run {row.run_id} is {row.kind!r}")
    params = read_params(row, RunParams)
    if params.lineage.get(lineage.key) != lineage:
        updated = params.model_copy(update={"lineage": {**params.lineage, lineage.key: lineage}})
        row.params = updated.model_dump(mode="json")


# --- scores -------------------------------------------------------------------------------------
def _values(lineage: Lineage, sc: NewScore, created_at: datetime) -> dict[str, Any]:
    if (sc.evaluator, sc.evaluator_version) != (lineage.evaluator, lineage.evaluator_version):
        raise ValueError(f"a score of {sc.evaluator}@{sc.evaluator_version} in a batch of {lineage.key}")
    return {"created_at": created_at, "run_id": lineage.run_id, "unit_id": sc.unit_id, "evaluator_name": sc.evaluator,
            "evaluator_version": sc.evaluator_version, "judge_model": sc.judge_model,
            "dataset_version": lineage.dataset_version, "status": sc.status, "score": sc.score,
            "verdict": sc.verdict, "reason": sc.reason, "raw": sc.raw, "parse_status": sc.parse_status}


def stored_time(at: datetime | None) -> datetime:
    """``at`` in UTC, timezone-aware (a naive ``at`` is taken as UTC); None: the wall clock now."""
    if at is None:
        return utcnow()
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def add_scores(s: OrmSession, lineage: Lineage, scores: Sequence[NewScore],
               at: datetime | None = None) -> dict[str, int]:
    """Write a batch of one evaluator version's scores, with its lineage, in the open transaction ``s``.

    Rows whose (run id, unit id, evaluator version) is already stored are skipped:
    ``INSERT ... ON CONFLICT DO NOTHING ... RETURNING`` on SQLite and PostgreSQL, sent as multi-row
    INSERTs of up to :data:`INSERT_CHUNK` rows; other databases check first in the same transaction.
    Every failed score written (verdict ``fail``) of an active evaluator in a gate, online or backfill
    run also becomes a failure signal, in the same transaction
    (:func:`assay._store.signal_rows.add_evaluator_fails`): the loop back from scores to signatures.

    Args:
        at: when the scores were made (the scores' ``created_at`` and their signals' time), default the wall
            clock; a replay of past traffic (``assay demo``) passes the time of the day it replays. A naive
            datetime is taken as UTC.

    Returns:
        ``{unit id: score id}`` of the rows inserted (empty when a previous attempt wrote them all).

    Raises:
        NotFoundError: the lineage's run does not exist.
        ValueError: a score of another evaluator version than the lineage's, or a run of another kind.
    """
    _record_lineage(s, lineage)
    created_at = stored_time(at)
    rows = [_values(lineage, sc, created_at) for sc in scores]
    if not rows:
        return {}
    inserted = _insert(s, lineage, rows)
    fails = [(sc.unit_id, sc.reason) for sc in scores
             if sc.status == "scored" and sc.verdict == "fail" and sc.unit_id in inserted]
    add_evaluator_fails(s, lineage.evaluator, lineage.evaluator_version, lineage.run_id, lineage.run_kind, fails,
                        at=created_at)
    return inserted


def _insert(s: OrmSession, lineage: Lineage, rows: list[dict[str, Any]]) -> dict[str, int]:
    dialect = s.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return _add_checked(s, lineage, rows)
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (insert(ScoreRow).on_conflict_do_nothing(index_elements=["run_id", "unit_id", "evaluator_version"])
            .returning(ScoreRow.unit_id, ScoreRow.id))
    # executemany with RETURNING: SQLAlchemy sends multi-row INSERTs of up to INSERT_CHUNK rows ("insertmanyvalues")
    return {unit: sid for unit, sid in s.execute(stmt, rows, execution_options={"insertmanyvalues_page_size":
                                                                               INSERT_CHUNK})}


def _add_checked(s: OrmSession, lineage: Lineage, rows: list[dict[str, Any]]) -> dict[str, int]:
    have = set(s.scalars(select(ScoreRow.unit_id).where(
        ScoreRow.run_id == lineage.run_id, ScoreRow.evaluator_version == lineage.evaluator_version,
        ScoreRow.unit_id.in_([r["unit_id"] for r in rows]))))
    fresh = [ScoreRow(**r) for r in rows if r["unit_id"] not in have]
    s.add_all(fresh)
    s.flush()
    return {r.unit_id: r.id for r in fresh}


def write_scores(store: Store, lineage: Lineage, scores: Sequence[NewScore], at: datetime | None = None) -> int:
    """:func:`add_scores` (made at ``at``, default now) in a transaction of its own; returns the number of rows
    inserted.

    Raises:
        NotFoundError, ValueError: as :func:`add_scores`.
    """
    if not scores:
        return 0
    with store.session() as s:
        return len(add_scores(s, lineage, scores, at))


def run_scores(store: Store, run_id: str) -> list[ScoreRow]:
    """All score rows of a run, in write order."""
    with store.session() as s:
        return list(s.scalars(select(ScoreRow).where(ScoreRow.run_id == run_id).order_by(ScoreRow.id)))
