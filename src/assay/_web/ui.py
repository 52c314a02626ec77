"""The annotation app: server-rendered pages (Jinja2, htmx) over the public packages.

Mount with ``install_ui(app, settings, store)``. Every page but ``/login`` needs a session;
every form carries the session's CSRF token; every response carries a strict
Content-Security-Policy (no inline script or style: trace content renders inert).

Routes (GET unless noted):
    /login, POST /login, POST /logout   sign-in, throttled after repeated failures (see assay._web.signin)
    /                                   signatures ranked by impact, signal mix, progress, criterion status
    /signatures/{sid}                   the queue: items, K, progress per annotator, stale labels to redo;
                                        POST (admin) sets size, K and blind review
    /signatures/{sid}/next              redirect to the caller's next item (their stale ones too)
    /review/{unit_id}?sig=SID           the step timeline (failure signals marked at their steps, the reading
                                        context on top) and the label form, blind until the caller labelled
                                        (assay._web.review_labels); POST labels (append-only);
                                        ``?criterion=NAME`` instead of ``sig`` keeps a criterion without a queue
    /timeline/{unit_id}?start=N         the next steps of a long timeline (the review page loads them)
    /policy/..., /notes/...             the system prompt with search, step notes (assay._web.review_context)
    /media/{sha256}                     stored inline media bytes (thumbnails of the review page)
    /adjudicate/{name}/{unit_id}        POST (admin) records the final label with a reason
    /severe                             the rare-severe inbox
    /audit, /audit/{item_id}            the judge audit (see assay._web.audit_pages)
    /criteria/..., /evaluators/...      the loop from the browser (assay._web.loop_pages)
    /admin                              accounts, keys, worker, upload, audit record (assay._web.admin_pages)
    /units?FILTERS                      search over units (assay._web.search); queue tools (assay._web.queue_pages)
    /review-next, /workflows            review across signatures; where failures concentrate
                                        (see assay._web.signature_pages)

Criteria (/criteria, /criteria/{id or name}, /signatures/{sid}/criterion) are in :mod:`assay._web.criteria_pages`,
agreement (/agreement) in :mod:`assay._web.agreement_pages`, error pages in :mod:`assay._web.errors`.
"""

from __future__ import annotations

import gc
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from assay._store import Store
from assay._store.audit import record_audit
from assay._store.environments import environments
from assay._store.spans import media_bytes, orphan_count, resolve_unit_id, unit_row
from assay._store.usage import unit_usages
from assay._web.admin_pages import admin_router
from assay._web.agreement_pages import agreement_router
from assay._web.audit_pages import audit_router
from assay._web.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, SessionCodec, authenticate
from assay._web.criteria_pages import criteria_router
from assay._web.errors import install_error_pages
from assay._web.jobs import Jobs
from assay._web.loop_pages import loop_router
from assay._web.pages import (
    HERE,
    SECURITY_HEADERS,
    UI,
    StepView,
    checked_form,
    client_address,
    current_user,
    make_env,
    redirect,
    render,
    require_admin,
    session_of,
    signature_or_404,
    ui_state,
)
from assay._web.queue_pages import queue_router, queue_tools_context
from assay._web.review_context import (
    finished_for,
    next_signature,
    reading_context,
    reading_router,
    review_criterion,
    review_query,
    unit_reading,
    visible_notes,
)
from assay._web.review_labels import label_view, made_blind
from assay._web.search import search_router
from assay._web.signature_pages import signature_router
from assay._web.signin import FAILED, OK, THROTTLED, wait_message
from assay.annotations import (
    Annotation,
    BinaryScale,
    Criterion,
    add_annotations,
    fit_to_scale,
    get_criterion,
)
from assay.annotations.agreement import ADJUDICATION_SOURCE, is_stale
from assay.annotations.queue import (
    QueueItem,
    claim_next,
    queue_blind,
    queue_status,
    set_queue,
    unit_annotations,
)
from assay.annotations.queue_tools import all_reviewers, queue_reviewers
from assay.annotations.scale import ShownOrder, flip
from assay.exceptions import NotFoundError, UsageError
from assay.settings import Settings
from assay.signals import FailureSignal, assess, unit_signals
from assay.signatures import lifecycle_history, list_signatures, severe_queue
from assay.signatures.unseen import unseen_modes
from assay.traces.usage import usage_summary

