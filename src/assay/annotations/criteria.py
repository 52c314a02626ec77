"""Criteria as durable artifacts: a stable id, a name unique in the workspace, the signatures each covers,
and what an edit would make stale.

A criterion is written for one signature (``Criterion.signature_id``) and may cover more, each added on
purpose (:func:`cover_signature`); a signature's queue uses the criterion written for it, else the one
that covers it (:func:`assay.annotations.queue.signature_criterion`). Names never collide:
:func:`create_criterion` refuses a taken name (:class:`~assay.exceptions.NameTaken`, carrying the existing
criterion's id), and :func:`edit_criterion` is the one way to a new version of a named criterion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from assay._store import Store
from assay._store.tables import CriterionRow, CriterionSignatureRow, SignatureRow
from assay.annotations.agreement import is_stale
from assay.annotations.model import Annotation, Criterion
from assay.annotations.scale import BinaryScale, Scale
from assay.annotations.store import (
    add_criterion,
    criterion_of,
    criterion_scale_json,
    get_criterion,
    list_annotations,
)
from assay.exceptions import NameTaken, NotFoundError, UsageError
from assay.signatures import signature_members

__all__ = ["StaleImpact", "cover_signature", "create_criterion", "criterion_signatures", "edit_criterion",
           "stale_impact"]


def _signatures(s: Session, row: CriterionRow) -> list[int]:
    linked = s.scalars(select(CriterionSignatureRow.signature_id).where(CriterionSignatureRow.criterion_id == row.id)
                       .order_by(CriterionSignatureRow.added_at, CriterionSignatureRow.signature_id))
    return list(dict.fromkeys([*([row.signature_id] if row.signature_id is not None else []), *linked]))


def criterion_signatures(store: Store, criterion: Criterion) -> list[int]:
    """The signatures ``criterion`` covers: the one it was written for first, then those added, in order."""
    with store.session() as s:
        row = s.get(CriterionRow, criterion.id)
        if row is None:
            raise NotFoundError("criterion", str(criterion.id))
        return _signatures(s, row)


def _signature_has(s: Session, signature_id: int) -> CriterionRow | None:
    """The criterion a signature has already (written for it, else covering it), or None."""
    own = s.scalar(select(CriterionRow).where(CriterionRow.signature_id == signature_id)
                   .order_by(CriterionRow.id.desc()).limit(1))
    if own is not None:
        return own
    link = CriterionSignatureRow
    return s.scalar(select(CriterionRow).join(link, link.criterion_id == CriterionRow.id)
                    .where(link.signature_id == signature_id)
                    .order_by(CriterionSignatureRow.added_at.desc()).limit(1))


def create_criterion(store: Store, text: str, name: str, signature_id: int | None = None,
                     scale: Scale | None = None) -> Criterion:
    """A new criterion (version 1), never a new version of another one.

    Args:
        text: the criterion statement.
        name: its name, unique in the workspace.
        signature_id: the signature it is written for (None: none).
        scale: its scale (default binary).

    Raises:
        NameTaken: a criterion has this name already (``existing_id`` is its id).
        UsageError: empty text or name, or the signature has a criterion already (edit that one, or
            write this one for no signature).
        NotFoundError: no such signature.
    """
    name = name.strip()
    if not name or not text.strip():
        raise UsageError("a criterion needs a name and a text")
    with store.session() as s:
        taken = s.scalar(select(CriterionRow).where(CriterionRow.name == name))
        if taken is not None:
            where = _signatures(s, taken)
            raise NameTaken("criterion", name, taken.id,
                            f" for signature {', '.join(map(str, where))}" if where else "")
        if signature_id is not None:
            if s.get(SignatureRow, signature_id) is None:
                raise NotFoundError("signature", str(signature_id))
            has = _signature_has(s, signature_id)
            if has is not None:
                raise UsageError(f"signature {signature_id} has criterion {has.name!r} (id {has.id}) already: edit it")
        row = CriterionRow(name=name, text=text.strip(), version=1, signature_id=signature_id,
                           scale=criterion_scale_json(scale or BinaryScale()))
        s.add(row)
        s.flush()
        return criterion_of(row)


def edit_criterion(store: Store, criterion: str, text: str, scale: Scale | None = None) -> Criterion:
    """A new version of a criterion when its text or scale changed (unchanged: the criterion as it is).

    Args:
        criterion: its name or id.
        scale: the new scale (None: keep it).

    Raises:
        NotFoundError: no such criterion.
        UsageError: empty text.
    """
    current = get_criterion(store, criterion)
    return add_criterion(store, text, name=current.name, scale=scale)


def cover_signature(store: Store, criterion: str, signature_id: int, added_by: str = "") -> Criterion:
    """Make a criterion cover one more signature, on purpose (its queue then labels against it).

    Args:
        criterion: its name or id.
        signature_id: the signature to cover.
        added_by: who added it (kept with the link).

    Raises:
        NotFoundError: no such criterion or signature.
        UsageError: the signature has another criterion already.
    """
    crit = get_criterion(store, criterion)
    with store.session() as s:
        if s.get(SignatureRow, signature_id) is None:
            raise NotFoundError("signature", str(signature_id))
        has = _signature_has(s, signature_id)
        if has is not None and has.id != crit.id:
            raise UsageError(f"signature {signature_id} has criterion {has.name!r} (id {has.id}) already")
        if has is None:
            s.add(CriterionSignatureRow(criterion_id=crit.id, signature_id=signature_id, added_by=added_by))
    return crit


class StaleImpact(BaseModel):
    """What a new version of a criterion makes stale: every label now current on it, by annotator, and how
    many of those are on units outside the signatures it covers."""

    model_config = ConfigDict(frozen=True)

    criterion: str
    version: int = Field(description="the version an edit would replace")
    signatures: list[int] = Field(description="signatures the criterion covers (their queues go back to work)")
    labels: dict[str, int] = Field(description="{annotator: current labels}, most first (humans, judges, finals)")
    outside: int = Field(description="of those labels, the ones on units outside the covered signatures")

    @property
    def total(self) -> int:
        """Labels made stale."""
        return sum(self.labels.values())


def stale_impact(store: Store, criterion: Criterion, annotations: Sequence[Annotation] | None = None) -> StaleImpact:
    """What editing ``criterion`` (to a new version) would make stale (see :class:`StaleImpact`).

    Args:
        annotations: the criterion's annotations if already read (default: read them).
    """
    labels = [a for a in (annotations if annotations is not None else list_annotations(store, criterion.name))
              if a.criterion == criterion.name and not is_stale(a, criterion)]
    signatures = criterion_signatures(store, criterion)
    members = {u for sid in signatures for u in signature_members(store, sid)}
    by = Counter(a.annotator for a in labels)
    return StaleImpact(criterion=criterion.name, version=criterion.version, signatures=signatures,
                       labels=dict(sorted(by.items(), key=lambda kv: (-kv[1], kv[0]))),
                       outside=sum(a.unit_id not in members for a in labels))
