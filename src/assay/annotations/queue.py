"""Review queues: each signature's representative sample, K labels per item from different people.

An item is *done* when K different human annotators have labelled it (against the current
version of the signature's criterion, or before one existed); an annotator is never handed an item
they labelled already. Adjudications do not count toward K. A *stale* label (made under an older
version of the criterion) does not count: the item goes back to its annotator, who is handed it
again whatever the other labels (:func:`claim_next`). A queue is *blind* unless set otherwise
(:func:`set_queue`): the app shows an annotator no other label on an item until they saved theirs.

On a pairwise criterion an item is a pair of units that answer the same input: each unit of the
sample is paired with the nearest other member of the signature that has the same dataset item
(the first of the unit attributes :data:`ITEM_ATTRIBUTES`, as the gate pairs runs); a unit without
a partner is left out. The item is named by its first unit (claims, ``after``, links).

Units added by hand or in bulk (a search, another signature, failed scores, contrast items;
:mod:`assay.annotations.queue_additions`) follow the sample, each item saying where it came from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from assay._store import Store
from assay._store.tables import (
    AnnotationRow,
    CriterionRow,
    CriterionSignatureRow,
    QueueClaimRow,
    ReviewQueueRow,
    SignatureRow,
    UnitRow,
)
from assay.annotations.agreement import ADJUDICATION_SOURCE, is_stale
from assay.annotations.model import Annotation, Criterion
from assay.annotations.queue_additions import queue_additions
from assay.annotations.store import annotation_of, criterion_of
from assay.exceptions import NotFoundError, UsageError
from assay.signatures import sample_queue, signature_members

DEFAULT_SIZE = 10
DEFAULT_K = 2
CLAIM_LEASE = timedelta(minutes=30)
"""How long an item handed out stays reserved for its annotator without a label."""
ITEM_ATTRIBUTES = ("dataset_item_id", "item_id", "task_id")
"""Unit attributes naming the input a unit answered (pairwise items pair units with the same one)."""


class QueueItem(BaseModel):
    """One unit (or, on a pairwise criterion, one pair of units) of a review queue and who labelled it so far."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    second_unit_id: str | None = Field(None, description="pairwise: the unit the first is compared with")
    annotators: list[str] = Field(description="distinct human annotators with a current label, first label first")
    stale: list[str] = Field(default_factory=list,
                             description="annotators whose labels on it are all stale: it is theirs to redo")
    origin: str = Field("sample", description="sample (the signature's representative sample) or where an added "
                                              "unit came from (assay.annotations.queue_additions)")

    def done(self, k: int) -> bool:
        """True when K different people labelled it."""
        return len(self.annotators) >= k


class QueueStatus(BaseModel):
    """A signature's review queue: items in sample order, K, the criterion and progress."""

    model_config = ConfigDict(frozen=True)

    signature_id: int
    size: int
    k: int
    criterion: Criterion | None
    items: list[QueueItem]
    blind: bool = Field(True, description="blind review: no other label shown on an item until one saved one's own")

    @property
    def done(self) -> int:
        """Items with K labels."""
        return sum(item.done(self.k) for item in self.items)

    def per_annotator(self) -> dict[str, int]:
        """``{annotator: items labelled}``, most first."""
        counts: dict[str, int] = defaultdict(int)
        for item in self.items:
            for name in item.annotators:
                counts[name] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def stale_per_annotator(self) -> dict[str, int]:
        """``{annotator: items whose labels by them are all stale}`` (theirs to label again), most first."""
        counts: dict[str, int] = defaultdict(int)
        for item in self.items:
            for name in item.stale:
                counts[name] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def signature_criterion(store: Store, signature_id: int) -> Criterion | None:
    """The criterion written for a signature (the most recently created one), else the one that covers it
    (:func:`assay.annotations.criteria.cover_signature`), or None."""
    with store.session() as s:
        row = s.scalar(select(CriterionRow).where(CriterionRow.signature_id == signature_id)
                       .order_by(CriterionRow.id.desc()).limit(1))
        if row is None:
            row = s.scalar(select(CriterionRow)
                           .join(CriterionSignatureRow, CriterionSignatureRow.criterion_id == CriterionRow.id)
                           .where(CriterionSignatureRow.signature_id == signature_id)
                           .order_by(CriterionSignatureRow.added_at.desc()).limit(1))
        return None if row is None else criterion_of(row)