router = APIRouter()

INITIAL_STEPS = 200
"""Steps rendered with the review page; the rest load right after it, ``CHUNK_STEPS`` at a time
(htmx ``hx-trigger="load"``; ``?all=1`` renders every step at once, the no-JavaScript fallback)."""
CHUNK_STEPS = 400


def freeze_startup_heap() -> None:
    """Take every object alive at server startup (modules, the app, templates, pydantic schemas) out
    of the cyclic garbage collector's view: ``gc.collect()`` then ``gc.freeze()`` (CPython).

    A full (generation 2) collection walks every tracked object; with the startup heap in it, each
    took about 100-150 ms on this machine and made the review page's p95 (benchmarks/bench_ui.py).
    Frozen objects are never collected, which is right for what lives as long as the process.
    Registered as a startup handler by :func:`install_ui`.
    """
    gc.collect()
    gc.freeze()


def install_ui(app: FastAPI, settings: Settings, store: Store) -> None:
    """Mount the annotation app on ``app`` at ``/`` (pages) and ``/static`` (htmx, JS, CSS)."""
    app.state.assay_ui = UI(settings=settings, store=store, codec=SessionCodec(settings.session_secret),
                            env=make_env())
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="assay-static")
    app.router.on_startup.append(freeze_startup_heap)
    app.include_router(router)
    app.include_router(criteria_router)  # criteria: ids, unique names, signatures covered, edits (criteria_pages)
    app.include_router(agreement_router)  # human-human agreement per criterion (agreement_pages)
    app.include_router(audit_router)  # the judge-audit pages (assay.suite.audit)
    app.include_router(signature_router)  # review across signatures, workflows
    app.include_router(reading_router)  # the system prompt with search, step notes
    app.state.assay_jobs = Jobs()  # background jobs: calibrations, worker passes
    app.include_router(loop_router)  # criterion -> evaluators -> calibration -> activation, datasets
    app.include_router(admin_router)  # accounts, keys, the worker, uploads, the audit record
    app.include_router(queue_router)  # reviewers, reservations, contrast items
    app.include_router(search_router)  # /units: search and filters, shareable; add matches to a queue
    install_error_pages(app)  # 404/400/403/500 as pages for the browser; JSON stays JSON (errors)


# --- login ---------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    """The login form; starts an anonymous session so the form has a CSRF token."""
    session = session_of(request)
    cookie = None
    if session is None:
        cookie = ui_state(request).codec.dump("")
        session = ui_state(request).codec.load(cookie)
    resp = render(request, "login.html", session, next=_safe_next(next), error=None)
    if cookie:
        _set_cookie(resp, cookie)
    return resp


