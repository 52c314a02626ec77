"""Failure signals in the store: write a batch (idempotent on the signal's content key), list them by
unit, kind or source, count them, and each unit's failure score.

Rows live in the ``failure_signals`` table, append-only (:mod:`assay._store.signal_rows` is the one
write path; it also defines *failed* in SQL). A detector's signal that a re-detection no longer finds
is marked retracted and stops counting; listings leave retracted signals out unless asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.signal_rows import insert_signals
from assay._store.tables import SignalRow
from assay.signals.model import FailureSignal
from assay.signals.score import FailureAssessment, assess


def write_signals(s: OrmSession, signals: Iterable[FailureSignal]) -> int:
    """:func:`add_signals` in the open transaction ``s`` (so a label and its signal commit together)."""
    return len(insert_signals(s, [sig.model_dump() for sig in signals]))


def add_signals(store: Store, signals: Iterable[FailureSignal]) -> int:
    """Write signals; a signal whose key (:attr:`FailureSignal.key`) is stored already is skipped.

    Returns:
        the number of signals written.

    Raises:
        sqlalchemy.exc.IntegrityError: a signal names a unit that is not stored.
    """
    with store.session() as s:
        return write_signals(s, signals)


def signal_of(row: SignalRow) -> FailureSignal:
    """The record of a stored row."""
    return FailureSignal.model_validate({"unit_id": row.unit_id, "source": row.source, "kind": row.kind,
                                         "strength": row.strength, "evidence": row.evidence, "step": row.step,
                                         "time_ns": row.time_ns, "lineage": row.lineage})


def list_signals(store: Store, unit_id: str | None = None, kind: str | None = None, source: str | None = None,
                 include_retracted: bool = False, limit: int | None = None) -> list[FailureSignal]:
    """Stored signals, by unit id, then step (whole-unit signals first), then time.

    Args:
        unit_id, kind, source: keep only these (None: any).
        include_retracted: also detector signals a later detection no longer found.
        limit: at most this many.
    """
    q = select(SignalRow)
    for col, value in ((SignalRow.unit_id, unit_id), (SignalRow.kind, kind), (SignalRow.source, source)):
        if value is not None:
            q = q.where(col == value)
    if not include_retracted:
        q = q.where(SignalRow.retracted_at.is_(None))
    q = q.order_by(SignalRow.unit_id, SignalRow.step.is_not(None), SignalRow.step, SignalRow.time_ns, SignalRow.id)
    with store.session() as s:
        return [signal_of(r) for r in s.scalars(q.limit(limit) if limit else q)]


def unit_signals(store: Store, unit_ids: Sequence[str]) -> dict[str, list[FailureSignal]]:
    """The (not retracted) signals of each of ``unit_ids``; units without any map to an empty list."""
    out: dict[str, list[FailureSignal]] = {u: [] for u in unit_ids}
    with store.session() as s:
        for i in range(0, len(unit_ids), 500):
            q = (select(SignalRow).where(SignalRow.unit_id.in_(unit_ids[i:i + 500]), SignalRow.retracted_at.is_(None))
                 .order_by(SignalRow.step.is_not(None), SignalRow.step, SignalRow.time_ns, SignalRow.id))
            for row in s.scalars(q):
                out[row.unit_id].append(signal_of(row))
    return out


def failure_scores(store: Store, unit_ids: Sequence[str]) -> dict[str, FailureAssessment]:
    """Each unit's failure score, failed flag and ambiguity (:func:`assay.signals.assess`, with the
    store's ``[signals]`` settings) from its stored signals; a unit without signals scores 0.

    A unit never run through the detectors still counts as failed in :meth:`Store.select_unit_ids` when
    its source recorded a failure; its assessment here has only the signals it has.
    """
    return {u: assess(u, sigs, store.signals) for u, sigs in unit_signals(store, unit_ids).items()}


class SignalCount(BaseModel):
    """How many (not retracted) signals of one source and kind the store holds, on how many units."""

    model_config = ConfigDict(frozen=True)

    source: str
    kind: str
    signals: int = Field(ge=0)
    units: int = Field(ge=0)


def signal_counts(store: Store) -> list[SignalCount]:
    """Signals per source and kind, most frequent first."""
    q = (select(SignalRow.source, SignalRow.kind, func.count(), func.count(SignalRow.unit_id.distinct()))
         .where(SignalRow.retracted_at.is_(None)).group_by(SignalRow.source, SignalRow.kind))
    with store.session() as s:
        rows = [SignalCount(source=a, kind=b, signals=c, units=d) for a, b, c, d in s.execute(q)]
    return sorted(rows, key=lambda r: (-r.signals, r.source, r.kind))

