"""The judge audit: a deterministic share of online-scored units (``online.audit_share``, default
2%, see :func:`assay.suite.online.audited`) goes to people, who label the unit on the evaluator's
criterion without seeing the judge's verdict. Pairing those labels with the judge's verdicts
(:func:`audit_pairs`) tracks judge-human agreement on fresh production data over time, the sign
that an evaluator needs recalibration when it falls.

A human label counts for an audit item when it is a ``human`` annotation of the item's unit
against the item's criterion (by name, any version), from the audit page or anywhere else;
an adjudicated (final) label wins, else the latest one.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import AnnotationRow, AuditItemRow, CriterionRow, ScoreRow
from assay.annotations import Annotation, add_annotations, add_criterion, list_criteria
from assay.annotations.agreement import ADJUDICATION_SOURCE
from assay.exceptions import NotFoundError

AUDIT_SOURCE = "audit"
"""``source`` of labels made on the audit page."""


class AuditPair(BaseModel):
    """One audited unit: the judge's verdict and the human label (None until someone labels it)."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    evaluator_version: str
    judge_verdict: str = Field(description="pass or fail, from the online score")
    human_label: str | None = Field(description="pass or fail, None while unlabelled")
    scored_at: datetime
    labelled_at: datetime | None


class AuditItem(BaseModel):
    """An audit-queue item as the app lists it."""

    model_config = ConfigDict(frozen=True)

    id: int
    unit_id: str
    evaluator: str
    evaluator_version: str
    criterion: str
    criterion_version: int
    score_id: int
    judge_verdict: str | None
    judge_score: float | None
    scored_at: datetime
    human_label: str | None
    labelled_by: str | None
    labelled_at: datetime | None


def _human_labels(store: Store, unit_ids: set[str]) -> dict[tuple[str, str], AnnotationRow]:
    """The label that counts per (unit, criterion name): adjudicated first, else the latest."""
    out: dict[tuple[str, str], AnnotationRow] = {}
    if not unit_ids:
        return out
    with store.session() as s:
        q = (select(AnnotationRow, CriterionRow.name).join(CriterionRow, AnnotationRow.criterion_id == CriterionRow.id)
             .where(AnnotationRow.unit_id.in_(unit_ids), AnnotationRow.annotator_kind == "human")
             .order_by(AnnotationRow.id))
        for row, name in s.execute(q):
            key = (row.unit_id, name)
            held = out.get(key)
            if held is None or row.source == ADJUDICATION_SOURCE or held.source != ADJUDICATION_SOURCE:
                out[key] = row
    return out


def audit_items(store: Store, evaluator_name: str | None = None) -> list[AuditItem]:
    """The audit queue (one evaluator's, or all), oldest first, with judge verdicts and human labels."""
    with store.session() as s:
        q = (select(AuditItemRow, ScoreRow).join(ScoreRow, AuditItemRow.score_id == ScoreRow.id)
             .order_by(AuditItemRow.id))
        if evaluator_name is not None:
            q = q.where(AuditItemRow.evaluator_name == evaluator_name)
        rows = [(a, b) for a, b in s.execute(q)]
    labels = _human_labels(store, {item.unit_id for item, _ in rows})
    out = []
    for item, score in rows:
        label = labels.get((item.unit_id, item.criterion_name))
        out.append(AuditItem(
            id=item.id, unit_id=item.unit_id, evaluator=item.evaluator_name, evaluator_version=item.evaluator_version,
            criterion=item.criterion_name, criterion_version=item.criterion_version, score_id=score.id,
            judge_verdict=score.verdict, judge_score=score.score, scored_at=score.created_at,
            human_label=label.label if label else None, labelled_by=label.annotator if label else None,
            labelled_at=label.created_at if label else None))
    return out


def audit_item(store: Store, item_id: int) -> AuditItem:
    """One audit item.

    Raises:
        NotFoundError: no such item.
    """
    with store.session() as s:
        row = s.get(AuditItemRow, item_id)
        if row is None:
            raise NotFoundError("audit item", str(item_id))
        name = row.evaluator_name
    return next(i for i in audit_items(store, name) if i.id == item_id)


def audit_pairs(store: Store, evaluator_name: str) -> list[AuditPair]:
    """Judge verdict and human label of every audited unit of one evaluator (all versions), oldest first.

    Args:
        store: the store.
        evaluator_name: the evaluator.

    Returns:
        one :class:`AuditPair` per audit item; ``human_label`` None where nobody labelled yet.
        Agreement over time: group labelled pairs by ``labelled_at`` (or ``scored_at``) window.
    """
    return [AuditPair(unit_id=i.unit_id, evaluator_version=i.evaluator_version, judge_verdict=i.judge_verdict or "",
                      human_label=i.human_label, scored_at=i.scored_at, labelled_at=i.labelled_at)
            for i in audit_items(store, evaluator_name)]


def label_audit_item(store: Store, item_id: int, annotator: str, label: str, rationale: str = "",
                     severity: int | None = None) -> Annotation:
    """Record a person's label on an audit item: an append-only annotation of the unit against the
    item's criterion (created in the store, as version 1 of the evaluator's text, when missing),
    source ``audit``, with the evaluator and item in ``extra``.

    Raises:
        NotFoundError: no such item.
        pydantic.ValidationError: a label other than pass/fail, or a severity outside 1..4.
    """
    item = audit_item(store, item_id)
    if item.criterion not in {c.name for c in list_criteria(store)}:
        add_criterion(store, criterion_text(store, item), name=item.criterion)
    annotation = Annotation(unit_id=item.unit_id, annotator=annotator, label=label,
                            severity=severity, rationale=rationale.strip(), criterion=item.criterion,
                            source=AUDIT_SOURCE, extra={"audit_item": item.id, "evaluator": item.evaluator,
                                                        "evaluator_version": item.evaluator_version})
    add_annotations(store, [annotation])
    return annotation


def criterion_text(store: Store, item: AuditItem) -> str:
    """The criterion text of the evaluator version that scored the item (its stored definition), or
    the criterion name when the version was never stored."""
    from assay._store.tables import EvaluatorRow

    with store.session() as s:
        row = s.get(EvaluatorRow, (item.evaluator, item.evaluator_version))
        text = ((row.definition or {}).get("criterion") or {}).get("text") if row is not None else None
    return str(text or item.criterion)
