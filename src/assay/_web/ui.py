"""The annotation app: server-rendered pages (Jinja2, htmx) over the public packages.

Mount with ``install_ui(app, settings, store)``. Every page but ``/login`` needs a session;
every form carries the session's CSRF token; every response carries a strict
Content-Security-Policy (no inline script or style: trace content renders inert).

Routes (GET unless noted):
    /login, POST /login, POST /logout
    /                                   signatures ranked by impact, progress, criterion status
    /signatures/{sid}                   the queue: items, K, progress per annotator; POST (admin) sets size/K
    /signatures/{sid}/next              redirect to the caller's next item
    /review/{unit_id}?sig=SID           the step timeline (failure signals marked at their steps) and the
                                        label form; POST labels (append-only)
    /timeline/{unit_id}?start=N         the next steps of a long timeline (the review page loads them)
    /signatures/{sid}/criterion         criterion editor; POST (admin) writes a new version
    /agreement, /agreement/{name}       human-human agreement per criterion; disagreements
    /adjudicate/{name}/{unit_id}        POST (admin) records the final label with a reason
    /severe                             the rare-severe inbox
    /audit, /audit/{item_id}            the judge audit (see assay._web.audit_pages)
"""

from __future__ import annotations

import gc
from collections import defaultdict
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from assay._store import Store
from assay._store.environments import environments
from assay._store.spans import load_unit, resolve_unit_id, unit_row
from assay._store.usage import unit_usages
from assay._web.audit_pages import audit_router
from assay._web.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, SessionCodec, authenticate
from assay._web.pages import (
    HERE,
    UI,
    checked_form,
    current_user,
    first_time,
    make_env,
    redirect,
    render,
    require_admin,
    session_of,
    step_views,
    ui_state,
)
from assay.annotations import Annotation, add_annotations, add_criterion, get_criterion, list_annotations, list_criteria
from assay.annotations.agreement import ADJUDICATION_SOURCE, human_agreement, is_stale
from assay.annotations.queue import claim_next, queue_status, set_queue, signature_criterion, unit_annotations
from assay.exceptions import NotFoundError, UsageError
from assay.settings import Settings
from assay.signals import FailureSignal, assess, unit_signals
from assay.signatures import Signature, list_signatures, severe_queue
from assay.traces import Step, step_timeline
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
    app.include_router(audit_router)  # the judge-audit pages (assay.suite.audit)


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
    """Check name and password; on success a new session (fresh CSRF token)."""
    session = session_of(request)
    if session is None:
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    form = await checked_form(request, session)
    account = authenticate(ui_state(request).store, form.get("name", ""), form.get("password", ""))
    if account is None:
        return render(request, "login.html", session, status=401, next=_safe_next(form.get("next", "/")),
                      error="Wrong name or password.")
    resp = redirect(_safe_next(form.get("next", "/")))
    _set_cookie(resp, ui_state(request).codec.dump(account.name))
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
def signatures_page(request: Request, env: str = "") -> Response:
    """Signatures ranked by impact with volume, share, environments, review progress and criterion status;
    ``?env=NAME`` keeps the signatures with members in that environment."""
    user, session = current_user(request)
    store = ui_state(request).store
    rows = []
    for sig in list_signatures(store, prices=ui_state(request).settings.prices):
        if env and env not in sig.environments:
            continue
        queue = queue_status(store, sig.id)
        rows.append({"sig": sig, "queue": queue})
    return render(request, "signatures.html", session, user=user, rows=rows, env=env,
                  environments=environments(store))


@router.get("/signatures/{sid}", response_class=HTMLResponse)
def queue_page(request: Request, sid: int, message: str = "") -> Response:
    """One signature's queue: items, who labelled them, progress per annotator."""
    user, session = current_user(request)
    store = ui_state(request).store
    sig = _signature(store, sid)
    return render(request, "queue.html", session, user=user, sig=sig, queue=queue_status(store, sid),
                  message=message)


@router.get("/signatures/{sid}/progress", response_class=HTMLResponse)
def queue_progress(request: Request, sid: int) -> Response:
    """The queue's progress fragment (items, who labelled them, per annotator); htmx polls it."""
    user, session = current_user(request)
    store = ui_state(request).store
    sig = _signature(store, sid)
    return render(request, "_progress.html", session, user=user, sig=sig, queue=queue_status(store, sid))


def _signature(store: Store, sid: int) -> Signature:
    """The signature (retired ones too); 404 when there is none."""
    for sig in list_signatures(store, include_retired=True):
        if sig.id == sid:
            return sig
    raise HTTPException(status_code=404, detail=f"no signature {sid}")


