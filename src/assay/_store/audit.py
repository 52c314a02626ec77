"""The audit record: who did what, when, from where; append-only (a record is never edited or deleted).

One general table (``audit_log``, :class:`~assay._store.tables.AuditRow`) for every action worth an
answer to "who did that?": sign-ins and their failures (the annotation app's login), and admin actions
(criteria written, edited or shared; queue settings; evaluators activated; users and keys added).

``action`` is a dotted verb, noun first (``signin.ok``, ``signin.failed``, ``signin.throttled``,
``criterion.create``, ``criterion.edit``, ``criterion.cover``, ``queue.settings``); ``target`` names what it
acted on (an account name, ``criterion:12``, ``signature:3``); ``details`` is a small JSON object (what
changed, the reason given); ``client`` the client address of a web request (None elsewhere).

Write with :func:`record_audit` (its own transaction) or :func:`add_audit` (inside the caller's, so the
action and its record commit together); read with :func:`list_audit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from assay._store.store import Store
from assay._store.tables import AuditRow, utcnow

__all__ = ["AuditEntry", "add_audit", "list_audit", "record_audit"]

_LIMITS = {"who": 200, "action": 60, "target": 300, "client": 100}


class AuditEntry(BaseModel):
    """One audit record as read back (``at`` in UTC)."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: datetime
    who: str = Field(description="the account (or, for a failed sign-in, the name given)")
    action: str = Field(description="dotted verb, e.g. signin.failed, criterion.edit")
    target: str = Field(description="what it acted on, e.g. an account name or criterion:12")
    client: str | None = Field(description="client address of the web request; None outside the app")
    details: dict[str, JsonValue] = Field(default_factory=dict)


def _cut(value: str, field: str) -> str:
    return value[:_LIMITS[field]]


def add_audit(s: Session, who: str, action: str, target: str = "", details: Mapping[str, JsonValue] | None = None,
              client: str | None = None, at: datetime | None = None) -> AuditRow:
    """Add one audit record to the open transaction ``s`` (committed with it). Over-long fields are cut to
    their column's size (who 200, action 60, target 300, client 100 characters); ``at`` defaults to now."""
    row = AuditRow(who=_cut(who, "who"), action=_cut(action, "action"), target=_cut(target, "target"),
                   client=_cut(client, "client") if client is not None else None, details=dict(details or {}),
                   at=at or utcnow())
    s.add(row)
    return row


def record_audit(store: Store, who: str, action: str, target: str = "",
                 details: Mapping[str, JsonValue] | None = None, client: str | None = None,
                 at: datetime | None = None) -> int:
    """Append one audit record in its own transaction; returns its id.

    Args:
        store: the store.
        who: the account that acted (for a failed sign-in: the name given).
        action: dotted verb, e.g. ``criterion.edit`` (see the module docstring).
        target: what it acted on, e.g. ``criterion:12``.
        details: a small JSON object (what changed, a reason).
        client: the client address of a web request.
        at: when (default: now, UTC).
    """
    with store.session() as s:
        row = add_audit(s, who, action, target, details, client, at)
        s.flush()
        return row.id


def _entry(row: AuditRow) -> AuditEntry:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)  # SQLite returns naive UTC
    return AuditEntry(id=row.id, at=at, who=row.who, action=row.action, target=row.target, client=row.client,
                      details=row.details or {})


def list_audit(store: Store, actions: tuple[str, ...] = (), target: str | None = None, client: str | None = None,
               since: datetime | None = None, limit: int = 1000) -> list[AuditEntry]:
    """Audit records, newest first, optionally only some actions, one target or client, or since a time.

    Args:
        limit: at most this many (the newest).
    """
    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if actions:
        q = q.where(AuditRow.action.in_(actions))
    if target is not None:
        q = q.where(AuditRow.target == _cut(target, "target"))
    if client is not None:
        q = q.where(AuditRow.client == _cut(client, "client"))
    if since is not None:
        q = q.where(AuditRow.at >= since)
    with store.session() as s:
        return [_entry(r) for r in s.scalars(q)]
