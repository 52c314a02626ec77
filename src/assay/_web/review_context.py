"""What the review page shows around the step timeline, so a unit reads like the conversation it was:
the task and the first user request, the source's outcome, the system prompt (policy) one click away
with search, step-level comments and corrected outputs, the criterion kept on every link, and what
impact and severity mean. Routes (GET unless noted; login required):

    /policy/{unit_id}?q=TEXT          the unit's system prompt(s) rendered, with search (htmx updates the
                                      matches as one types; without JavaScript the form submits)
    /notes/{step}/{unit_id}           a step's comments and corrected outputs, and the form to add one
                                      (an htmx fragment inside the review page; a page of its own otherwise);
                                      POST appends a note (``assay.annotations.step_notes``); other people's
                                      notes are hidden under blind review's rule for labels: they show once
                                      the reader saved a current label, or in a queue that is not blind
                                      (:func:`visible_notes`)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup, escape
from pydantic import ValidationError

from assay._store import Store
from assay._store.spans import load_unit, unit_row
from assay._store.tables import UnitRow
from assay._web.pages import StepView, checked_form, current_user, first_time, redirect, render, step_views, ui_state
from assay._web.rendering import markdown_html
from assay._web.review_labels import label_view
from assay.annotations import Criterion, get_criterion
from assay.annotations.queue import QueueStatus, queue_blind, queue_status, signature_criterion, unit_annotations
from assay.annotations.step_notes import StepNote, add_step_note, notes_by_step, step_notes
from assay.exceptions import NotFoundError
from assay.signatures import Signature, list_signatures
from assay.traces import Step, Unit, step_timeline

reading_router = APIRouter()

TASK_ATTRIBUTES = ("instruction", "task", "question", "goal", "input")
"""Unit attributes that hold the task the source gave the agent (tau-bench: ``instruction``)."""
PREVIEW_CHARS = 600
"""The task and the first request show this much before "more"."""


@dataclass(frozen=True)
class UnitReading:
    """What is read off one unit's content once (cached per content version, see ``TimelineCache``).

    Attributes:
        steps: the step timeline.
        timed: the step times are real; False when a reader numbered them (``synthetic_time``, e.g. a
            replayed benchmark run) or none is known, so offsets mean nothing and are not shown.
        task: the task the source recorded (:data:`TASK_ATTRIBUTES`), if any.
        first_request: the first user turn's text, if any.
        system: ``(step index, text)`` of each distinct system prompt.
    """

    steps: list[Step]
    timed: bool
    task: str | None
    first_request: str | None
    system: tuple[tuple[int, str], ...]
    _views: dict[int, StepView] = field(default_factory=dict, repr=False, compare=False)

    def views(self, start: int = 0, stop: int | None = None) -> list[StepView]:
        """The step views of ``steps[start:stop]`` (markdown and JSON rendered once per step, then kept)."""
        chosen = self.steps[start:stop]
        missing = [s for s in chosen if s.index not in self._views]
        if missing:
            t0 = first_time(self.steps)
            self._views.update((v.index, v) for v in step_views(missing, t0, self.timed))
        return [self._views[s.index] for s in chosen]


def read_unit(unit: Unit) -> UnitReading:
    """The :class:`UnitReading` of a unit."""
    steps = step_timeline(unit)
    task = next((str(unit.attributes[a]).strip() for a in TASK_ATTRIBUTES
                 if isinstance(unit.attributes.get(a), str) and unit.attributes[a].strip()), None)
    first = next((s.text for s in steps if s.kind == "user" and s.text.strip()), None)
    timed = any(not s.synthetic_time and (s.start_ns or s.end_ns) for s in unit.spans)
    return UnitReading(steps=steps, timed=timed, task=task, first_request=first,
                       system=tuple((s.index, s.text) for s in steps if s.kind == "system" and s.text.strip()))


def unit_reading(request: Request, unit_id: str, content_hash: str) -> UnitReading:
    """The unit's :class:`UnitReading`, from the app's in-process cache when its content is unchanged."""
    store = ui_state(request).store
    return ui_state(request).timelines.get(unit_id, content_hash, lambda: read_unit(load_unit(store, unit_id)))


def outcome_line(row: UnitRow) -> str:
    """The source's outcome in words, e.g. ``fail (reward 0.0) · ended by user``; ``unknown`` without one."""
    parts = [row.outcome + (f" (reward {row.reward:g})" if row.reward is not None else "")]
    ended = (row.attributes or {}).get("ended_by")
    if ended:
        parts.append(f"ended by {ended}")
    return " · ".join(parts)