@router.post("/signatures/{sid}")
async def queue_settings(request: Request, sid: int) -> Response:
    """Admin: set the queue size and K."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    _signature(ui_state(request).store, sid)
    try:
        set_queue(ui_state(request).store, sid, int(form.get("size", "10")), int(form.get("k", "2")))
    except (UsageError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return redirect(f"/signatures/{sid}")


@router.get("/signatures/{sid}/next")
def next_item(request: Request, sid: int, after: str | None = None) -> Response:
    """Reserve the caller's next item of the queue and go there; back to the queue when none is left."""
    user, _ = current_user(request)
    try:
        unit_id = claim_next(ui_state(request).store, sid, user.name, after)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no signature {sid}") from None
    if unit_id is None:
        return redirect(f"/signatures/{sid}?message=" + quote("Nothing left for you in this queue."))
    return redirect(f"/review/{quote(unit_id, safe='')}?sig={sid}")


# --- review ---------------------------------------------------------------------------------
@router.get("/review/{unit_id:path}", response_class=HTMLResponse)
def review_page(request: Request, unit_id: str, sig: int | None = None, all: bool = False) -> Response:  # noqa: A002
    """The unit's step timeline and the label form. The first ``INITIAL_STEPS`` steps come with the
    page, the rest load right after it (``/timeline/...``); ``all=1`` renders every step at once. A
    trace unit merged into a session by a late session id redirects to the session."""
    user, session = current_user(request)
    store = ui_state(request).store
    unit = unit_row(store, unit_id)
    if unit is None:
        moved = resolve_unit_id(store, unit_id)
        if moved is None:
            raise HTTPException(status_code=404, detail="no such unit")
        return redirect(f"/review/{quote(moved, safe='')}" + (f"?sig={sig}" if sig is not None else ""))
    steps = _steps(request, unit.unit_id, unit.content_hash)
    shown = step_views(steps if all else steps[:INITIAL_STEPS], first_time(steps))
    criterion = signature_criterion(store, sig) if sig is not None else None
    labels = [(a, criterion is not None and a.criterion == criterion.name and is_stale(a, criterion))
              for a in unit_annotations(store, [unit_id])]
    prev = nxt = None
    if sig is not None:
        try:
            ids = [item.unit_id for item in queue_status(store, sig).items]
        except NotFoundError:
            raise HTTPException(status_code=404, detail=f"no signature {sig}") from None
        if unit_id in ids:
            i = ids.index(unit_id)
            prev = ids[i - 1] if i > 0 else None
            nxt = ids[i + 1] if i + 1 < len(ids) else None
    mine = [a for a, _ in labels if a.annotator == user.name]
    usage = unit_usages(store, [unit.unit_id], ui_state(request).settings.prices).get(unit.unit_id)
    signals = unit_signals(store, [unit.unit_id])[unit.unit_id]
    return render(request, "review.html", session, user=user, unit=unit, steps=shown, total=len(steps),
                  usage=usage_summary(usage) if usage is not None else None,
                  next_start=len(shown) if len(shown) < len(steps) else None, unit_id=unit.unit_id, sig=sig,
                  criterion=criterion, labels=labels, prev=prev, next=nxt, mine=mine[-1] if mine else None,
                  signals_at=_by_step(signals), unit_signals=[x for x in signals if x.step is None],
                  n_signals=len(signals),
                  failure=assess(unit.unit_id, signals, store.signals),
                  failed=unit.unit_id in store.failed_among([unit.unit_id]),
                  default_env=store.environments.default or "none")


def _by_step(signals: list[FailureSignal]) -> dict[int, list[FailureSignal]]:
    """Signals that point to a step, by its index (the review page marks them on the timeline)."""
    out: dict[int, list[FailureSignal]] = defaultdict(list)
    for x in signals:
        if x.step is not None:
            out[x.step].append(x)
    return dict(out)


def _steps(request: Request, unit_id: str, content_hash: str) -> list[Step]:
    """The unit's step timeline, from the in-process cache when its content is unchanged."""
    store = ui_state(request).store
    return ui_state(request).timelines.get(unit_id, content_hash, lambda: step_timeline(load_unit(store, unit_id)))


@router.get("/timeline/{unit_id:path}", response_class=HTMLResponse)
def timeline_chunk(request: Request, unit_id: str, start: int = 0, sig: int | None = None) -> Response:
    """``CHUNK_STEPS`` steps of a unit's timeline from ``start`` (0-based), then the loader of the next
    chunk; what the review page fetches after it loaded (htmx)."""
    _, session = current_user(request)
    unit = unit_row(ui_state(request).store, unit_id)
    if unit is None:
        raise HTTPException(status_code=404, detail="no such unit")
    steps = _steps(request, unit.unit_id, unit.content_hash)
    start = max(0, start)
    shown = step_views(steps[start:start + CHUNK_STEPS], first_time(steps))
    end = start + len(shown)
    signals = unit_signals(ui_state(request).store, [unit.unit_id])[unit.unit_id]
    return render(request, "_steps.html", session, steps=shown, total=len(steps), unit_id=unit.unit_id, sig=sig,
                  next_start=end if end < len(steps) else None, signals_at=_by_step(signals))


