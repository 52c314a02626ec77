"""Read the stored signatures: ranked list, members, 2-D map points."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow
from assay.exceptions import NotFoundError
from assay.signatures.model import Signature


def _members(store: Store) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    with store.session() as s:
        rows = s.execute(select(MemberRow.signature_id, MemberRow.unit_id)
                         .where(MemberRow.signature_id.is_not(None))
                         .order_by(MemberRow.distance, MemberRow.unit_id))
        for signature_id, unit_id in rows:
            out[int(signature_id)].append(unit_id)  # type: ignore[arg-type]
    return out


def list_signatures(store: Store, include_retired: bool = False) -> list[Signature]:
    """Stored signatures ranked by impact: size (share of failed units), largest first, then id.

    Args:
        store: the store.
        include_retired: also list signatures the latest build no longer found (size 0).

    Returns:
        signatures with their members (nearest the centroid first); empty before the first
        :func:`~assay.signatures.build_signatures`.
    """
    members = _members(store)
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(MemberRow)) or 0
        query = select(SignatureRow).order_by(SignatureRow.size.desc(), SignatureRow.id)
        if not include_retired:
            query = query.where(SignatureRow.status != "retired")
        rows = list(s.scalars(query))
    return [Signature(id=r.id, structural_key=r.structural_key, label=r.label, keywords=list(r.keywords or []),
                      size=r.size, share=r.size / total if total else 0.0,
                      representative_unit=r.representative_unit, status=r.status,  # type: ignore[arg-type]
                      unit_ids=members.get(r.id, []))
            for r in rows]


def signature_members(store: Store, signature_id: int) -> list[str]:
    """Unit ids of a signature, nearest the centroid first.

    Raises:
        NotFoundError: no signature with this id.
    """
    with store.session() as s:
        if s.get(SignatureRow, signature_id) is None:
            raise NotFoundError("signature", str(signature_id))
        rows = s.scalars(select(MemberRow.unit_id).where(MemberRow.signature_id == signature_id)
                         .order_by(MemberRow.distance, MemberRow.unit_id))
        return list(rows)


def map_points(store: Store) -> list[tuple[str, float, float, int | None]]:
    """Points of the 2-D signature map: ``(unit_id, x, y, signature_id or None for noise)``.

    ``x, y`` are the first two principal components of the unit embeddings (unitless),
    one point per clustered failed unit, sorted by unit id.
    """
    with store.session() as s:
        rows = s.execute(select(MemberRow.unit_id, MemberRow.x, MemberRow.y, MemberRow.signature_id)
                         .order_by(MemberRow.unit_id))
        return [(uid, float(x or 0.0), float(y or 0.0), sid) for uid, x, y, sid in rows]
