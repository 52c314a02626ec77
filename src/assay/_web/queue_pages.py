"""The queue page's tools (``assay.annotations.queue_tools``): reviewers assigned to a queue, its live
reservations and releasing one, contrast items, units added from a search or taken out again. Admins only;
each action leaves an audit record. Routes (POST):

    /signatures/{sid}/reviewers     assign reviewers (none: anyone may review the queue)
    /signatures/{sid}/release       release one reservation (the item goes to the next person asking)
    /signatures/{sid}/contrast      add contrast items: units of the nearest signatures and passing units
    /signatures/{sid}/remove        take an added unit out of the queue (its labels stay)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from assay._store import Store
from assay._store.audit import record_audit
from assay._web.auth import Account, csrf_ok, list_users
from assay._web.pages import checked_form, client_address, current_user, redirect, require_admin, ui_state
from assay.annotations.queue_additions import queue_additions, remove_from_queue
from assay.annotations.queue_tools import (
    NEIGHBOURS,
    add_contrast_items,
    assign_reviewers,
    queue_reviewers,
    release,
    reservations,
)
from assay.exceptions import NotFoundError, UsageError

queue_router = APIRouter()


def queue_tools_context(store: Store, sid: int, user: Account) -> dict[str, Any]:
    """What the queue page shows of its tools: reviewers, reservations, additions (and accounts, for admins)."""
    return {"reviewers": queue_reviewers(store, sid), "reservations": reservations(store, sid),
            "additions": queue_additions(store, sid), "accounts": list_users(store) if user.is_admin else [],
            "neighbours": NEIGHBOURS}


def _back(sid: int, message: str) -> Response:
    return redirect(f"/signatures/{sid}?message=" + quote(message))


@queue_router.post("/signatures/{sid}/reviewers")
async def set_reviewers(request: Request, sid: int) -> Response:
    """Admin: the queue's reviewers are the accounts ticked (``reviewer``, repeated); none: anyone."""
    user, session = current_user(request)
    form = await request.form()
    token = form.get("csrf_token")
    if not csrf_ok(session, token if isinstance(token, str) else None):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    require_admin(user)
    names = [v for v in form.getlist("reviewer") if isinstance(v, str)]
    store = ui_state(request).store
    try:
        chosen = assign_reviewers(store, sid, names, user.name)
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    record_audit(store, user.name, "queue.assign", f"signature:{sid}", {"reviewers": [*chosen]},
                 client=client_address(request))
    return _back(sid, f"reviewers: {', '.join(chosen)}" if chosen else "no reviewer assigned: anyone may review")


@queue_router.post("/signatures/{sid}/release")
async def release_reservation(request: Request, sid: int) -> Response:
    """Admin: release one reservation (``unit_id``, ``annotator``)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    unit_id, annotator = form.get("unit_id", ""), form.get("annotator", "")
    if not release(store, sid, unit_id, annotator):
        raise HTTPException(status_code=404, detail=f"no reservation of {unit_id!r} by {annotator!r}")
    record_audit(store, user.name, "queue.release", f"signature:{sid}", {"unit_id": unit_id, "annotator": annotator},
                 client=client_address(request))
    return _back(sid, f"released {unit_id} (held by {annotator})")


@queue_router.post("/signatures/{sid}/contrast")
async def add_contrast(request: Request, sid: int) -> Response:
    """Admin: add ``neighbours`` units of the nearest signatures and ``passing`` units that did not fail."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    try:
        neighbours, passing = int(form.get("neighbours", "0") or 0), int(form.get("passing", "0") or 0)
        added = add_contrast_items(store, sid, neighbours, passing, user.name)
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except (UsageError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"contrast items: {exc}") from None
    record_audit(store, user.name, "queue.contrast", f"signature:{sid}",
                 {"neighbours": neighbours, "passing": passing, "added": added},
                 client=client_address(request))
    return _back(sid, f"added {added} contrast item(s)")


@queue_router.post("/signatures/{sid}/remove")
async def remove_unit(request: Request, sid: int) -> Response:
    """Admin: take an added unit (``unit_id``) out of the queue; its labels stay."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    unit_id = form.get("unit_id", "")
    if not remove_from_queue(store, sid, unit_id):
        raise HTTPException(status_code=404, detail=f"{unit_id!r} was not added to this queue")
    record_audit(store, user.name, "queue.remove", f"signature:{sid}", {"unit_id": unit_id},
                 client=client_address(request))
    return _back(sid, f"took {unit_id} out of the queue")