def set_queue(store: Store, signature_id: int, size: int = DEFAULT_SIZE, k: int = DEFAULT_K,
              blind: bool | None = None) -> None:
    """Set a signature's queue size, K (labels needed per item) and blind review (None: keep it; on for
    a new queue).

    Raises:
        UsageError: size or K below 1, or K above 10.
    """
    if size < 1 or not 1 <= k <= 10:
        raise UsageError(f"queue size must be >= 1 and K in 1..10, got size={size}, K={k}")
    with store.session() as s:
        row = s.get(ReviewQueueRow, signature_id)
        if row is None:
            s.add(ReviewQueueRow(signature_id=signature_id, size=size, k=k, blind=True if blind is None else blind))
        else:
            row.size, row.k = size, k
            if blind is not None:
                row.blind = blind


def queue_blind(store: Store, signature_id: int | None) -> bool:
    """Whether a queue is blind (True for a queue never set, and outside any queue: ``signature_id`` None)."""
    if signature_id is None:
        return True
    with store.session() as s:
        blind = s.scalar(select(ReviewQueueRow.blind).where(ReviewQueueRow.signature_id == signature_id))
    return True if blind is None else bool(blind)


def _counts_toward_k(a: Annotation, name: str | None) -> bool:
    return a.annotator_kind == "human" and a.source != ADJUDICATION_SOURCE and a.criterion in (None, name)


