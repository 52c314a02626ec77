"""The annotation app: server-rendered pages (Jinja2, htmx) over the public packages.

Mount with ``install_ui(app, settings, store)``. Every page but ``/login`` needs a session;
every form carries the session's CSRF token; every response carries a strict
Content-Security-Policy (no inline script or style: trace content renders inert).

Routes (GET unless noted):
    /login, POST /login, POST /logout
    /                                   signatures ranked by impact, progress, criterion status
    /signatures/{sid}                   the queue: items, K, progress per annotator; POST (admin) sets size/K
    /signatures/{sid}/next              redirect to the caller's next item
    /review/{unit_id}?sig=SID           the step timeline and the label form; POST labels (append-only)
    /timeline/{unit_id}?start=N         the next steps of a long timeline (the review page loads them)
    /signatures/{sid}/criterion         criterion editor; POST (admin) writes a new version
    /agreement, /agreement/{name}       human-human agreement per criterion; disagreements
    /adjudicate/{name}/{unit_id}        POST (admin) records the final label with a reason
    /severe                             the rare-severe inbox
    /audit, /audit/{item_id}            the judge audit (see assay._web.audit_pages)
"""

from __future__ import annotations

import gc
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from assay._store import Store
from assay._store.spans import load_unit, resolve_unit_id, unit_row
from assay._web.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, Account, SessionCodec, authenticate, csrf_ok, get_user
from assay.annotations import Annotation, add_annotations, add_criterion, get_criterion, list_annotations, list_criteria
from assay.annotations.agreement import ADJUDICATION_SOURCE, human_agreement, is_stale
from assay.annotations.queue import claim_next, queue_status, set_queue, signature_criterion, unit_annotations
from assay.exceptions import NotFoundError, UsageError
from assay.settings import Settings
from assay.signatures import Signature, list_signatures, severe_queue
from assay.traces import Step, step_timeline

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
OPEN_CHARS = 4000
"""Steps longer than this start collapsed (errors, user and assistant turns always start open)."""

router = APIRouter()


@dataclass
class UI:
    """What the pages need: the store, the session codec and the template environment."""

    settings: Settings
    store: Store
    codec: SessionCodec
    env: Environment
    timelines: TimelineCache = field(default_factory=lambda: TimelineCache())


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class StepView:
    """One step as the review page shows it (computed once, so the template stays a plain loop)."""

    index: int
    kind: str
    tool_name: str | None
    is_error: bool
    body: str
    is_args: bool
    open: bool
    offset: str


def first_time(steps: list[Step]) -> int:
    """The earliest non-zero step time (ns), 0 when none: what step offsets count from."""
    return min((s.time_ns for s in steps if s.time_ns), default=0)


def step_views(steps: list[Step], t0: int | None = None) -> list[StepView]:
    """Steps with tool arguments pretty-printed, the open/closed state and the time since ``t0``
    (default: the first of ``steps``; give it when ``steps`` is a slice of a longer timeline)."""
    t0 = first_time(steps) if t0 is None else t0
    out = []
    for s in steps:
        is_args = s.kind == "tool_call" and s.arguments is not None
        body = _pretty(s.arguments) if is_args else s.text
        opened = s.is_error or s.kind in ("user", "assistant") or len(body) < OPEN_CHARS
        out.append(StepView(index=s.index, kind=s.kind, tool_name=s.tool_name, is_error=s.is_error, body=body,
                            is_args=is_args, open=opened,
                            offset=f"+{(s.time_ns - t0) / 1e9:.3f} s" if t0 and s.time_ns else ""))
    return out


INITIAL_STEPS = 200
"""Steps rendered with the review page; the rest load right after it, ``CHUNK_STEPS`` at a time
(htmx ``hx-trigger="load"``; ``?all=1`` renders every step at once, the no-JavaScript fallback)."""
CHUNK_STEPS = 400


