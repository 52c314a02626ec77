"""What people running a review queue need beside the queue itself: reviewers assigned to it, its live
reservations (and releasing one), and **contrast items**.

Contrast items: a criterion is calibrated on the labels of its signature's queue, whose units all failed the
same way, so the labels are nearly all ``fail`` and an evaluator's agreement cannot be measured on ``pass``. A
queue therefore takes, beside its sample, units of the :data:`NEIGHBOURS` nearest signatures (failures of
another kind: the criterion may hold or not) and units that did not fail (the criterion should hold), as
the reviewers of the seed example did ("the target cluster and three nearby clusters"). Nearest is by the
cosine distance between the signatures' centroids (the same embedding model), else by how many fields of
their structural keys agree; passing units of the members' sources come first, the rest in a seeded order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select

from assay._store import Store
from assay._store.tables import AccountRow, QueueClaimRow, QueueReviewerRow, SignatureRow, UnitRow
from assay.annotations.queue import CLAIM_LEASE
from assay.annotations.queue_additions import Origin, add_to_queue
from assay.exceptions import NotFoundError, UsageError
from assay.signatures import list_signatures, sample_queue, signature_members
from assay.signatures.embeddings import vector_from_bytes

NEIGHBOURS = 3
"""Signatures a queue's contrast items come from."""


# --- reviewers -------------------------------------------------------------------------------------
def queue_reviewers(store: Store, signature_id: int) -> list[str]:
    """The people assigned to a queue, by name (empty: anyone may review it)."""
    with store.session() as s:
        return list(s.scalars(select(QueueReviewerRow.annotator).where(QueueReviewerRow.signature_id == signature_id)
                              .order_by(QueueReviewerRow.annotator)))


def all_reviewers(store: Store) -> dict[int, list[str]]:
    """``{signature id: its assigned reviewers}`` for every queue that has some."""
    out: dict[int, list[str]] = {}
    with store.session() as s:
        for sid, name in s.execute(select(QueueReviewerRow.signature_id, QueueReviewerRow.annotator)
                                   .order_by(QueueReviewerRow.annotator)):
            out.setdefault(sid, []).append(name)
    return out


def assign_reviewers(store: Store, signature_id: int, annotators: Sequence[str], by: str = "") -> list[str]:
    """Make ``annotators`` the queue's reviewers (replacing the earlier ones; none: anyone). Returns them, sorted.

    Raises:
        NotFoundError: no such signature, or no account with one of the names.
    """
    names = sorted(set(annotators))
    with store.session() as s:
        if s.get(SignatureRow, signature_id) is None:
            raise NotFoundError("signature", str(signature_id))
        for name in names:
            if s.get(AccountRow, name) is None:
                raise NotFoundError("user", name)
        s.execute(delete(QueueReviewerRow).where(QueueReviewerRow.signature_id == signature_id))
        s.add_all([QueueReviewerRow(signature_id=signature_id, annotator=n, assigned_by=by) for n in names])
    return names


# --- reservations ------------------------------------------------------------------------------------
class Reservation(BaseModel):
    """An item handed to an annotator and not yet labelled (a claim), live until ``expires_at`` (UTC)."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    annotator: str
    claimed_at: datetime
    expires_at: datetime


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def reservations(store: Store, signature_id: int, lease: timedelta = CLAIM_LEASE) -> list[Reservation]:
    """The queue's live reservations, oldest first."""
    now = datetime.now(UTC)
    with store.session() as s:
        rows = s.execute(select(QueueClaimRow.unit_id, QueueClaimRow.annotator, QueueClaimRow.claimed_at)
                         .where(QueueClaimRow.signature_id == signature_id).order_by(QueueClaimRow.claimed_at))
        live = [(u, a, _aware(t)) for u, a, t in rows if _aware(t) + lease > now]
    return [Reservation(unit_id=u, annotator=a, claimed_at=t, expires_at=t + lease) for u, a, t in live]