def reading_context(row: UnitRow, reading: UnitReading) -> dict[str, Any]:
    """What the review page's header shows (task, first request, outcome, system prompt), as template context."""
    first = reading.first_request if reading.first_request != reading.task else None
    return {"task": reading.task, "first_request": first, "outcome": outcome_line(row),
            "system_chars": sum(len(t) for _, t in reading.system), "timed": reading.timed,
            "preview_chars": PREVIEW_CHARS}


def review_criterion(store: Store, sig: int | None, name: str | None) -> Criterion | None:
    """The criterion a review is against: the signature's (``sig``), else the one named (``criterion=``),
    so links from adjudication and the severe inbox keep it; 404 for an unknown name."""
    if sig is not None:
        return signature_criterion(store, sig)
    if not name:
        return None
    try:
        return get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no criterion {name!r}") from None


def review_query(sig: int | None, criterion: Criterion | None, second: str | None = None) -> str:
    """The query string that keeps a review's context on a link: ``?sig=N`` or ``?criterion=NAME`` (and the
    second unit of a pair); empty when there is none."""
    parts = [f"sig={sig}"] if sig is not None else [f"criterion={quote(criterion.name, safe='')}"] \
        if criterion is not None else []
    if second:
        parts.append(f"second={quote(second, safe='')}")
    return "?" + "&".join(parts) if parts else ""


def finished_for(queue: QueueStatus, user: str) -> bool:
    """True when nothing in the queue is left for ``user``: each item has their current label, or has its K labels
    and no stale label of theirs (a stale label puts the item back in their queue)."""
    return all(user in item.annotators or (item.done(queue.k) and user not in item.stale) for item in queue.items)


def next_signature(store: Store, after: int, user: str) -> Signature | None:
    """The signature with the highest impact, other than ``after``, whose queue still has an item for ``user``."""
    for sig in list_signatures(store):
        if sig.id != after and not finished_for(queue_status(store, sig.id), user):
            return sig
    return None


# --- the system prompt, with search ----------------------------------------------------------
def _sections(text: str) -> list[str]:
    """The text cut at blank lines and markdown headings: the units a search shows."""
    parts = re.split(r"\n\s*\n|\n(?=#{1,6} )", text)
    return [p.strip() for p in parts if p.strip()]


def highlight(text: str, query: str) -> Markup:
    """``text`` escaped, with each case-insensitive occurrence of ``query`` in ``<mark>``."""
    if not query:
        return escape(text)
    pieces = re.split(f"({re.escape(query)})", text, flags=re.IGNORECASE)
    return Markup("").join(Markup("<mark>") + escape(p) + Markup("</mark>") if i % 2 else escape(p)
                           for i, p in enumerate(pieces))


