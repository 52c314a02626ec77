"""Signature pages of the annotation app beyond the per-signature queues (server-rendered, escaped):

    /review-next?after=UNIT     the caller's next failed unit in review order (round-robin across the
                                signatures by impact, one representative each in turn; the failed units
                                in no signature take one turn per round): the first no person labelled
                                yet, after ``after``. Labelling it (``/review/...?across=1``) comes back here.
    /workflows                  where failures concentrate: every unit by workflow, failure rate and its
                                95% interval against the overall rate (:mod:`assay.signatures.workflows`)

Reviewing each signature's whole queue in turn meets fewer distinct failure modes in the first
reviews than reading failed units at random (benchmarks/results/discovery.json, ``queue_by_signature``);
one of each in turn meets more (``round_robin``). The queues stay for K labels per item (agreement).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import AnnotationRow, MemberRow
from assay._web.pages import current_user, redirect, render, ui_state
from assay.signatures import review_order
from assay.signatures.workflows import workflow_report

signature_router = APIRouter()


def reviewed_units(store: Store) -> set[str]:
    """Units with at least one human label (any criterion): already read by a person."""
    with store.session() as s:
        return set(s.scalars(select(AnnotationRow.unit_id).where(AnnotationRow.annotator_kind == "human")))


def next_across(store: Store, after: str | None = None) -> tuple[str, int | None] | None:
    """The next unit of :func:`~assay.signatures.review_order` that no person labelled, after ``after``
    (wrapping), with its signature id (None for a unit in no signature); None when every one was."""
    order = review_order(store)
    done = reviewed_units(store)
    start = order.index(after) + 1 if after in order else 0
    unit_id = next((u for u in order[start:] + order[:start] if u not in done and u != after), None)
    if unit_id is None:
        return None
    with store.session() as s:
        return unit_id, s.scalar(select(MemberRow.signature_id).where(MemberRow.unit_id == unit_id))


@signature_router.get("/review-next")
def review_next(request: Request, after: str | None = None) -> Response:
    """Go to the caller's next unit in review order (see module docstring); back to the signatures
    when every failed unit the signatures know has a human label."""
    current_user(request)
    found = next_across(ui_state(request).store, after)
    if found is None:
        return redirect("/?message=" + quote("Every failed unit in review order has a label."))
    unit_id, sid = found
    sig = f"sig={sid}&" if sid is not None else ""
    return redirect(f"/review/{quote(unit_id, safe='')}?{sig}across=1")


@signature_router.get("/workflows", response_class=HTMLResponse)
def workflows_page(request: Request) -> Response:
    """Every unit, failed or not, grouped by workflow, flagged where failures concentrate."""
    user, session = current_user(request)
    ui = ui_state(request)
    return render(request, "workflows.html", session, user=user, report=workflow_report(ui.store, ui.settings.signals))