def _safe_next(target: str) -> str:
    """Only same-site paths (no ``//host``, ``/\\host`` or scheme) as the after-login target."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _set_cookie(resp: Response, value: str) -> None:
    resp.set_cookie(SESSION_COOKIE, value, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="lax")


@router.post("/login")
async def login(request: Request) -> Response:
    """Check name and password; on success a new session (fresh CSRF token). Repeated failures are
    throttled per name given and per client address, and every attempt is in the audit record
    (:mod:`assay._web.signin`); the answers are the same whether the name exists or not."""
    session = session_of(request)
    if session is None:
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    form = await checked_form(request, session)
    ui, name, client = ui_state(request), form.get("name", ""), client_address(request)
    target = _safe_next(form.get("next", "/"))
    wait = ui.throttle.retry_after_s(ui.store, name, client)
    if wait:
        ui.throttle.record(ui.store, name, client, THROTTLED, {"retry_after_s": str(wait)})
        return render(request, "login.html", session, status=429, headers={"Retry-After": str(wait)}, next=target,
                      error=wait_message(wait))
    account = authenticate(ui.store, name, form.get("password", ""))
    if account is None:
        ui.throttle.record(ui.store, name, client, FAILED)
        wait = ui.throttle.retry_after_s(ui.store, name, client)
        return render(request, "login.html", session, status=401, next=target,
                      error="Wrong name or password." + (f" {wait_message(wait)}" if wait else ""))
    ui.throttle.record(ui.store, account.name, client, OK)
    resp = redirect(target)
    _set_cookie(resp, ui.codec.dump(account.name))
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    _, session = current_user(request)
    await checked_form(request, session)
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# --- signatures and queues -----------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def signatures_page(request: Request, message: str = "", env: str = "") -> Response:
    """Signatures ranked by impact with volume, share, environments, signal mix, review progress and criterion
    status; ``?env=NAME`` keeps the signatures with members in that environment."""
    user, session = current_user(request)
    store = ui_state(request).store
    rows = []
    reviewers = all_reviewers(store)
    for sig in list_signatures(store, prices=ui_state(request).settings.prices):
        if env and env not in sig.environments:
            continue
        queue = queue_status(store, sig.id)
        rows.append({"sig": sig, "queue": queue, "reviewers": reviewers.get(sig.id, [])})
    return render(request, "signatures.html", session, user=user, rows=rows, message=message, env=env,
                  environments=environments(store), unseen=unseen_modes(store))


@router.get("/signatures/{sid}", response_class=HTMLResponse)
def queue_page(request: Request, sid: int, message: str = "", saved: str | None = None) -> Response:
    """One signature's queue: items, who labelled them (stale labels apart), progress per annotator."""
    user, session = current_user(request)
    store = ui_state(request).store
    sig = signature_or_404(store, sid)
    queue = queue_status(store, sid)
    finished = bool(queue.items) and finished_for(queue, user.name)
    return render(request, "queue.html", session, user=user, sig=sig, queue=queue, message=message,
                  finished=finished, next_sig=next_signature(store, sid, user.name) if finished else None,
                  saved=_saved(store, user.name, saved, sid), history=lifecycle_history(store, sid),
                  **queue_tools_context(store, sid, user))


@router.get("/signatures/{sid}/progress", response_class=HTMLResponse)
def queue_progress(request: Request, sid: int) -> Response:
    """The queue's progress fragment (items, who labelled them, per annotator); htmx polls it."""
    user, session = current_user(request)
    store = ui_state(request).store
    sig = signature_or_404(store, sid)
    return render(request, "_progress.html", session, user=user, sig=sig, queue=queue_status(store, sid))