def _labellers(annotations: Sequence[Annotation], criterion: Criterion | None,
               pairs: dict[frozenset[str], str] | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``({item's first unit: annotators with a current label}, {item's first unit: annotators whose labels
    are all stale})``; ``pairs`` (pairwise): ``{the pair's two units: its first unit}``."""
    current: dict[str, list[str]] = defaultdict(list)
    stale: dict[str, list[str]] = defaultdict(list)
    name = criterion.name if criterion else None
    for a in annotations:
        if not _counts_toward_k(a, name):
            continue
        item = a.unit_id if pairs is None else pairs.get(frozenset((a.unit_id, a.second_unit_id or "")))
        if item is None:
            continue
        if criterion is not None and is_stale(a, criterion):
            if a.annotator not in stale[item]:
                stale[item].append(a.annotator)
        elif a.annotator not in current[item]:
            current[item].append(a.annotator)
    return current, {item: [n for n in names if n not in current[item]] for item, names in stale.items()}


def _item_keys(store: Store, unit_ids: Sequence[str]) -> dict[str, str]:
    """``{unit id: its dataset item}`` for the units that name one (:data:`ITEM_ATTRIBUTES`)."""
    with store.session() as s:
        rows = s.execute(select(UnitRow.unit_id, UnitRow.attributes).where(UnitRow.unit_id.in_(list(unit_ids))))
        keys = {uid: next((str(attrs[a]) for a in ITEM_ATTRIBUTES if (attrs or {}).get(a) is not None), None)
                for uid, attrs in rows}
    return {uid: key for uid, key in keys.items() if key is not None}


def pair_sample(store: Store, signature_id: int, sample: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs for a pairwise queue: each sampled unit with the nearest other member of the signature that
    answered the same dataset item (see the module docstring); each unit in one pair at most."""
    members = signature_members(store, signature_id)
    keys = _item_keys(store, members)
    used: set[str] = set()
    pairs = []
    for unit in sample:
        if unit in used or unit not in keys:
            continue
        partner = next((m for m in members if m != unit and m not in used and keys.get(m) == keys[unit]), None)
        if partner is not None:
            pairs.append((unit, partner))
            used.update((unit, partner))
    return pairs


def unit_annotations(store: Store, unit_ids: Sequence[str]) -> list[Annotation]:
    """The annotations of some units (any criterion), in insertion order."""
    with store.session() as s:
        q = (select(AnnotationRow, CriterionRow.name)
             .outerjoin(CriterionRow, AnnotationRow.criterion_id == CriterionRow.id)
             .where(AnnotationRow.unit_id.in_(list(unit_ids))).order_by(AnnotationRow.id))
        return [annotation_of(r, name) for r, name in s.execute(q)]


def queue_status(store: Store, signature_id: int) -> QueueStatus:
    """The review queue of one signature (see module docstring).

    Raises:
        NotFoundError: no such signature.
    """
    with store.session() as s:
        row = s.get(ReviewQueueRow, signature_id)
        size, k, blind = (row.size, row.k, row.blind) if row is not None else (DEFAULT_SIZE, DEFAULT_K, True)
    unit_ids = sample_queue(store, signature_id, size)
    sampled = set(unit_ids)
    origins = {a.unit_id: a.origin for a in queue_additions(store, signature_id) if a.unit_id not in sampled}
    unit_ids += list(origins)
    criterion = signature_criterion(store, signature_id)
    if criterion is not None and criterion.scale.kind == "pairwise":
        pairs = pair_sample(store, signature_id, unit_ids)
        current, stale = _labellers(unit_annotations(store, [u for pair in pairs for u in pair]), criterion,
                                    {frozenset(pair): pair[0] for pair in pairs})
        items = [QueueItem(unit_id=a, second_unit_id=b, annotators=current.get(a, []), stale=stale.get(a, []),
                           origin=origins.get(a, "sample")) for a, b in pairs]
    else:
        current, stale = _labellers(unit_annotations(store, unit_ids), criterion)
        items = [QueueItem(unit_id=u, annotators=current.get(u, []), stale=stale.get(u, []),
                           origin=origins.get(u, "sample")) for u in unit_ids]
    return QueueStatus(signature_id=signature_id, size=size, k=k, criterion=criterion, items=items,
                       blind=bool(blind))


def claim_next(store: Store, signature_id: int, annotator: str, after: str | None = None,
               lease: timedelta = CLAIM_LEASE) -> str | None:
    """Hand ``annotator`` their next item and reserve it for them (a claim, see :class:`QueueClaimRow`).

    An item is offered when the annotator has no current label on it and either their labels on it
    are stale (it comes back to them, whatever the others), or they hold a live claim on it already, or
    the people who labelled or claimed it number fewer than K. Claims are
    made one at a time per queue (the signature row is locked on PostgreSQL; on SQLite the
    transaction starts with a write, which serializes writers), so two annotators asking at
    the same moment never both get an item that needed only one more label.

    Args:
        store: the store.
        signature_id: the queue's signature.
        annotator: who asks.
        after: start looking after this unit (queue order, wrapping); None: from the start.
        lease: claims older than this are dropped.

    Returns:
        the unit id, or None when nothing is left for this annotator.

    Raises:
        NotFoundError: no such signature.
    """
    with store.session() as s:
        s.execute(delete(QueueClaimRow).where(QueueClaimRow.claimed_at < datetime.now(UTC) - lease))
        if s.scalar(select(SignatureRow.id).where(SignatureRow.id == signature_id).with_for_update()) is None:
            raise NotFoundError("signature", str(signature_id))
        status = queue_status(store, signature_id)
        claims: dict[str, set[str]] = defaultdict(set)
        for unit_id, who in s.execute(select(QueueClaimRow.unit_id, QueueClaimRow.annotator)
                                      .where(QueueClaimRow.signature_id == signature_id)):
            claims[unit_id].add(who)
        ids = [item.unit_id for item in status.items]
        start = ids.index(after) + 1 if after in ids else 0
        for item in status.items[start:] + status.items[:start]:
            if annotator in item.annotators:
                continue
            taken = set(item.annotators) | claims[item.unit_id]
            if annotator in item.stale or annotator in taken or len(taken) < status.k:
                row = s.get(QueueClaimRow, (signature_id, item.unit_id, annotator))
                if row is None:
                    s.add(QueueClaimRow(signature_id=signature_id, unit_id=item.unit_id, annotator=annotator))
                else:
                    row.claimed_at = datetime.now(UTC)
                return item.unit_id
    return None