@reading_router.get("/policy/{unit_id:path}", response_class=HTMLResponse)
def policy_page(request: Request, unit_id: str, q: str = "") -> Response:
    """The unit's system prompt(s) rendered as markdown; with ``q``, the sections that contain it, marked."""
    user, session = current_user(request)
    row = unit_row(ui_state(request).store, unit_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such unit")
    reading = unit_reading(request, row.unit_id, row.content_hash)
    query = q.strip()[:200]
    matches = [(index, highlight(part, query)) for index, text in reading.system for part in _sections(text)
               if query and query.lower() in part.lower()]
    context: dict[str, Any] = {"user": user, "unit_id": row.unit_id, "q": query, "matches": matches,
                               "prompts": [(index, markdown_html(text), len(text)) for index, text in reading.system]}
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "policy-matches":
        return render(request, "_policy_matches.html", session, **context)
    return render(request, "policy.html", session, **context)


# --- step notes: comments and corrected outputs ------------------------------------------------
def visible_notes(store: Store, unit_id: str, user: str, blind: bool) -> dict[int, list[StepNote]]:
    """The unit's step notes a reviewer sees, by step: their own, and other people's only when the page is not
    blind (``blind``: :attr:`assay._web.review_labels.LabelView.blind`, the rule that hides other labels; a
    colleague's corrected output would anchor a second opinion as much as their label)."""
    return notes_by_step([n for n in step_notes(store, [unit_id]) if not blind or n.author == user])


def notes_blind(store: Store, unit_id: str, user: str, criterion: Criterion | None, sig: int | None) -> bool:
    """Whether ``user`` reads ``unit_id`` blind (the review page's rule, :func:`assay._web.review_labels.label_view`):
    the queue is blind and they saved no current label on the unit against ``criterion``."""
    return label_view(unit_annotations(store, [unit_id]), user, criterion, queue_blind(store, sig)).blind


def _step(request: Request, unit_id: str, index: int) -> tuple[UnitRow, Step]:
    row = unit_row(ui_state(request).store, unit_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such unit")
    steps = unit_reading(request, row.unit_id, row.content_hash).steps
    if not 1 <= index <= len(steps):
        raise HTTPException(status_code=404, detail=f"no step {index} in {row.unit_id} ({len(steps)} steps)")
    return row, steps[index - 1]


@reading_router.get("/notes/{index}/{unit_id:path}", response_class=HTMLResponse)
def notes_page(request: Request, index: int, unit_id: str, sig: int | None = None, criterion: str | None = None,
               message: str = "") -> Response:
    """A step's notes and the form to add one (a fragment for htmx, else a page with the step)."""
    user, session = current_user(request)
    row, step = _step(request, unit_id, index)
    store = ui_state(request).store
    crit = review_criterion(store, sig, criterion)
    blind = notes_blind(store, row.unit_id, user.name, crit, sig)
    notes = visible_notes(store, row.unit_id, user.name, blind).get(index, [])
    context: dict[str, Any] = {"user": user, "unit_id": row.unit_id, "step": step, "notes": notes, "crit": crit,
                               "message": message, "query": review_query(sig, crit)}
    template = "_step_notes.html" if request.headers.get("hx-request") else "step_notes.html"
    return render(request, template, session, **context)


@reading_router.post("/notes/{index}/{unit_id:path}")
async def add_note(request: Request, index: int, unit_id: str, sig: int | None = None,
                   criterion: str | None = None) -> Response:
    """Append a comment or a corrected output on one step (append-only, with author, time, criterion, the
    unit's content hash); back to the review page at that step, or the updated fragment for htmx."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    row, step = _step(request, unit_id, index)
    store = ui_state(request).store
    crit = review_criterion(store, sig, criterion)
    try:
        add_step_note(store, StepNote(unit_id=row.unit_id, step=index, span_id=step.span_id,
                                      kind=form.get("kind", "comment"), text=form.get("text", "").strip(),
                                      author=user.name, criterion=crit.name if crit else None,
                                      content_hash=row.content_hash, source="ui"))
    except ValidationError as exc:
        raise HTTPException(status_code=400, detail="bad note: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from None
    if request.headers.get("hx-request"):
        return notes_page(request, index, unit_id, sig, criterion, message="Saved.")
    return redirect(f"/review/{quote(row.unit_id, safe='')}{review_query(sig, crit)}#step-{index}")