class TimelineCache:
    """In-process LRU of step timelines per ``(unit id, content hash)``: a unit's timeline is built
    once per content version, whoever asks (annotators, the page's step chunks); the views (pretty
    JSON) are made only for the steps rendered. Thread-safe.

    Args:
        size: units kept (each holds its steps' text, about the size of the unit's content).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], list[Step]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, unit_id: str, content_hash: str, build: Callable[[], list[Step]]) -> list[Step]:
        """The cached steps, else ``build()`` (cached unless the hash is empty, i.e. unknown)."""
        key = (unit_id, content_hash)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        steps = build()
        if content_hash:
            with self._lock:
                self._items[key] = steps
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return steps

    def clear(self) -> None:
        """Forget everything (the benchmark measures cold requests this way)."""
        with self._lock:
            self._items.clear()


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


def _make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["pretty"] = _pretty
    return env


def install_ui(app: FastAPI, settings: Settings, store: Store) -> None:
    """Mount the annotation app on ``app`` at ``/`` (pages) and ``/static`` (htmx, JS, CSS)."""
    app.state.assay_ui = UI(settings=settings, store=store, codec=SessionCodec(settings.session_secret),
                            env=_make_env())
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="assay-static")
    app.router.on_startup.append(freeze_startup_heap)
    app.include_router(router)
    from assay._web.audit_pages import audit_router  # the judge-audit pages (assay.suite.audit)

    app.include_router(audit_router)


def _ui(request: Request) -> UI:
    ui: UI = request.app.state.assay_ui
    return ui


def _session(request: Request) -> dict[str, str] | None:
    return _ui(request).codec.load(request.cookies.get(SESSION_COOKIE))


def _user(request: Request) -> tuple[Account, dict[str, str]]:
    """The logged-in account and its session; a redirect to /login otherwise."""
    session = _session(request)
    if session and session["user"]:
        try:
            return get_user(_ui(request).store, session["user"]), session
        except NotFoundError:
            pass
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    raise HTTPException(status_code=303, headers={"Location": f"/login?next={target}"})


async def _form(request: Request, session: dict[str, str]) -> dict[str, str]:
    """The posted form, after checking its CSRF token (403 without a matching one)."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(session, data.get("csrf_token")):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    return data


def _admin(user: Account) -> None:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="admins only")


