"""The judge-audit pages of the annotation app (server-rendered, escaped, CSRF-checked):

    /audit              audit items of online scores, human label vs judge verdict, agreement per evaluator
    /audit/{item_id}    the unit's step timeline and a blind label form (judge verdict shown after
                        labelling); POST appends a label on the evaluator's criterion (source ``audit``)
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from assay._web.pages import checked_form, current_user, redirect, render, step_views, ui_state
from assay.exceptions import NotFoundError
from assay.suite.audit import audit_item, audit_items, criterion_text, label_audit_item
from assay.traces import step_timeline

audit_router = APIRouter()


@audit_router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> Response:
    """Audit items, newest last, and per evaluator: labelled items where judge and human agree."""
    user, session = current_user(request)
    items = audit_items(ui_state(request).store)
    per: dict[str, list[bool]] = {}
    for item in items:
        per.setdefault(item.evaluator, [])
        if item.human_label is not None:
            per[item.evaluator].append(item.human_label == item.judge_verdict)
    evaluators = [(name, sum(v), len(v)) for name, v in sorted(per.items())]
    return render(request, "audit.html", session, user=user, items=items, evaluators=evaluators)


@audit_router.get("/audit/{item_id}", response_class=HTMLResponse)
def audit_review(request: Request, item_id: int) -> Response:
    """One audit item: the unit's timeline, the criterion, and the label form."""
    user, session = current_user(request)
    store = ui_state(request).store
    try:
        item = audit_item(store, item_id)
        unit = store.unit(item.unit_id)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no audit item {item_id}") from None
    later = [i.id for i in audit_items(store) if i.human_label is None and i.id != item_id]
    return render(request, "audit_review.html", session, user=user, item=item, unit=unit,
                  steps=step_views(step_timeline(unit)), criterion_text=criterion_text(store, item),
                  next_id=next((i for i in later if i > item_id), later[0] if later else None))


@audit_router.post("/audit/{item_id}")
async def audit_label(request: Request, item_id: int) -> Response:
    """Append the caller's label for the item and go back to it (now showing the judge's verdict)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    try:
        label_audit_item(ui_state(request).store, item_id, user.name, form.get("label", ""), form.get("rationale", ""))
    except ValidationError as exc:
        raise HTTPException(status_code=400, detail=f"bad label: {str(exc).splitlines()[0]}") from None
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no audit item {item_id}") from None
    return redirect(f"/audit/{item_id}")
