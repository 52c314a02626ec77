"""Usage per unit in the store: ``units.usage`` holds each unit's :class:`~assay.traces.usage.UnitUsage`
(without configured prices, which are applied when read, so a changed price needs no recompute).

Batch ingest (``Store.add_units``) computes it with the unit; live ingestion (``add_spans``, log records)
marks it stale (None) instead of reading every span of a growing session on each batch, and
:func:`unit_usages` computes what is missing when it is read, and stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Text, cast, select

from assay._store.tables import SpanRow, UnitRow
from assay.traces.model import Span
from assay.traces.usage import Price, UnitUsage, unit_usage

if TYPE_CHECKING:
    from assay._store.store import Store

_CHUNK = 500


def unit_usages(store: Store, unit_ids: Sequence[str], prices: Mapping[str, Price] | None = None
                ) -> dict[str, UnitUsage]:
    """The usage of each stored unit (unknown ids are left out), priced by ``prices`` (model -> price).

    Units whose usage is not stored yet (stored before usage existed, or grown by live ingestion) get it
    computed from their spans and written back.
    """
    out: dict[str, UnitUsage] = {}
    ids = list(dict.fromkeys(unit_ids))
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        with store.session() as s:
            rows = s.execute(select(UnitRow.unit_id, UnitRow.usage).where(UnitRow.unit_id.in_(chunk))).all()
            for uid, data in rows:
                out[uid] = UnitUsage.model_validate(data) if data else _compute(s, uid)
    return {u: v.priced(prices) for u, v in out.items()} if prices else out


def _compute(s: object, unit_id: str) -> UnitUsage:
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    texts = s.scalars(select(cast(SpanRow.data, Text)).where(SpanRow.unit_id == unit_id)).all()
    usage = unit_usage(Span.model_validate_json(t) for t in texts)
    row = s.get(UnitRow, unit_id)
    if row is not None:
        row.usage = usage.model_dump(mode="json")
    return usage