def _render(request: Request, template: str, session: dict[str, str] | None, status: int = 200,
            **context: Any) -> HTMLResponse:
    ui = _ui(request)
    html = ui.env.get_template(template).render(csrf_token=(session or {}).get("csrf", ""), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


# --- login ---------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    """The login form; starts an anonymous session so the form has a CSRF token."""
    session = _session(request)
    cookie = None
    if session is None:
        cookie = _ui(request).codec.dump("")
        session = _ui(request).codec.load(cookie)
    resp = _render(request, "login.html", session, next=_safe_next(next), error=None)
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
    session = _session(request)
    if session is None:
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    form = await _form(request, session)
    account = authenticate(_ui(request).store, form.get("name", ""), form.get("password", ""))
    if account is None:
        return _render(request, "login.html", session, status=401, next=_safe_next(form.get("next", "/")),
                       error="Wrong name or password.")
    resp = _redirect(_safe_next(form.get("next", "/")))
    _set_cookie(resp, _ui(request).codec.dump(account.name))
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    _, session = _user(request)
    await _form(request, session)
    resp = _redirect("/login")
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# --- signatures and queues -----------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def signatures_page(request: Request) -> Response:
    """Signatures ranked by impact with volume, share, review progress and criterion status."""
    user, session = _user(request)
    store = _ui(request).store
    rows = []
    for sig in list_signatures(store):
        queue = queue_status(store, sig.id)
        rows.append({"sig": sig, "queue": queue})
    return _render(request, "signatures.html", session, user=user, rows=rows)


@router.get("/signatures/{sid}", response_class=HTMLResponse)
def queue_page(request: Request, sid: int, message: str = "") -> Response:
    """One signature's queue: items, who labelled them, progress per annotator."""
    user, session = _user(request)
    store = _ui(request).store
    sig = _signature(store, sid)
    return _render(request, "queue.html", session, user=user, sig=sig, queue=queue_status(store, sid),
                   message=message)


@router.get("/signatures/{sid}/progress", response_class=HTMLResponse)
def queue_progress(request: Request, sid: int) -> Response:
    """The queue's progress fragment (items, who labelled them, per annotator); htmx polls it."""
    user, session = _user(request)
    store = _ui(request).store
    sig = _signature(store, sid)
    return _render(request, "_progress.html", session, user=user, sig=sig, queue=queue_status(store, sid))


def _signature(store: Store, sid: int) -> Signature:
    """The signature (retired ones too); 404 when there is none."""
    for sig in list_signatures(store, include_retired=True):
        if sig.id == sid:
            return sig
    raise HTTPException(status_code=404, detail=f"no signature {sid}")


@router.post("/signatures/{sid}")
async def queue_settings(request: Request, sid: int) -> Response:
    """Admin: set the queue size and K."""
    user, session = _user(request)
    form = await _form(request, session)
    _admin(user)
    _signature(_ui(request).store, sid)
    try:
        set_queue(_ui(request).store, sid, int(form.get("size", "10")), int(form.get("k", "2")))
    except (UsageError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return _redirect(f"/signatures/{sid}")


@router.get("/signatures/{sid}/next")
def next_item(request: Request, sid: int, after: str | None = None) -> Response:
    """Reserve the caller's next item of the queue and go there; back to the queue when none is left."""
    user, _ = _user(request)
    try:
        unit_id = claim_next(_ui(request).store, sid, user.name, after)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no signature {sid}") from None
    if unit_id is None:
        return _redirect(f"/signatures/{sid}?message=" + quote("Nothing left for you in this queue."))
    return _redirect(f"/review/{quote(unit_id, safe='')}?sig={sid}")


# --- review ---------------------------------------------------------------------------------
@router.get("/review/{unit_id:path}", response_class=HTMLResponse)
def review_page(request: Request, unit_id: str, sig: int | None = None, all: bool = False) -> Response:  # noqa: A002
    """The unit's step timeline and the label form. The first ``INITIAL_STEPS`` steps come with the
    page, the rest load right after it (``/timeline/...``); ``all=1`` renders every step at once. A
    trace unit merged into a session by a late session id redirects to the session."""
    user, session = _user(request)
    store = _ui(request).store
    unit = unit_row(store, unit_id)
    if unit is None:
        moved = resolve_unit_id(store, unit_id)
        if moved is None:
            raise HTTPException(status_code=404, detail="no such unit")
        return _redirect(f"/review/{quote(moved, safe='')}" + (f"?sig={sig}" if sig is not None else ""))
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
    return _render(request, "review.html", session, user=user, unit=unit, steps=shown, total=len(steps),
                   next_start=len(shown) if len(shown) < len(steps) else None, unit_id=unit.unit_id, sig=sig,
                   criterion=criterion, labels=labels, prev=prev, next=nxt, mine=mine[-1] if mine else None)


def _steps(request: Request, unit_id: str, content_hash: str) -> list[Step]:
    """The unit's step timeline, from the in-process cache when its content is unchanged."""
    store = _ui(request).store
    return _ui(request).timelines.get(unit_id, content_hash, lambda: step_timeline(load_unit(store, unit_id)))


@router.get("/timeline/{unit_id:path}", response_class=HTMLResponse)
def timeline_chunk(request: Request, unit_id: str, start: int = 0, sig: int | None = None) -> Response:
    """``CHUNK_STEPS`` steps of a unit's timeline from ``start`` (0-based), then the loader of the next
    chunk; what the review page fetches after it loaded (htmx)."""
    _, session = _user(request)
    unit = unit_row(_ui(request).store, unit_id)
    if unit is None:
        raise HTTPException(status_code=404, detail="no such unit")
    steps = _steps(request, unit.unit_id, unit.content_hash)
    start = max(0, start)
    shown = step_views(steps[start:start + CHUNK_STEPS], first_time(steps))
    end = start + len(shown)
    return _render(request, "_steps.html", session, steps=shown, total=len(steps), unit_id=unit.unit_id, sig=sig,
                   next_start=end if end < len(steps) else None)


@router.post("/review/{unit_id:path}")
async def label(request: Request, unit_id: str, sig: int | None = None) -> Response:
    """Append one label (a correction is a new record) and go to the caller's next item."""
    user, session = _user(request)
    form = await _form(request, session)
    store = _ui(request).store
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
        return _redirect(f"/review/{quote(unit_id, safe='')}")
    return _redirect(f"/signatures/{sig}/next?after={quote(unit_id, safe='')}")


# --- criteria -------------------------------------------------------------------------------
@router.get("/signatures/{sid}/criterion", response_class=HTMLResponse)
def criterion_page(request: Request, sid: int) -> Response:
    """The signature's criterion, its version, and how many labels are stale."""
    user, session = _user(request)
    store = _ui(request).store
    sig = _signature(store, sid)
    criterion = signature_criterion(store, sid)
    stale = current = 0
    if criterion is not None:
        for a in list_annotations(store, criterion.name):
            stale += is_stale(a, criterion)
            current += not is_stale(a, criterion)
    return _render(request, "criterion.html", session, user=user, sig=sig, criterion=criterion,
                   stale=stale, current=current)


@router.post("/signatures/{sid}/criterion")
async def save_criterion(request: Request, sid: int) -> Response:
    """Admin: write the criterion (a new version when the text changed)."""
    user, session = _user(request)
    form = await _form(request, session)
    _admin(user)
    store = _ui(request).store
    _signature(store, sid)
    existing = signature_criterion(store, sid)
    name = existing.name if existing else (form.get("name", "").strip() or f"signature-{sid}")
    try:
        add_criterion(store, form.get("text", ""), name=name, signature_id=sid)
    except UsageError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return _redirect(f"/signatures/{sid}/criterion")


# --- agreement and adjudication --------------------------------------------------------------
@router.get("/agreement", response_class=HTMLResponse)
def agreement_page(request: Request) -> Response:
    """Human-human agreement per criterion."""
    user, session = _user(request)
    store = _ui(request).store
    annotations = list_annotations(store)
    rows = [human_agreement(annotations, c) for c in list_criteria(store)]
    return _render(request, "agreement.html", session, user=user, rows=rows)


@router.get("/agreement/{name}", response_class=HTMLResponse)
def agreement_detail(request: Request, name: str) -> Response:
    """One criterion's agreement and its disagreement list."""
    user, session = _user(request)
    store = _ui(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="no such criterion") from None
    return _render(request, "agreement_detail.html", session, user=user, criterion=criterion,
                   row=human_agreement(list_annotations(store, criterion.name), criterion))


@router.get("/adjudicate/{name}/{unit_id:path}", response_class=HTMLResponse)
def adjudicate_page(request: Request, name: str, unit_id: str) -> Response:
    """The disagreeing labels of one unit and, for admins, the final-label form."""
    user, session = _user(request)
    store = _ui(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="no such criterion") from None
    labels = [a for a in unit_annotations(store, [unit_id]) if a.criterion == criterion.name]
    return _render(request, "adjudicate.html", session, user=user, criterion=criterion, unit_id=unit_id,
                   labels=[(a, is_stale(a, criterion)) for a in labels])


@router.post("/adjudicate/{name}/{unit_id:path}")
async def adjudicate(request: Request, name: str, unit_id: str) -> Response:
    """Admin: record the final label with a reason (an append-only record, source ``adjudication``)."""
    user, session = _user(request)
    form = await _form(request, session)
    _admin(user)
    store = _ui(request).store
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
    return _redirect(f"/agreement/{quote(name, safe='')}")


@router.get("/severe", response_class=HTMLResponse)
def severe_page(request: Request) -> Response:
    """The rare-severe inbox: units flagged severe, whatever their signature's size."""
    user, session = _user(request)
    return _render(request, "severe.html", session, user=user, items=severe_queue(_ui(request).store))
