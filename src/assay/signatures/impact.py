"""Impact of a failure signature: units x severity weight x recency.

Each member unit ``u`` counts ``weight(severity(u)) * 0.5 ** (age(u) / half_life)``:

- ``severity(u)``: 1 (minor) .. 4 (critical). From annotations once they exist (the latest
  human annotation of the unit with a severity, else the latest of any annotator kind);
  before that from the error kind (:func:`default_severity`: an exception or crash 3, any
  other failure 2).
- ``weight``: :data:`SEVERITY_WEIGHT`, doubling per level, 1.0 at the default severity 2,
  so an unannotated unit of the newest batch counts 1.
- ``age(u)``: days between the unit's time (:func:`unit_time`) and the newest failed unit
  in the store (not the wall clock, so a store's ranking does not drift while it sits);
  ``half_life`` defaults to :data:`RECENCY_HALF_LIFE_DAYS`.

A signature's impact is the sum over its members, i.e. size x mean weight x mean recency
when they are independent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from assay._store import Store
from assay._store.tables import AnnotationRow
from assay.signatures.keys import ErrorKind
from assay.traces.model import Unit

SEVERITY_WEIGHT: dict[int, float] = {1: 0.5, 2: 1.0, 3: 2.0, 4: 4.0}
"""Weight of a severity level (1 minor .. 4 critical) in impact."""

ERROR_KIND_SEVERITY: dict[ErrorKind, int] = {"exception": 3, "tool_error": 2, "no_error": 2}
"""Default severity of a failed unit, by how it failed, before anyone annotated it."""

RECENCY_HALF_LIFE_DAYS = 14.0
"""Age (days before the newest failed unit) at which a unit counts half."""


def default_severity(kind: ErrorKind) -> int:
    """The severity of a failed unit from its error kind (:data:`ERROR_KIND_SEVERITY`)."""
    return ERROR_KIND_SEVERITY[kind]


def aware(value: datetime | None) -> datetime | None:
    """The datetime with UTC attached when naive (SQLite returns naive datetimes)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def unit_time(unit: Unit, ingested_at: datetime | None) -> datetime | None:
    """When a unit happened: the latest end of its spans with real timestamps (UTC), else
    ``ingested_at`` (formats without timestamps, e.g. tau-bench, number their steps instead)."""
    ends = [s.end_ns or s.start_ns for s in unit.spans if not s.synthetic_time and (s.end_ns or s.start_ns)]
    if ends:
        return datetime.fromtimestamp(max(ends) / 1e9, tz=UTC)
    return aware(ingested_at)


def recency(seen: datetime | None, newest: datetime | None, half_life_days: float = RECENCY_HALF_LIFE_DAYS) -> float:
    """``0.5 ** (age / half_life)`` with age in days from ``seen`` to ``newest`` (1.0 when either
    is unknown or ``seen`` is newer)."""
    if seen is None or newest is None:
        return 1.0
    age_days = max(0.0, (aware(newest) - aware(seen)).total_seconds() / 86400.0)  # type: ignore[operator]
    return float(0.5 ** (age_days / half_life_days))


def annotated_severity(store: Store, unit_ids: set[str] | None = None) -> dict[str, int]:
    """``{unit id: severity}`` from annotations: per unit, the latest human annotation with a
    severity, else the latest annotation of any kind with one. Units without are left out."""
    with store.session() as s:
        rows = list(s.execute(select(AnnotationRow.unit_id, AnnotationRow.annotator_kind, AnnotationRow.severity)
                              .where(AnnotationRow.severity.is_not(None))
                              .order_by(AnnotationRow.created_at, AnnotationRow.id)))
    best: dict[str, tuple[bool, int]] = {}
    for unit_id, kind, severity in rows:
        if severity is None or (unit_ids is not None and unit_id not in unit_ids):
            continue
        human = kind == "human"
        if human or not best.get(unit_id, (False, 0))[0]:
            best[unit_id] = (human, int(severity))
    return {u: sev for u, (_, sev) in best.items()}


def unit_weight(severity: int | None, seen: datetime | None, newest: datetime | None,
                half_life_days: float = RECENCY_HALF_LIFE_DAYS) -> float:
    """One unit's contribution to impact: ``SEVERITY_WEIGHT[severity] * recency`` (severity
    None counts as 2, clipped to 1..4)."""
    level = min(4, max(1, severity if severity is not None else 2))
    return SEVERITY_WEIGHT[level] * recency(seen, newest, half_life_days)
