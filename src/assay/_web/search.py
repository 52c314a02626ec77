"""Search and filters over units (``assay._store.unit_search``) with shareable URLs: the filters are the query
string, so a search is a link. Admins add what a search finds to a signature's review queue. Routes:

    /units?q=&source=&signature=&signal=&state=&label=&evaluator=&verdict=&since=&until=&page=&to=
                                     the matching units, newest ingested first, PAGE_SIZE a page
    POST /units/add-to-queue         admin: add every match (at most MAX_ADD) to a queue, with the search as
                                     where they came from (a signature's members, an evaluator's failed
                                     scores, or a search)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from assay._store import Store
from assay._store.audit import record_audit
from assay._store.tables import AnnotationRow, MemberRow, ScoreRow, SignalRow, UnitRow
from assay._store.unit_search import UnitFilter, unit_query
from assay._web.pages import checked_form, client_address, current_user, redirect, render, require_admin, ui_state
from assay.annotations.queue_additions import Origin, add_to_queue
from assay.exceptions import NotFoundError
from assay.signatures import list_signatures

search_router = APIRouter()

PAGE_SIZE = 50
MAX_ADD = 500
"""Units one "add to queue" may add (a larger search is refused: narrow it)."""


def parse_filter(params: dict[str, str]) -> UnitFilter:
    """The filter in a query string (empty values are unset); 400 with the reasons when one does not parse."""
    given = {k: v.strip() for k, v in params.items() if k in UnitFilter.model_fields and v.strip()}
    try:
        return UnitFilter.model_validate(given)
    except ValidationError as exc:
        raise HTTPException(status_code=400, detail="bad filter: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from None


def _choices(store: Store) -> dict[str, Any]:
    """What the filter form offers: sources, signatures, signal kinds, evaluators."""
    with store.session() as s:
        return {"sources": sorted(s.scalars(select(UnitRow.source).distinct())),
                "signal_kinds": sorted(s.scalars(select(SignalRow.kind).where(SignalRow.retracted_at.is_(None))
                                                 .distinct())),
                "evaluator_names": sorted(s.scalars(select(ScoreRow.evaluator_name).distinct())),
                "signatures": list_signatures(store)}


def _rows(store: Store, unit_ids: list[str]) -> list[dict[str, Any]]:
    """The page's units with what the table shows: source, outcome, signature, human labels, failed."""
    with store.session() as s:
        units = {r.unit_id: r for r in s.scalars(select(UnitRow).where(UnitRow.unit_id.in_(unit_ids)))}
        sigs = {u: sid for u, sid in s.execute(select(MemberRow.unit_id, MemberRow.signature_id)
                                               .where(MemberRow.unit_id.in_(unit_ids)))}
        labels = {u: n for u, n in s.execute(select(AnnotationRow.unit_id, func.count())
                                             .where(AnnotationRow.unit_id.in_(unit_ids),
                                                    AnnotationRow.annotator_kind == "human")
                                             .group_by(AnnotationRow.unit_id))}
    failed = store.failed_among(unit_ids)
    return [{"unit": units[u], "signature": sigs.get(u), "labels": labels.get(u, 0), "failed": u in failed}
            for u in unit_ids if u in units]


@search_router.get("/units", response_class=HTMLResponse)
def units_page(request: Request, page: int = 1, to: int | None = None) -> Response:
    """The units matching the filters of the query string (a shareable URL), a page at a time."""
    user, session = current_user(request)
    store = ui_state(request).store
    f = parse_filter(dict(request.query_params))
    query = unit_query(f, store.signals.fail_at)
    page = max(1, page)
    with store.session() as s:
        total = int(s.scalar(select(func.count()).select_from(query.subquery())) or 0)
        ids = list(s.scalars(query.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
    params = f.params()
    return render(request, "units.html", session, user=user, f=f, rows=_rows(store, ids), total=total, page=page,
                  pages=max(1, -(-total // PAGE_SIZE)), query=urlencode(params), to=to, max_add=MAX_ADD,
                  share=str(request.url.replace(query=urlencode(params))), **_choices(store))


def origin_of(f: UnitFilter) -> Origin:
    """Where units added from a search came from: an evaluator's scores, a signature's members, or a search."""
    if f.evaluator or f.verdict:
        return "evaluator"
    if f.signature is not None and f.params().keys() == {"signature"}:
        return "signature"
    return "search"


@search_router.post("/units/add-to-queue")
async def add_matches(request: Request) -> Response:
    """Admin: add every unit the search (``filter``, its query string) finds to signature ``signature``'s queue."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    f = parse_filter(dict(parse_qsl(form.get("filter", ""))))
    try:
        target = int(form.get("signature", ""))
    except ValueError:
        raise HTTPException(status_code=400, detail="choose the queue (a signature) to add the units to") from None
    with store.session() as s:
        ids = list(s.scalars(unit_query(f, store.signals.fail_at).limit(MAX_ADD + 1)))
    if len(ids) > MAX_ADD:
        raise HTTPException(status_code=400, detail=f"the search finds more than {MAX_ADD} units: narrow it first")
    detail = urlencode(f.params())
    try:
        added = add_to_queue(store, target, ids, origin_of(f), detail, user.name)
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    record_audit(store, user.name, "queue.add", f"signature:{target}",
                 {"origin": origin_of(f), "search": detail, "matched": len(ids), "added": added},
                 client=client_address(request))
    return redirect(f"/signatures/{target}?message=" + quote(
        f"added {added} unit(s) from the search ({len(ids) - added} already in the queue)"))
