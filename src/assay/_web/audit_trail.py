"""The app's record of who did what: every action of the loop pages (draft, calibrate, activate or force,
export a dataset, add a user or a key, run the worker, ingest a file, assign reviewers, release a
reservation, add units to a queue) appends one record: who, when, what, on which target, with details.

A local stand-in with the signature of the app's general audit log (``record_audit(store, who, action,
target, details)``), written to its own table (``ui_audit``) until that log lands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import UiAuditRow


class AuditRecord(BaseModel):
    """One action: who did it, when (UTC), what (``action``, e.g. ``evaluator.force``), to what (``target``,
    e.g. ``evaluator:refunds-judge``) and the details (versions, reasons, counts)."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: datetime
    who: str
    action: str
    target: str
    details: dict[str, Any]


def record_audit(store: Store, who: str, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Append one audit record (never a secret in ``details``: no password, no API key)."""
    with store.session() as s:
        s.add(UiAuditRow(who=who, action=action, target=target[:300], details=details or {}))


def audit_records(store: Store, target: str | None = None, limit: int = 200) -> list[AuditRecord]:
    """The newest ``limit`` records, newest first; only those of one target when given."""
    q = select(UiAuditRow).order_by(UiAuditRow.id.desc()).limit(limit)
    if target is not None:
        q = q.where(UiAuditRow.target == target)
    with store.session() as s:
        return [AuditRecord(id=r.id, at=r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC), who=r.who,
                            action=r.action, target=r.target, details=r.details or {})
                for r in s.scalars(q)]