@router.post("/signatures/{sid}")
async def queue_settings(request: Request, sid: int) -> Response:
    """Admin: set the queue size, K and blind review (``blind``: on or off; missing: kept)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    signature_or_404(ui_state(request).store, sid)
    blind = {"on": True, "off": False}.get(form.get("blind", ""))
    try:
        size, k = int(form.get("size", "10")), int(form.get("k", "2"))
        set_queue(ui_state(request).store, sid, size, k, blind)
    except (UsageError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    record_audit(ui_state(request).store, user.name, "queue.settings", f"signature:{sid}",
                 {"size": size, "k": k, "blind": blind}, client=client_address(request))
    return redirect(f"/signatures/{sid}")


@router.get("/signatures/{sid}/next")
def next_item(request: Request, sid: int, after: str | None = None, saved: str | None = None) -> Response:
    """Reserve the caller's next item of the queue and go there; back to the queue when none is left, or when the
    queue has assigned reviewers and the caller is neither one of them nor an admin. ``saved``: the item the
    caller just labelled (the next page announces it)."""
    user, _ = current_user(request)
    reviewers = queue_reviewers(ui_state(request).store, sid)
    if reviewers and user.name not in reviewers and not user.is_admin:
        return redirect(f"/signatures/{sid}?message=" + quote(f"This queue is assigned to {', '.join(reviewers)}: "
                                                               "ask an admin to add you."))
    try:
        unit_id = claim_next(ui_state(request).store, sid, user.name, after)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no signature {sid}") from None
    saved_q = f"&saved={quote(saved, safe='')}" if saved else ""
    if unit_id is None:
        return redirect(f"/signatures/{sid}?message=" + quote("Nothing left for you in this queue.") + saved_q)
    second = next((i.second_unit_id for i in queue_status(ui_state(request).store, sid).items
                   if i.unit_id == unit_id), None)
    return redirect(f"/review/{quote(unit_id, safe='')}?sig={sid}" + (f"&second={quote(second, safe='')}"
                                                                        if second else "") + saved_q)


# --- review ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One output of a pairwise item as the review page shows it (left or right)."""

    unit_id: str
    value: str
    steps: list[StepView]
    total: int
    next_start: int | None


def shown_order(annotator: str, first: str, second: str) -> ShownOrder:
    """The order one annotator sees a pair in: random per annotator and pair, the same every time they
    open it (a hash of the three), so position does not favour either output across annotators."""
    digest = hashlib.sha256(f"{annotator}\x00{first}\x00{second}".encode()).digest()
    return "first-second" if digest[0] % 2 == 0 else "second-first"


def _pair_second(store: Store, sig: int | None, unit_id: str, second: str | None, criterion: Criterion | None
                 ) -> str | None:
    """The second unit of a pairwise review: the one asked for, else the queue item's; None off pairwise."""
    if criterion is None or criterion.scale.kind != "pairwise":
        return None
    if second is None and sig is not None:
        second = next((i.second_unit_id for i in queue_status(store, sig).items if i.unit_id == unit_id), None)
    if second is None or unit_row(store, second) is None:
        raise HTTPException(status_code=400, detail="a pairwise criterion compares two units: open the item from its "
                                                    "queue (or give ?second=UNIT)")
    return second


