"""Step notes: a comment on one step of a unit's timeline, or a *corrected output* (what the agent
should have said or done at that step), append-only with provenance like every label.

A note points to a step by its 1-based index in the step timeline and records the content hash of
the unit it was made on (and the step's span id), so it still says where it pointed after the unit's
content changed. A correction of a correction is a new record; the newest is the current one.

    add_step_note(store, StepNote(unit_id="u1", step=4, kind="correction", text="Refund $120.", author="ann"))
    notes = step_notes(store, ["u1"])
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import CriterionRow, StepNoteRow, UnitRow
from assay.annotations.model import AnnotatorKind
from assay.exceptions import NotFoundError

NoteKind = Literal["comment", "correction"]
MAX_NOTE_CHARS = 20_000


class StepNote(BaseModel):
    """One note on one step (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    id: int | None = Field(None, description="the record's id (None before it is stored)")
    unit_id: str = Field(min_length=1)
    step: int = Field(ge=1, description="1-based index in the unit's step timeline")
    span_id: str | None = Field(None, description="the span the step came from")
    kind: NoteKind = Field(description="comment, or correction: what the agent should have said or done")
    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS)
    author: str = Field(min_length=1, max_length=200)
    author_kind: AnnotatorKind = "human"
    criterion: str | None = Field(None, description="the criterion under review when it was written, if any")
    criterion_version: int | None = None
    content_hash: str = Field("", description="the unit content the step index refers to")
    source: str = Field("", description="where it was written: ui, api, ...")
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


def add_step_note(store: Store, note: StepNote) -> StepNote:
    """Append a note; returns it as stored (id, time, criterion version, the unit's content hash).

    Raises:
        NotFoundError: unknown unit or criterion.
    """
    with store.session() as s:
        unit = s.get(UnitRow, note.unit_id)
        if unit is None:
            raise NotFoundError("unit", note.unit_id)
        crit = None
        if note.criterion is not None:
            crit = s.scalar(select(CriterionRow).where(CriterionRow.name == note.criterion))
            if crit is None:
                raise NotFoundError("criterion", note.criterion)
        row = StepNoteRow(unit_id=note.unit_id, step=note.step, span_id=note.span_id, kind=note.kind,
                          text=note.text.strip(), author=note.author, author_kind=note.author_kind,
                          criterion_id=crit.id if crit else None,
                          criterion_version=(note.criterion_version or crit.version) if crit else None,
                          content_hash=note.content_hash or unit.content_hash, source=note.source, extra=note.extra)
        s.add(row)
        s.flush()
        return _note(row, crit.name if crit else None)


def _note(row: StepNoteRow, criterion: str | None) -> StepNote:
    return StepNote(id=row.id, unit_id=row.unit_id, step=row.step, span_id=row.span_id, kind=row.kind,
                    text=row.text, author=row.author, author_kind=row.author_kind,
                    criterion=criterion, criterion_version=row.criterion_version, content_hash=row.content_hash,
                    source=row.source, extra=row.extra or {}, created_at=_utc(row.created_at))


def _utc(t: datetime | None) -> datetime | None:
    """A stored time as aware UTC (SQLite and PostgreSQL give them back without a zone)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def step_notes(store: Store, unit_ids: Sequence[str] | None = None, kind: NoteKind | None = None) -> list[StepNote]:
    """Notes, oldest first: of some units (None: all), of one kind (None: both)."""
    q = (select(StepNoteRow, CriterionRow.name).outerjoin(CriterionRow, StepNoteRow.criterion_id == CriterionRow.id)
         .order_by(StepNoteRow.id))
    if kind is not None:
        q = q.where(StepNoteRow.kind == kind)
    with store.session() as s:
        if unit_ids is None:
            return [_note(r, name) for r, name in s.execute(q)]
        ids = list(dict.fromkeys(unit_ids))
        return [_note(r, name) for i in range(0, len(ids), 500)
                for r, name in s.execute(q.where(StepNoteRow.unit_id.in_(ids[i:i + 500])))]


def notes_by_step(notes: Sequence[StepNote]) -> dict[int, list[StepNote]]:
    """``{step index: its notes, oldest first}``."""
    out: dict[int, list[StepNote]] = {}
    for note in notes:
        out.setdefault(note.step, []).append(note)
    return out


def export_step_notes(notes: Sequence[StepNote], path: Path | str) -> Path:
    """Write notes as JSON Lines (one note per line, every field), for review in git beside a dataset."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(n.model_dump_json() + "\n" for n in notes), encoding="utf-8")
    return p
