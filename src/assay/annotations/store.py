"""Reading and writing annotations and criteria in the store."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from assay._store import Store
from assay._store.tables import AnnotationRow, CriterionRow, CriterionSignatureRow, UnitRow
from assay.annotations.model import Annotation, Criterion, fit_to_scale
from assay.annotations.scale import BinaryScale, Scale, read_scale
from assay.exceptions import NameTaken, NotFoundError, UsageError
from assay.signals.people import label_signal
from assay.signals.store import write_signals


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "criterion"


def criterion_of(row: CriterionRow) -> Criterion:
    """The criterion a row holds (a NULL scale is binary)."""
    return Criterion(id=row.id, name=row.name, text=row.text, version=row.version, signature_id=row.signature_id,
                     scale=read_scale(row.scale))


def criterion_scale_json(scale: Scale) -> dict[str, object] | None:
    """What the ``criteria.scale`` column stores: NULL for binary (as every criterion made before scales)."""
    return None if scale.kind == "binary" else scale.model_dump(mode="json")


def add_criterion(store: Store, text: str, name: str | None = None, signature_id: int | None = None,
                  scale: Scale | None = None) -> Criterion:
    """Add a criterion, or a new version of it when ``name`` exists with other text or another scale.

    A named criterion that covers signatures (:mod:`assay.annotations.criteria`) is never moved to
    another one: giving ``signature_id`` of a signature it does not cover is refused (use
    :func:`~assay.annotations.criteria.cover_signature` to share it on purpose, or another name).
    In the app, :func:`~assay.annotations.criteria.create_criterion` and
    :func:`~assay.annotations.criteria.edit_criterion` keep creating and editing apart.

    Args:
        text: the criterion statement.
        name: a short stable name (default: a slug of the text).
        signature_id: the failure signature it was written for, if any.
        scale: its scale (:mod:`assay.annotations.scale`); None: binary for a new criterion, the
            current scale for an existing one. A changed scale is a new version (older labels go stale).

    Raises:
        UsageError: empty text.
        NameTaken: ``name`` is a criterion covering other signatures than ``signature_id``.
    """
    if not text.strip():
        raise UsageError("criterion text is empty")
    name = name or _slug(text)
    with store.session() as s:
        row = s.scalar(select(CriterionRow).where(CriterionRow.name == name))
        if row is None:
            row = CriterionRow(name=name, text=text.strip(), version=1, signature_id=signature_id,
                               scale=criterion_scale_json(scale or BinaryScale()))
            s.add(row)
            s.flush()
            return criterion_of(row)
        _keep_signatures(s, row, signature_id)
        if row.text != text.strip() or (scale is not None and read_scale(row.scale) != scale):
            row.text, row.version = text.strip(), row.version + 1
            if scale is not None:
                row.scale = criterion_scale_json(scale)
        s.flush()
        return criterion_of(row)


def _keep_signatures(s: Session, row: CriterionRow, signature_id: int | None) -> None:
    """Attach a criterion written for no signature to ``signature_id``; refuse moving one that covers others.

    Raises:
        NameTaken: the criterion covers signatures, ``signature_id`` not among them.
    """
    if signature_id is None or row.signature_id == signature_id:
        return
    covered = ([row.signature_id] if row.signature_id is not None else []) + list(s.scalars(
        select(CriterionSignatureRow.signature_id).where(CriterionSignatureRow.criterion_id == row.id)))
    if not covered:
        row.signature_id = signature_id
    elif signature_id not in covered:
        raise NameTaken("criterion", row.name, row.id,
                        f" for signature {', '.join(map(str, covered))}: choose another name for signature "
                        f"{signature_id}, or share this criterion with it on purpose (the app's criterion page)")


def get_criterion(store: Store, name_or_id: str) -> Criterion:
    """Look a criterion up by name or numeric id.

    Raises:
        NotFoundError: no such criterion.
    """
    with store.session() as s:
        row = s.scalar(select(CriterionRow).where(CriterionRow.name == name_or_id))
        if row is None and name_or_id.isdigit():
            row = s.get(CriterionRow, int(name_or_id))
        if row is None:
            raise NotFoundError("criterion", name_or_id)
        return criterion_of(row)


def list_criteria(store: Store) -> list[Criterion]:
    """All criteria, by id."""
    with store.session() as s:
        return [criterion_of(r) for r in s.scalars(select(CriterionRow).order_by(CriterionRow.id))]


def add_annotations(store: Store, annotations: list[Annotation]) -> int:
    """Append annotations (never overwrites). Returns the number written. An annotation's ``created_at``
    is kept when set (an imported label keeps when it was made), else it is now.

    Each is checked against its criterion's scale (none: binary) and written with its value in
    canonical form (:func:`~assay.annotations.model.fit_to_scale`).
    A human ``fail`` label also becomes a failure signal (kind ``human_fail``), in the same transaction
    (:func:`assay.signals.people.label_signal`).

    Raises:
        NotFoundError: an annotation names a unit (or second unit) or criterion that does not exist.
        UsageError: a value that is not on its criterion's scale, or pairwise fields that do not fit.
    """
    with store.session() as s:
        signals = [label_signal(a.unit_id, a.annotator, store.signals, a.criterion, a.severity, a.rationale)
                   for a in annotations if a.label == "fail" and a.annotator_kind == "human"]
        crit_cache: dict[str, CriterionRow] = {}
        for a in annotations:
            for unit in (a.unit_id, a.second_unit_id):
                if unit is not None and s.get(UnitRow, unit) is None:
                    raise NotFoundError("unit", unit)
            crit_id, crit_version, scale = None, a.criterion_version, read_scale(None)
            if a.criterion:
                crow = crit_cache.get(a.criterion) or s.scalar(
                    select(CriterionRow).where(CriterionRow.name == a.criterion))
                if crow is None:
                    raise NotFoundError("criterion", a.criterion)
                crit_cache[a.criterion] = crow
                crit_id, crit_version, scale = crow.id, crit_version or crow.version, read_scale(crow.scale)
            try:
                a = fit_to_scale(a, scale)
            except ValueError as exc:
                where = f" (criterion {a.criterion!r})" if a.criterion else ""
                raise UsageError(f"{a.item}: {exc}{where}") from None
            s.add(AnnotationRow(unit_id=a.unit_id, criterion_id=crit_id, criterion_version=crit_version,
                                annotator=a.annotator, annotator_kind=a.annotator_kind, label=a.label,
                                value=None if scale.kind == "binary" else a.value, second_unit_id=a.second_unit_id,
                                shown_order=a.shown_order, severity=a.severity, rationale=a.rationale,
                                source=a.source, extra=a.extra, blind=a.blind,
                                **({"created_at": a.created_at} if a.created_at else {})))
        s.flush()
        write_signals(s, [sig for sig in signals if sig is not None])
    return len(annotations)


def annotation_of(row: AnnotationRow, criterion: str | None) -> Annotation:
    """The annotation a row holds (``criterion``: the name of its criterion, None without one)."""
    return Annotation(unit_id=row.unit_id, annotator=row.annotator, annotator_kind=row.annotator_kind,
                      label=row.label, value=row.value, second_unit_id=row.second_unit_id,
                      shown_order=row.shown_order, severity=row.severity, rationale=row.rationale,
                      criterion=criterion, criterion_version=row.criterion_version, source=row.source,
                      extra=row.extra or {}, created_at=row.created_at, blind=row.blind)


def list_annotations(store: Store, criterion: str | None = None) -> list[Annotation]:
    """Annotations in insertion order, optionally only those made against one criterion."""
    with store.session() as s:
        q = select(AnnotationRow, CriterionRow.name).outerjoin(
            CriterionRow, AnnotationRow.criterion_id == CriterionRow.id).order_by(AnnotationRow.id)
        if criterion is not None:
            q = q.where(CriterionRow.name == criterion)
        return [annotation_of(r, name) for r, name in s.execute(q)]


def count_annotations(store: Store) -> int:
    """Number of annotation records."""
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(AnnotationRow)) or 0)


@dataclass
class LabelImport:
    """Result of a label import: records written, lines skipped with reasons, and the 1-based lines of
    records already stored (the same unit, criterion, annotator and judgment; not written again)."""

    imported: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)


def _content_key(a: Annotation, criterion_version: int | None) -> tuple[object, ...]:
    """What makes two label records the same judgment under the same criterion version (provenance such as
    source and time left out): a label made again after the criterion changed is a new label."""
    return (a.unit_id, a.second_unit_id, a.criterion, criterion_version, a.annotator, a.annotator_kind, str(a.value),
            a.severity, a.rationale.strip(), a.shown_order)


_FIELDS = ("unit", "annotator", "label", "value", "second_unit", "shown_order", "severity", "rationale", "criterion")


def _records(path: Path) -> list[tuple[int, dict[str, object]]]:
    """Records with their 1-based line number in the file (CSV: the header is line 1)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(reader.line_num, dict(r)) for r in reader]
    out: list[tuple[int, dict[str, object]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((n, {"__error__": f"invalid JSON ({exc.msg})"}))
            continue
        out.append((n, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}))
    return out


def _given(rec: dict[str, object], *keys: str) -> object | None:
    """The first of ``keys`` the record gives a non-empty value for (CSV gives "" for an empty cell)."""
    return next((rec[k] for k in keys if rec.get(k) not in (None, "")), None)


def _flag(raw: object) -> bool | None:
    """A yes/no field of an import record: a JSON boolean, or true/false (any case) in CSV; else None."""
    if isinstance(raw, bool):
        return raw
    text = str(raw or "").strip().lower()
    return True if text == "true" else False if text == "false" else None


def _record_annotation(rec: dict[str, object], criterion: Criterion | None, source: str) -> Annotation:
    """One import record as an annotation fitted to its criterion's scale.

    The judgment is ``value``, else ``label`` (so a file whose ``label`` column holds levels, classes or
    preferences imports onto a non-binary criterion too).

    Raises:
        ValueError: a field that does not fit, the message starting with the field's name.
    """
    scale = criterion.scale if criterion is not None else BinaryScale()
    field_name = "value" if _given(rec, "value") is not None else "label"
    raw = _given(rec, "value", "label")
    if raw is None:
        raise ValueError(f"{field_name}: missing; give one of {scale.describe()}")
    label = _given(rec, "label")
    if label is not None and str(label).strip().lower() != str(raw).strip().lower():
        raise ValueError(f"label and value disagree ({label!r} vs {raw!r}): give one of them")
    if not str(rec.get("annotator") or "").strip():
        raise ValueError("annotator: missing; name who made the label (agreement is counted per annotator)")
    sev = _given(rec, "severity")
    try:
        annotation = Annotation(
            unit_id=str(_given(rec, "unit", "unit_id") or ""), annotator=str(rec.get("annotator")).strip(),
            annotator_kind=rec.get("annotator_kind") or "human",
            value=raw if isinstance(raw, int) and not isinstance(raw, bool) else str(raw).strip(),
            second_unit_id=str(_given(rec, "second_unit", "second_unit_id") or "") or None,
            shown_order=_given(rec, "shown_order"),
            severity=int(sev) if sev is not None else None,  # type: ignore[call-overload]
            rationale=str(rec.get("rationale") or ""), criterion=criterion.name if criterion else None, source=source,
            blind=_flag(rec.get("blind")))
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc'])) or field_name}: {e['msg']}"
                                   for e in exc.errors())) from None
    try:
        return fit_to_scale(annotation, scale)
    except ValueError as exc:
        raise ValueError(f"{field_name}: {exc}") from None


