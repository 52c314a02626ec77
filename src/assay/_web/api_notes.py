"""REST API routes for step notes (``assay.annotations.step_notes``), added to the ``/api/v1`` router:

    GET  /notes        comments and corrected outputs on steps (filters: unit_id, kind; limit/offset)
    POST /notes        append one (author: the API key's owner unless given); 201
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay._store.spans import load_unit, resolve_unit_id
from assay.annotations.step_notes import MAX_NOTE_CHARS, NoteKind, StepNote, add_step_note, step_notes
from assay.exceptions import NotFoundError
from assay.traces import step_timeline


class StepNoteIn(BaseModel):
    """A new step note: a comment, or a corrected output (what the agent should have said or done there)."""

    model_config = ConfigDict(extra="forbid")

    unit_id: str = Field(min_length=1)
    step: int = Field(ge=1, description="1-based index in the unit's step timeline (GET /units/{unit_id})")
    kind: NoteKind
    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS)
    criterion: str | None = Field(None, description="the criterion it was written under, if any")
    author: str | None = Field(None, min_length=1, max_length=200, description="default: the API key's owner")


MAX_LIMIT = 10_000


def add_note_routes(router: APIRouter, store: Store, caller: Any) -> None:
    """Register ``GET /notes`` and ``POST /notes`` on the API router (``caller``: its API-key dependency)."""

    @router.get("/notes", response_model=list[StepNote],
                summary="Step notes (comments, corrected outputs), oldest first")
    def notes(unit_id: str | None = None, kind: NoteKind | None = None,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
              offset: Annotated[int, Query(ge=0)] = 0) -> list[StepNote]:
        rows = step_notes(store, [resolve_unit_id(store, unit_id) or unit_id] if unit_id else None, kind)
        return rows[offset:offset + limit]

    @router.post("/notes", response_model=StepNote, status_code=201,
                 summary="Append a comment or a corrected output on one step (never overwrites)")
    def create_note(body: StepNoteIn, who: Any = Depends(caller)) -> StepNote:  # noqa: B008
        current = resolve_unit_id(store, body.unit_id)
        if current is None:
            raise HTTPException(status_code=422, detail=f"unit not found: {body.unit_id!r}")
        steps = step_timeline(load_unit(store, current))
        if body.step > len(steps):
            raise HTTPException(status_code=422, detail=f"step {body.step} is beyond the unit's {len(steps)} steps")
        try:
            return add_step_note(store, StepNote(unit_id=current, step=body.step, kind=body.kind, text=body.text,
                                                 span_id=steps[body.step - 1].span_id,
                                                 author=body.author or who.owner, criterion=body.criterion,
                                                 source="api", extra={"api_key": who.key_prefix}))
        except NotFoundError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
