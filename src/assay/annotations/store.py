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

from assay._store import Store
from assay._store.tables import AnnotationRow, CriterionRow, UnitRow
from assay.annotations.model import Annotation, Criterion
from assay.exceptions import NotFoundError, UsageError
from assay.signals.people import label_signal
from assay.signals.store import write_signals


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "criterion"


def _criterion(row: CriterionRow) -> Criterion:
    return Criterion(id=row.id, name=row.name, text=row.text, version=row.version, signature_id=row.signature_id)


def add_criterion(store: Store, text: str, name: str | None = None, signature_id: int | None = None) -> Criterion:
    """Add a criterion, or a new version of it when ``name`` exists with other text.

    Args:
        text: the criterion statement.
        name: a short stable name (default: a slug of the text).
        signature_id: the failure signature it was written for, if any.

    Raises:
        UsageError: empty text.
    """
    if not text.strip():
        raise UsageError("criterion text is empty")
    name = name or _slug(text)
    with store.session() as s:
        row = s.scalar(select(CriterionRow).where(CriterionRow.name == name))
        if row is None:
            row = CriterionRow(name=name, text=text.strip(), version=1, signature_id=signature_id)
            s.add(row)
        elif row.text != text.strip():
            row.text, row.version = text.strip(), row.version + 1
            if signature_id is not None:
                row.signature_id = signature_id
        s.flush()
        return _criterion(row)


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
        return _criterion(row)


def list_criteria(store: Store) -> list[Criterion]:
    """All criteria, by id."""
    with store.session() as s:
        return [_criterion(r) for r in s.scalars(select(CriterionRow).order_by(CriterionRow.id))]


def add_annotations(store: Store, annotations: list[Annotation]) -> int:
    """Append annotations (never overwrites). Returns the number written. An annotation's ``created_at``
    is kept when set (an imported label keeps when it was made), else it is now.

    A human ``fail`` label also becomes a failure signal (kind ``human_fail``), in the same transaction
    (:func:`assay.signals.people.label_signal`).

    Raises:
        NotFoundError: an annotation names a unit or criterion that does not exist.
    """
    with store.session() as s:
        signals = [label_signal(a.unit_id, a.annotator, store.signals, a.criterion, a.severity, a.rationale)
                   for a in annotations if a.label == "fail" and a.annotator_kind == "human"]
        crit_cache: dict[str, CriterionRow] = {}
        for a in annotations:
            if s.get(UnitRow, a.unit_id) is None:
                raise NotFoundError("unit", a.unit_id)
            crit_id, crit_version = None, a.criterion_version
            if a.criterion:
                crow = crit_cache.get(a.criterion) or s.scalar(
                    select(CriterionRow).where(CriterionRow.name == a.criterion))
                if crow is None:
                    raise NotFoundError("criterion", a.criterion)
                crit_cache[a.criterion] = crow
                crit_id, crit_version = crow.id, crit_version or crow.version
            s.add(AnnotationRow(unit_id=a.unit_id, criterion_id=crit_id, criterion_version=crit_version,
                                annotator=a.annotator, annotator_kind=a.annotator_kind, label=a.label,
                                severity=a.severity, rationale=a.rationale, source=a.source, extra=a.extra,
                                **({"created_at": a.created_at} if a.created_at else {})))
        s.flush()
        write_signals(s, [sig for sig in signals if sig is not None])
    return len(annotations)


def list_annotations(store: Store, criterion: str | None = None) -> list[Annotation]:
    """Annotations in insertion order, optionally only those made against one criterion."""
    with store.session() as s:
        q = select(AnnotationRow, CriterionRow.name).outerjoin(
            CriterionRow, AnnotationRow.criterion_id == CriterionRow.id).order_by(AnnotationRow.id)
        if criterion is not None:
            q = q.where(CriterionRow.name == criterion)
        return [Annotation(unit_id=r.unit_id, annotator=r.annotator, annotator_kind=r.annotator_kind,
                           label=r.label, severity=r.severity, rationale=r.rationale,
                           criterion=name, criterion_version=r.criterion_version, source=r.source,
                           extra=r.extra or {}, created_at=r.created_at)
                for r, name in s.execute(q)]


def count_annotations(store: Store) -> int:
    """Number of annotation records."""
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(AnnotationRow)) or 0)


@dataclass
class LabelImport:
    """Result of a label import: records written and lines skipped with reasons."""

    imported: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


_FIELDS = ("unit", "annotator", "label", "severity", "rationale", "criterion")


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


def import_labels(store: Store, path: Path | str, source: str | None = None) -> LabelImport:
    """Import labels from JSONL or CSV (by extension).

    Each record: ``unit`` (unit id), ``annotator``, ``label`` (pass|fail), optional
    ``severity`` (1-4), ``rationale``, ``criterion`` (name), ``annotator_kind`` (default human).
    Bad records are skipped with a reason and their 1-based line number in the file;
    good ones are kept.

    Raises:
        UsageError: the file does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file: {p}")
    result = LabelImport()
    good: list[Annotation] = []
    known_units = set(store.select_unit_ids())
    known_criteria = {c.name for c in list_criteria(store)}
    for n, rec in _records(p):
        if "__error__" in rec:
            result.skipped.append((n, str(rec["__error__"])))
            continue
        unit = str(rec.get("unit") or rec.get("unit_id") or "")
        crit = rec.get("criterion") or None
        if unit not in known_units:
            result.skipped.append((n, f"unknown unit {unit!r}"))
            continue
        if crit and crit not in known_criteria:
            result.skipped.append((n, f"unknown criterion {crit!r} (add it with: assay criteria add)"))
            continue
        try:
            sev = rec.get("severity")
            good.append(Annotation(
                unit_id=unit, annotator=str(rec.get("annotator") or "unknown"),
                annotator_kind=rec.get("annotator_kind") or "human",
                label=str(rec.get("label", "")).strip().lower(),
                severity=int(sev) if sev not in (None, "") else None,  # type: ignore[call-overload]
                rationale=str(rec.get("rationale") or ""), criterion=str(crit) if crit else None,
                source=source or f"import:{p.name}"))
        except (ValidationError, ValueError) as exc:
            result.skipped.append((n, str(exc).splitlines()[0] if not isinstance(exc, ValidationError)
                                   else "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())))
    result.imported = add_annotations(store, good)
    return result


def export_labels(store: Store, fmt: str = "jsonl", criterion: str | None = None) -> str:
    """Export labels as JSONL or CSV text (same fields as :func:`import_labels` reads).

    Raises:
        UsageError: unknown format.
    """
    rows = [{"unit": a.unit_id, "annotator": a.annotator, "annotator_kind": a.annotator_kind, "label": a.label,
             "severity": a.severity, "rationale": a.rationale, "criterion": a.criterion,
             "criterion_version": a.criterion_version, "source": a.source,
             "created_at": a.created_at.isoformat() if a.created_at else None}
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