def import_labels(store: Store, path: Path | str, source: str | None = None) -> LabelImport:
    """Import labels from JSONL or CSV (by extension).

    Each record: ``unit`` (unit id), ``annotator``, the judgment as ``value`` (or ``label``) on the
    criterion's scale: pass|fail (binary, also without a criterion), a level (ordinal), a class name
    (categorical), first|second|tie (pairwise; 1|2 and a|b too); for pairwise also ``second_unit``
    (the second output's unit) and optionally ``shown_order`` (first-second|second-first); optional
    ``severity`` (1-4), ``rationale``, ``criterion`` (name), ``annotator_kind`` (default human), ``blind``
    (true|false: made without seeing another label; missing: not known).
    Bad records are skipped with a reason and their 1-based line number in the file;
    good ones are kept. A record that repeats a label already stored (or an earlier line of the file):
    same unit(s), criterion, annotator, judgment, severity and rationale, is not written again, so
    importing the same file twice is harmless; its line is listed in ``duplicates``. A changed
    judgment by the same annotator, or the same judgment after the criterion got a new version (the
    labels made before are stale), is a new label (labels are append-only).

    Raises:
        UsageError: the file does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file: {p}")
    result = LabelImport()
    good: list[Annotation] = []
    seen = {_content_key(a, a.criterion_version) for a in list_annotations(store)}
    known_units = set(store.select_unit_ids())
    known_criteria = {c.name: c for c in list_criteria(store)}
    for n, rec in _records(p):
        if "__error__" in rec:
            result.skipped.append((n, str(rec["__error__"])))
            continue
        crit = rec.get("criterion") or None
        units = [str(u) for u in (_given(rec, "unit", "unit_id") or "", _given(rec, "second_unit", "second_unit_id"))
                 if u is not None]
        unknown = next((u for u in units if u not in known_units), None)
        if unknown is not None:
            result.skipped.append((n, f"unknown unit {unknown!r}"))
            continue
        if crit and crit not in known_criteria:
            result.skipped.append((n, f"unknown criterion {crit!r} (add it with: assay criteria add)"))
            continue
        try:
            annotation = _record_annotation(rec, known_criteria[str(crit)] if crit else None,
                                            source or f"import:{p.name}")
        except ValueError as exc:
            result.skipped.append((n, str(exc).splitlines()[0]))
            continue
        key = _content_key(annotation, known_criteria[str(crit)].version if crit else None)
        if key in seen:
            result.duplicates.append(n)
            continue
        seen.add(key)
        good.append(annotation)
    result.imported = add_annotations(store, good)
    return result


def export_labels(store: Store, fmt: str = "jsonl", criterion: str | None = None) -> str:
    """Export labels as JSONL or CSV text (same fields as :func:`import_labels` reads).

    Raises:
        UsageError: unknown format.
    """
    rows = [{"unit": a.unit_id, "annotator": a.annotator, "annotator_kind": a.annotator_kind, "label": a.label,
             "value": a.value, "second_unit": a.second_unit_id, "shown_order": a.shown_order, "severity": a.severity,
             "rationale": a.rationale, "criterion": a.criterion, "criterion_version": a.criterion_version,
             "source": a.source, "blind": a.blind, "created_at": a.created_at.isoformat() if a.created_at else None}
            for a in list_annotations(store, criterion)]
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    raise UsageError(f"unknown export format {fmt!r}: use jsonl or csv")