def _side(request: Request, unit_id: str, value: str, show_all: bool) -> Side:
    row = unit_row(ui_state(request).store, unit_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such unit")
    reading = unit_reading(request, unit_id, row.content_hash)
    steps = reading.steps
    shown = reading.views(0, None if show_all else INITIAL_STEPS)
    return Side(unit_id=unit_id, value=value, steps=shown, total=len(steps),
                next_start=len(shown) if len(shown) < len(steps) else None)


def _queue_neighbours(store: Store, sig: int | None, unit_id: str) -> tuple[QueueItem | None, QueueItem | None]:
    """The queue items before and after ``unit_id`` (404 for an unknown signature)."""
    if sig is None:
        return None, None
    try:
        items = queue_status(store, sig).items
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no signature {sig}") from None
    ids = [item.unit_id for item in items]
    if unit_id not in ids:
        return None, None
    i = ids.index(unit_id)
    return (items[i - 1] if i > 0 else None), (items[i + 1] if i + 1 < len(items) else None)


@router.get("/review/{unit_id:path}", response_class=HTMLResponse)
def review_page(request: Request, unit_id: str, sig: int | None = None, all: bool = False,  # noqa: A002
                second: str | None = None, criterion: str | None = None, saved: str | None = None,
                across: bool = False) -> Response:
    """The unit's step timeline and the label form, which follows the criterion's scale (levels with
    their anchors, classes, or, on a pairwise criterion, both units side by side in an order random
    per annotator). The first ``INITIAL_STEPS`` steps come with the page, the rest load right after it
    (``/timeline/...``); ``all=1`` renders every step at once; ``across=1``: reached in review order
    across signatures (``/review-next``), where labelling leads back. Above the timeline: the task, the first
    request, the source's outcome, the system prompt's link (:mod:`assay._web.review_context`). A trace
    unit merged into a session by a late session id redirects to the session. Blind review: other labels and
    other people's step notes show only once the caller saved a current label (:mod:`assay._web.review_labels`).
    ``saved``: the item the caller just labelled, announced (``aria-live``) with a link to it."""
    user, session = current_user(request)
    store = ui_state(request).store
    unit = unit_row(store, unit_id)
    if unit is None:
        moved = resolve_unit_id(store, unit_id)
        if moved is None:
            raise HTTPException(status_code=404, detail="no such unit")
        kept = f"?sig={sig}" if sig is not None else f"?criterion={quote(criterion, safe='')}" if criterion else ""
        return redirect(f"/review/{quote(moved, safe='')}{kept}")
    crit = review_criterion(store, sig, criterion)
    second = _pair_second(store, sig, unit.unit_id, second, crit)
    reading = unit_reading(request, unit.unit_id, unit.content_hash)
    steps = reading.steps
    shown = reading.views(0, None if all else INITIAL_STEPS)
    view = label_view(_item_labels(store, unit.unit_id, second), user.name, crit, queue_blind(store, sig))
    prev, nxt = _queue_neighbours(store, None if across else sig, unit_id)
    sides: list[Side] = []
    if second is not None:
        order = shown_order(user.name, unit.unit_id, second)
        pair = [_side(request, unit.unit_id, "first", all), _side(request, second, "second", all)]
        sides = pair if order == "first-second" else pair[::-1]
    usage = unit_usages(store, [unit.unit_id], ui_state(request).settings.prices).get(unit.unit_id)
    signals = view.signals(unit_signals(store, [unit.unit_id])[unit.unit_id])
    failure = assess(unit.unit_id, signals, store.signals)
    return render(request, "review.html", session, user=user, unit=unit, steps=shown, total=len(steps),
                  usage=usage_summary(usage) if usage is not None else None,
                  next_start=len(shown) if len(shown) < len(steps) else None, unit_id=unit.unit_id, sig=sig,
                  criterion=crit, scale=crit.scale if crit else BinaryScale(), view=view,
                  labels=view.shown, prev=prev, next=nxt, mine=view.mine, second=second, sides=sides,
                  across=across, review_q=review_query(sig, crit),
                  notes_at=visible_notes(store, unit.unit_id, user.name, view.blind), **reading_context(unit, reading),
                  signals_at=_by_step(signals), unit_signals=[x for x in signals if x.step is None],
                  n_signals=len(signals), failure=failure, saved=_saved(store, user.name, saved, sig),
                  failed=failure.failed if view.blind else unit.unit_id in store.failed_among([unit.unit_id]),
                  orphans=orphan_count(store, unit.unit_id), default_env=store.environments.default or "none")


@dataclass(frozen=True)
class Saved:
    """The label the caller just saved, as the next page announces it."""

    unit_id: str
    text: str
    href: str


def _saved(store: Store, annotator: str, unit_id: str | None, sig: int | None) -> Saved | None:
    """The caller's latest label on ``unit_id`` in words, None when there is none (or no unit given)."""
    if not unit_id:
        return None
    mine = [a for a in unit_annotations(store, [unit_id]) if a.annotator == annotator]
    if not mine:
        return None
    a = mine[-1]
    words = f"{a.value}" + (f", severity {a.severity}" if a.severity else "")
    href = f"/review/{quote(unit_id, safe='')}" + (f"?sig={sig}" if sig is not None else "")
    return Saved(unit_id=unit_id, text=f"Saved your label on {a.item}: {words}.", href=href)


def _item_labels(store: Store, unit_id: str, second: str | None) -> list[Annotation]:
    """The labels of one item: a unit's (any criterion), or a pair's in either order, turned to ``unit_id`` first."""
    if second is None:
        return unit_annotations(store, [unit_id])
    return [canonical_to(a, unit_id) for a in unit_annotations(store, [unit_id, second])
            if {a.unit_id, a.second_unit_id} == {unit_id, second}]


def canonical_to(annotation: Annotation, first: str) -> Annotation:
    """A pairwise annotation turned so that ``first`` is its first unit (others unchanged)."""
    if annotation.second_unit_id is None or annotation.unit_id == first:
        return annotation
    return annotation.model_copy(update={"unit_id": first, "second_unit_id": annotation.unit_id,
                                         "value": flip(annotation.value) if annotation.value is not None else None})


def _by_step(signals: list[FailureSignal]) -> dict[int, list[FailureSignal]]:
    """Signals that point to a step, by its index (the review page marks them on the timeline)."""
    out: dict[int, list[FailureSignal]] = defaultdict(list)
    for x in signals:
        if x.step is not None:
            out[x.step].append(x)
    return dict(out)


@router.get("/timeline/{unit_id:path}", response_class=HTMLResponse)
def timeline_chunk(request: Request, unit_id: str, start: int = 0, sig: int | None = None,
                   side: str = "", criterion: str | None = None) -> Response:
    """``CHUNK_STEPS`` steps of a unit's timeline from ``start`` (0-based), then the loader of the next
    chunk; what the review page fetches after it loaded (htmx). ``side`` prefixes the step ids (pairwise)."""
    user, session = current_user(request)
    store = ui_state(request).store
    unit = unit_row(store, unit_id)
    if unit is None:
        raise HTTPException(status_code=404, detail="no such unit")
    reading = unit_reading(request, unit.unit_id, unit.content_hash)
    steps = reading.steps
    start = max(0, start)
    shown = reading.views(start, start + CHUNK_STEPS)
    end = start + len(shown)
    crit = review_criterion(store, sig, criterion)
    pair_side = side if side in ("left-", "right-") else ""
    view = label_view(unit_annotations(store, [unit.unit_id]), user.name, crit, queue_blind(store, sig))
    signals = view.signals(unit_signals(store, [unit.unit_id])[unit.unit_id])
    return render(request, "_steps.html", session, steps=shown, total=len(steps), unit_id=unit.unit_id, sig=sig,
                  next_start=end if end < len(steps) else None, side=pair_side, signals_at=_by_step(signals),
                  review_q=review_query(sig, crit), criterion=crit,
                  notes_at=None if pair_side else visible_notes(store, unit.unit_id, user.name, view.blind))


def _posted_annotation(form: dict[str, str], unit_id: str, annotator: str, criterion: Criterion | None,
                       second: str | None, source: str, extra: dict[str, object]) -> Annotation:
    """The annotation a review or adjudication form posted (``value`` on non-binary scales, else ``label``).

    Raises:
        ValidationError, ValueError: a field that does not fit (the caller answers 400).
    """
    severity = int(form["severity"]) if form.get("severity") else None
    value = form.get("value") or form.get("label") or None
    annotation = Annotation(unit_id=unit_id, annotator=annotator, value=value, second_unit_id=second,
                            shown_order=shown_order(annotator, unit_id, second) if second else None,
                            severity=severity, rationale=form.get("rationale", "").strip(),
                            criterion=criterion.name if criterion else None,
                            criterion_version=criterion.version if criterion else None, source=source, extra=extra)
    return fit_to_scale(annotation, criterion.scale if criterion else BinaryScale())


IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp", "image/bmp", "image/avif"})
"""Media served as images; anything else (SVG, which can hold script, included) is sent as a download."""


@router.get("/media/{sha256}")
def media(request: Request, sha256: str) -> Response:
    """Stored inline media bytes with their content type: raster images inline (the review page's thumbnails),
    anything else as an ``application/octet-stream`` attachment. Only bytes the store holds, never a remote URL."""
    current_user(request)
    found = media_bytes(ui_state(request).store, sha256.lower()) if len(sha256) == 64 else None
    if found is None:
        raise HTTPException(status_code=404, detail="no such media")
    data, mime = found
    headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=86400"}
    if mime in IMAGE_TYPES:
        return Response(data, media_type="image/jpeg" if mime == "image/jpg" else mime, headers=headers)
    return Response(data, media_type="application/octet-stream",
                    headers={**headers, "Content-Disposition": f'attachment; filename="{sha256[:16]}"'})


@router.post("/review/{unit_id:path}")
async def label(request: Request, unit_id: str, sig: int | None = None, second: str | None = None,
                criterion: str | None = None, across: bool = False) -> Response:
    """Append one label (a correction is a new record; ``blind`` records whether the caller could see another
    label on the item) and go to the caller's next item (of the signature's queue, or with ``across=1`` in
    review order across signatures; ``criterion=`` without a queue: back to the unit, the criterion kept)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    store = ui_state(request).store
    crit = review_criterion(store, sig, criterion)
    second = _pair_second(store, sig, unit_id, second, crit)
    view = label_view(_item_labels(store, unit_id, second), user.name, crit, queue_blind(store, sig))
    try:
        annotation = _posted_annotation(form, unit_id, user.name, crit, second, "ui",
                                        {"signature_id": sig} if sig is not None else {})
        add_annotations(store, [annotation.model_copy(update={"blind": made_blind(view, user.name)})])
    except (ValidationError, ValueError, UsageError) as exc:
        if isinstance(exc, NotFoundError):
            raise HTTPException(status_code=404, detail=str(exc)) from None
        raise HTTPException(status_code=400, detail=f"bad label: {str(exc).splitlines()[0]}") from None
    done = quote(unit_id, safe="")
    if across:
        return redirect(f"/review-next?after={done}")
    if sig is None:
        query = review_query(None, crit, second)
        return redirect(f"/review/{done}" + (f"{query}&saved={done}" if query else f"?saved={done}"))
    return redirect(f"/signatures/{sig}/next?after={done}&saved={done}")


# --- agreement and adjudication --------------------------------------------------------------
@router.get("/adjudicate/{name}/{unit_id:path}", response_class=HTMLResponse)
def adjudicate_page(request: Request, name: str, unit_id: str, second: str | None = None) -> Response:
    """The disagreeing labels of one item (a unit, or with ``second`` a pair) and, for admins, the
    final-label form on the criterion's scale."""
    user, session = current_user(request)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="no such criterion") from None
    labels = [a for a in _item_labels(store, unit_id, second) if a.criterion == criterion.name]
    return render(request, "adjudicate.html", session, user=user, criterion=criterion, unit_id=unit_id,
                  second=second, scale=criterion.scale, labels=[(a, is_stale(a, criterion)) for a in labels])


@router.post("/adjudicate/{name}/{unit_id:path}")
async def adjudicate(request: Request, name: str, unit_id: str, second: str | None = None) -> Response:
    """Admin: record the final label with a reason (an append-only record, source ``adjudication``)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
        if not form.get("rationale", "").strip():
            raise ValueError("a reason is required")
        annotation = _posted_annotation(form, unit_id, user.name, criterion, second, ADJUDICATION_SOURCE, {})
        add_annotations(store, [annotation.model_copy(update={"shown_order": None})])
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except (ValidationError, ValueError, UsageError) as exc:
        raise HTTPException(status_code=400, detail=f"bad adjudication: {str(exc).splitlines()[0]}") from None
    return redirect(f"/agreement/{quote(name, safe='')}")


@router.get("/severe", response_class=HTMLResponse)
def severe_page(request: Request) -> Response:
    """The rare-severe inbox: units flagged severe, whatever their signature's size."""
    user, session = current_user(request)
    return render(request, "severe.html", session, user=user, items=severe_queue(ui_state(request).store))
