"""Review queues: a representative sample of one signature for experts to label, and the order
in which an expert reviewing across signatures meets failed units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import EmbeddingRow, MemberRow, SignatureRow
from assay.exceptions import UsageError
from assay.signatures.embeddings import vector_from_bytes
from assay.signatures.listing import list_signatures, signature_members
from assay.signatures.model import Signature

REVIEW_QUEUE_SIZE = 10
"""Units of a signature's review queue, as :mod:`assay.annotations.queue` sets it by default."""


def farthest_points(vectors: np.ndarray, chosen: list[int], candidates: list[int], k: int) -> list[int]:
    """Greedy farthest-point sampling: ``k`` candidates, each maximizing its smallest cosine
    distance to everything chosen so far (ties: lowest index). Vectors are L2-normalized."""
    picked: list[int] = []
    pool = [c for c in candidates if c not in chosen]
    if not chosen and pool and k > 0:
        picked.append(pool.pop(0))
    while pool and len(picked) < k:
        anchor = vectors[chosen + picked]
        nearest = (1.0 - vectors[pool] @ anchor.T).min(axis=1)
        picked.append(pool.pop(int(np.argmax(nearest))))
    return picked


def _vectors(store: Store, signature_id: int, unit_ids: list[str]) -> np.ndarray | None:
    with store.session() as s:
        row = s.get(SignatureRow, signature_id)
        model = row.embedding_model if row is not None else ""
        rows = {r.unit_id: r.vector for r in s.scalars(
            select(EmbeddingRow).where(EmbeddingRow.model == model, EmbeddingRow.unit_id.in_(unit_ids)))}
    if set(rows) != set(unit_ids):
        return None
    return np.vstack([vector_from_bytes(rows[u]) for u in unit_ids])


def _evenly(items: list[str], k: int) -> list[str]:
    """``k`` items at evenly spaced ranks (the fallback spread without vectors)."""
    if k <= 0:
        return []
    return [items[round(j * (len(items) - 1) / max(1, k - 1))] for j in range(k)] if k > 1 else items[-1:]


def sample_queue(store: Store, signature_id: int, size: int, seed: int = 0) -> list[str]:
    """A representative, deterministic sample of a signature's units for review.

    The first half (rounded up) are the members nearest the centroid; the rest spread
    over the cluster: the seed picks the first of them at random among the remaining
    members, then farthest-point sampling on the cached embeddings adds, one by one, the
    member farthest (cosine) from all chosen so far. Same store, id, size and seed -> same
    list. Without cached vectors the spread half is taken at evenly spaced distance ranks.

    Args:
        store: the store, after :func:`~assay.signatures.build_signatures`.
        signature_id: the signature.
        size: how many units, >= 1 (all members when the signature is smaller).
        seed: changes the spread half only.

    Returns:
        unit ids, the nearest-to-centroid ones first (nearest first), then in sampling order.

    Raises:
        NotFoundError: no signature with this id.
        UsageError: ``size`` < 1.
    """
    if size < 1:
        raise UsageError(f"queue size must be at least 1, got {size}")
    members = signature_members(store, signature_id)
    near = (size + 1) // 2
    if size >= len(members) or size == near:
        return members[:size]
    rest = members[near:]
    vectors = _vectors(store, signature_id, members)
    if vectors is None:
        return members[:near] + _evenly(rest, size - near)
    first = near + int(np.random.default_rng(seed).integers(len(rest)))
    chosen = [*range(near), first]
    spread = farthest_points(vectors, chosen, list(range(near, len(members))), size - near - 1)
    return [members[i] for i in chosen + spread]


def round_robin(queues: Sequence[Sequence[str]]) -> list[str]:
    """The first item of each queue in turn, then the second of each, and so on until every
    queue is empty; an item already taken is not repeated."""
    out: list[str] = []
    seen: set[str] = set()
    for depth in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if depth < len(queue) and queue[depth] not in seen:
                seen.add(queue[depth])
                out.append(queue[depth])
    return out


def review_order(store: Store, size: int = REVIEW_QUEUE_SIZE, seed: int = 0,
                 ranking: Sequence[Signature] | None = None) -> list[str]:
    """Every failed unit the signatures know, in the order an expert reviewing across
    signatures meets them.

    Round-robin over the signatures ranked by impact (:func:`~assay.signatures.list_signatures`):
    the first unit of each signature's review queue (:func:`sample_queue` of ``size``, the one
    nearest its centroid first), then the second of each, and so on. The failed units in no
    signature (noise of the latest build, units marked new) take their turn as one more queue,
    last in each round, in an order the seed draws: they are failures like no other, where a
    rare failure mode shows. Members beyond each queue follow in the same round-robin, nearest
    the centroid first.

    Args:
        store: the store, after :func:`~assay.signatures.build_signatures`.
        size: units of each signature's review queue, >= 1.
        seed: passed to :func:`sample_queue`; also orders the unclustered units.
        ranking: the signatures in the order to follow (default: :func:`list_signatures`).

    Returns:
        unit ids, each failed unit known to the signatures exactly once.

    Raises:
        UsageError: ``size`` < 1.
    """
    signatures = list(ranking) if ranking is not None else list_signatures(store)
    queues = [sample_queue(store, sig.id, size, seed) for sig in signatures]
    with store.session() as s:
        loose = sorted(s.scalars(select(MemberRow.unit_id).where(MemberRow.signature_id.is_(None))))
    loose = [loose[i] for i in np.random.default_rng(seed).permutation(len(loose))]
    rest = [[u for u in sig.unit_ids if u not in set(queue)] for sig, queue in zip(signatures, queues, strict=True)]
    return round_robin([*queues, loose]) + round_robin(rest)