@router.post("/review/{unit_id:path}")
async def label(request: Request, unit_id: str, sig: int | None = None) -> Response:
    """Append one label (a correction is a new record) and go to the caller's next item."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    store = ui_state(request).store
    criterion = signature_criterion(store, sig) if sig is not None else None
    try:
        severity = int(form["severity"]) if form.get("severity") else None
        annotation = Annotation(unit_id=unit_id, annotator=user.name, label=form.get("label", ""),
                                severity=severity, rationale=form.get("rationale", "").strip(),
                                criterion=criterion.name if criterion else None,
                                criterion_version=criterion.version if criterion else None,
                                source="ui", extra={"signature_id": sig} if sig is not None else {})
        add_annotations(store, [annotation])
    except (ValidationError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"bad label: {str(exc).splitlines()[0]}") from None
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    if sig is None:
        return redirect(f"/review/{quote(unit_id, safe='')}")
    return redirect(f"/signatures/{sig}/next?after={quote(unit_id, safe='')}")


# --- criteria -------------------------------------------------------------------------------
@router.get("/signatures/{sid}/criterion", response_class=HTMLResponse)
def criterion_page(request: Request, sid: int) -> Response:
    """The signature's criterion, its version, and how many labels are stale."""
    user, session = current_user(request)
    store = ui_state(request).store
    sig = _signature(store, sid)
    criterion = signature_criterion(store, sid)
    stale = current = 0
    if criterion is not None:
        for a in list_annotations(store, criterion.name):
            stale += is_stale(a, criterion)
            current += not is_stale(a, criterion)
    return render(request, "criterion.html", session, user=user, sig=sig, criterion=criterion,
                  stale=stale, current=current)


@router.post("/signatures/{sid}/criterion")
async def save_criterion(request: Request, sid: int) -> Response:
    """Admin: write the criterion (a new version when the text changed)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    _signature(store, sid)
    existing = signature_criterion(store, sid)
    name = existing.name if existing else (form.get("name", "").strip() or f"signature-{sid}")
    try:
        add_criterion(store, form.get("text", ""), name=name, signature_id=sid)
    except UsageError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return redirect(f"/signatures/{sid}/criterion")


# --- agreement and adjudication --------------------------------------------------------------
@router.get("/agreement", response_class=HTMLResponse)
def agreement_page(request: Request) -> Response:
    """Human-human agreement per criterion."""
    user, session = current_user(request)
    store = ui_state(request).store
    annotations = list_annotations(store)
    rows = [human_agreement(annotations, c) for c in list_criteria(store)]
    return render(request, "agreement.html", session, user=user, rows=rows)


@router.get("/agreement/{name}", response_class=HTMLResponse)
def agreement_detail(request: Request, name: str) -> Response:
    """One criterion's agreement and its disagreement list."""
    user, session = current_user(request)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="no such criterion") from None
    return render(request, "agreement_detail.html", session, user=user, criterion=criterion,
                  row=human_agreement(list_annotations(store, criterion.name), criterion))


@router.get("/adjudicate/{name}/{unit_id:path}", response_class=HTMLResponse)
def adjudicate_page(request: Request, name: str, unit_id: str) -> Response:
    """The disagreeing labels of one unit and, for admins, the final-label form."""
    user, session = current_user(request)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="no such criterion") from None
    labels = [a for a in unit_annotations(store, [unit_id]) if a.criterion == criterion.name]
    return render(request, "adjudicate.html", session, user=user, criterion=criterion, unit_id=unit_id,
                  labels=[(a, is_stale(a, criterion)) for a in labels])


@router.post("/adjudicate/{name}/{unit_id:path}")
async def adjudicate(request: Request, name: str, unit_id: str) -> Response:
    """Admin: record the final label with a reason (an append-only record, source ``adjudication``)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
        if not form.get("rationale", "").strip():
            raise ValueError("a reason is required")
        severity = int(form["severity"]) if form.get("severity") else None
        add_annotations(store, [Annotation(
            unit_id=unit_id, annotator=user.name, label=form.get("label", ""),
            severity=severity, rationale=form["rationale"].strip(), criterion=criterion.name,
            criterion_version=criterion.version, source=ADJUDICATION_SOURCE)])
    except (ValidationError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"bad adjudication: {str(exc).splitlines()[0]}") from None
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return redirect(f"/agreement/{quote(name, safe='')}")


@router.get("/severe", response_class=HTMLResponse)
def severe_page(request: Request) -> Response:
    """The rare-severe inbox: units flagged severe, whatever their signature's size."""
    user, session = current_user(request)
    return render(request, "severe.html", session, user=user, items=severe_queue(ui_state(request).store))