def release(store: Store, signature_id: int, unit_id: str, annotator: str) -> bool:
    """Drop one reservation, so the item goes to someone else; True when there was one."""
    with store.session() as s:
        gone = s.execute(delete(QueueClaimRow).where(QueueClaimRow.signature_id == signature_id,
                                                     QueueClaimRow.unit_id == unit_id,
                                                     QueueClaimRow.annotator == annotator))
        return bool(getattr(gone, "rowcount", 0))


# --- contrast items ---------------------------------------------------------------------------------------
def _key_fields(key: str) -> set[str]:
    return {part.strip() for part in key.split("|") if part.strip() and not part.strip().endswith("=*")}


def neighbour_signatures(store: Store, signature_id: int, k: int = NEIGHBOURS) -> list[int]:
    """The ``k`` live signatures nearest to one (see the module docstring), nearest first.

    Raises:
        NotFoundError: no such signature.
    """
    with store.session() as s:
        rows = {r.id: r for r in s.scalars(select(SignatureRow).where(SignatureRow.status != "retired"))}
    me = rows.get(signature_id)
    if me is None:
        raise NotFoundError("signature", str(signature_id))
    ranked = {sig.id: n for n, sig in enumerate(list_signatures(store))}  # impact order breaks ties

    def distance(r: SignatureRow) -> tuple[float, float, int]:
        cosine = 2.0
        if me.centroid and r.centroid and r.embedding_model == me.embedding_model:
            a, b = vector_from_bytes(me.centroid), vector_from_bytes(r.centroid)
            cosine = 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
        shared = len(_key_fields(me.structural_key) & _key_fields(r.structural_key))
        return cosine, -shared, ranked.get(r.id, len(ranked))

    others = sorted((r for sid, r in rows.items() if sid != signature_id), key=distance)
    return [r.id for r in others[:k]]


def passing_units(store: Store, signature_id: int, n: int, seed: int = 0) -> list[str]:
    """``n`` units that did not fail (the ``passed`` selection), those of the signature's sources first, in a
    seeded order."""
    members = signature_members(store, signature_id)
    with store.session() as s:
        sources = set(s.scalars(select(UnitRow.source).where(UnitRow.unit_id.in_(members[:500]))))
        source_of = {u: src for u, src in s.execute(select(UnitRow.unit_id, UnitRow.source))}
    member_set = set(members)
    passed = [u for u in store.select_unit_ids("passed") if u not in member_set]
    random.Random(f"{seed}:contrast:{signature_id}").shuffle(passed)
    passed.sort(key=lambda u: source_of.get(u) not in sources)  # stable: the seeded order within each group
    return passed[:n]


def contrast_items(store: Store, signature_id: int, neighbours: int, passing: int, size: int = 10,
                   seed: int = 0) -> list[tuple[str, Origin, str]]:
    """``(unit id, origin, detail)`` of up to ``neighbours`` units of the nearest signatures (their review samples
    in turn) and up to ``passing`` passing units, none of them already a member of the signature.

    Raises:
        UsageError: a negative count. NotFoundError: no such signature.
    """
    if neighbours < 0 or passing < 0:
        raise UsageError(f"contrast counts must be >= 0, got {neighbours} and {passing}")
    members = set(signature_members(store, signature_id))
    queues = [(sid, sample_queue(store, sid, max(size, neighbours))) for sid in neighbour_signatures(store,
                                                                                                      signature_id)]
    picked: list[tuple[str, Origin, str]] = []
    for depth in range(max((len(q) for _, q in queues), default=0)):
        for sid, queue in queues:
            if len(picked) < neighbours and depth < len(queue) and queue[depth] not in members:
                picked.append((queue[depth], "contrast-neighbour", f"signature {sid}"))
    picked += [(u, "contrast-passing", "did not fail") for u in passing_units(store, signature_id, passing, seed)]
    return picked


def add_contrast_items(store: Store, signature_id: int, neighbours: int, passing: int, by: str = "") -> int:
    """Add :func:`contrast_items` to the queue; returns how many were new."""
    groups: dict[tuple[Origin, str], list[str]] = {}
    for unit_id, origin, detail in contrast_items(store, signature_id, neighbours, passing):
        groups.setdefault((origin, detail), []).append(unit_id)
    return sum(add_to_queue(store, signature_id, units, origin, detail, by)
               for (origin, detail), units in groups.items())
