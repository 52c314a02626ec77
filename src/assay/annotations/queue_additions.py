"""Units added to a signature's review queue beside its representative sample, each with where it came from.

Origins (:data:`ORIGINS`): ``search`` (a search and filter over units, ``detail`` its query string),
``signature`` (members of another signature), ``evaluator`` (units an evaluator failed), ``contrast-neighbour``
(a unit of a neighbouring signature) and ``contrast-passing`` (a unit that did not fail), the last two being the
*contrast items* that give a criterion's calibration set both classes (:mod:`assay.annotations.queue_tools`).
The review queue (:func:`assay.annotations.queue.queue_status`) lists them after its sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select

from assay._store import Store
from assay._store.tables import QueueAdditionRow, SignatureRow, UnitRow
from assay.exceptions import NotFoundError

Origin = Literal["search", "signature", "evaluator", "contrast-neighbour", "contrast-passing"]
ORIGINS: tuple[Origin, ...] = ("search", "signature", "evaluator", "contrast-neighbour", "contrast-passing")


class QueueAddition(BaseModel):
    """One unit added to a queue: where from (``origin``, ``detail``), by whom, when."""

    model_config = ConfigDict(frozen=True)

    signature_id: int
    unit_id: str
    origin: Origin
    detail: str = ""
    added_by: str = ""
    added_at: datetime | None = None


def add_to_queue(store: Store, signature_id: int, unit_ids: Sequence[str], origin: Origin, detail: str = "",
                 added_by: str = "") -> int:
    """Add units to a signature's queue (units already added are left as they are). Returns how many were new.

    Raises:
        NotFoundError: no such signature, or a unit that does not exist.
    """
    with store.session() as s:
        if s.get(SignatureRow, signature_id) is None:
            raise NotFoundError("signature", str(signature_id))
        have = set(s.scalars(select(QueueAdditionRow.unit_id).where(QueueAdditionRow.signature_id == signature_id)))
        new = [u for u in dict.fromkeys(unit_ids) if u not in have]
        known = {u for i in range(0, len(new), 500)
                 for u in s.scalars(select(UnitRow.unit_id).where(UnitRow.unit_id.in_(new[i:i + 500])))}
        missing = [u for u in new if u not in known]
        if missing:
            raise NotFoundError("unit", missing[0])
        s.add_all([QueueAdditionRow(signature_id=signature_id, unit_id=u, origin=origin, detail=detail[:2000],
                                    added_by=added_by) for u in new])
    return len(new)


def queue_additions(store: Store, signature_id: int) -> list[QueueAddition]:
    """The units added to a queue, first added first."""
    with store.session() as s:
        rows = s.scalars(select(QueueAdditionRow).where(QueueAdditionRow.signature_id == signature_id)
                         .order_by(QueueAdditionRow.id))
        return [QueueAddition(signature_id=r.signature_id, unit_id=r.unit_id, origin=r.origin,
                              detail=r.detail, added_by=r.added_by, added_at=r.added_at) for r in rows]


def remove_from_queue(store: Store, signature_id: int, unit_id: str) -> bool:
    """Take an added unit out of a queue (its labels stay); True when it was there."""
    with store.session() as s:
        gone = s.execute(delete(QueueAdditionRow).where(QueueAdditionRow.signature_id == signature_id,
                                                        QueueAdditionRow.unit_id == unit_id))
        return bool(getattr(gone, "rowcount", 0))
