"""What every page of the annotation app shares: the app state, the logged-in user, CSRF-checked forms,
rendering with the security headers, and step views of a timeline.

Page modules (:mod:`assay._web.audit_pages`, :mod:`assay._web.dashboard`, :mod:`assay._web.review_context`,
:mod:`assay._web.loop_pages`, :mod:`assay._web.admin_pages`, :mod:`assay._web.queue_pages`,
:mod:`assay._web.search`) import from here, never from each other; :mod:`assay._web.ui` mounts them.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from assay._store import Store
from assay._web.auth import SESSION_COOKIE, Account, SessionCodec, csrf_ok, get_user
from assay._web.rendering import json_html, markdown_html, parse_json
from assay._web.signin import SignInThrottle
from assay.exceptions import NotFoundError
from assay.settings import Settings
from assay.signatures import Signature, list_signatures
from assay.signatures.impact import RECENCY_HALF_LIFE_DAYS, SEVERITY_WEIGHT
from assay.traces import Step
from assay.traces.media import MediaPart

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
OPEN_CHARS = 4000
"""Steps longer than this start collapsed (errors, user and assistant turns always start open)."""
T = TypeVar("T")
SEVERITY: dict[int, tuple[str, str]] = {
    1: ("minor", "cosmetic or stylistic: the user still got what they needed"),
    2: ("moderate", "the user had to work around it, repeat themselves or wait (a failure's default)"),
    3: ("major", "the task failed, or the agent did something wrong the user will notice"),
    4: ("critical", "harm: money, data, safety, privacy or a policy breach; must never happen"),
}
"""Severity levels as the pages explain them (1 minor .. 4 critical, as labels and impact use them)."""
IMPACT_HELP = (f"Impact adds up, over the signature's units, severity weight × recency. The weight is "
               f"{', '.join(f'{w:g} for severity {n}' for n, w in SEVERITY_WEIGHT.items())}: a unit's severity is "
               "the latest human label's, before anyone labels it 2 (3 when it crashed). Recency halves every "
               f"{RECENCY_HALF_LIFE_DAYS:g} days before the newest failure. So impact moves as people label: a "
               "unit labelled severity 3 counts 2 instead of 1.")
"""How impact is computed (:mod:`assay.signatures.impact`), in words, for the pages that show it."""


@dataclass
class UI:
    """What the pages need: the store, the session codec and the template environment."""

    settings: Settings
    store: Store
    codec: SessionCodec
    env: Environment
    timelines: TimelineCache = field(default_factory=lambda: TimelineCache())
    throttle: SignInThrottle = field(default_factory=SignInThrottle)


def pretty(value: Any) -> str:
    """``value`` as indented, key-sorted JSON (non-ASCII kept; unknown types as ``str``)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class StepView:
    """One step as the review page shows it (computed once, so the template stays a plain loop).

    ``html`` is the step's content rendered (assistant markdown, JSON folded by key; see
    :mod:`assay._web.rendering`), None where ``body`` shows as preformatted text (an input/output step's
    JSON keeps its pretty-printed ``body`` as well, ``is_args`` set). ``error``/``stacktrace`` are a failed
    span's (the error only when the content does not already say it), ``media`` its parts. A system prompt's
    ``body`` is empty: the page links to it (``chars`` long) instead of repeating it in the timeline.
    """

    index: int
    kind: str
    tool_name: str | None
    is_error: bool
    body: str
    is_args: bool
    open: bool
    offset: str
    html: Markup | None = None
    chars: int = 0
    in_progress: bool = False
    span_name: str | None = None
    agent: str | None = None
    error: str | None = None
    stacktrace: str | None = None
    media: tuple[MediaPart, ...] = ()


def first_time(steps: list[Step]) -> int:
    """The earliest non-zero step time (ns), 0 when none: what step offsets count from."""
    return min((s.time_ns for s in steps if s.time_ns), default=0)


def _json_value(text: str, mime_type: str | None) -> Any | None:
    """An input/output step's JSON value (object or array) when its mime type says JSON
    (``application/json``), or none is given and it parses as one; None to show it as text
    (``text/plain`` always is)."""
    if mime_type and "json" not in mime_type:
        return None
    return parse_json(text)


def step_views(steps: list[Step], t0: int | None = None, timed: bool = True) -> list[StepView]:
    """Steps with assistant markdown rendered, tool arguments and JSON results folded by key, the
    open/closed state and the time since ``t0`` (default: the first of ``steps``; give it when ``steps``
    is a slice of a longer timeline). ``timed=False`` (times numbered by a reader, e.g. a replayed
    benchmark run) shows no offsets: they would mean nothing."""
    t0 = first_time(steps) if t0 is None else t0
    return [_view(s, t0 if timed else 0) for s in steps]


def _step_json(s: Step) -> Any | None:
    """The step's content as a JSON value to fold by key, or None."""
    if s.kind in ("tool_result", "retrieval", "state"):
        return parse_json(s.text)
    if s.kind in ("input", "output"):
        return _json_value(s.text, s.mime_type)
    return None


def _view(s: Step, t0: int) -> StepView:
    is_args = s.kind == "tool_call" and s.arguments is not None
    offset = f"+{(s.time_ns - t0) / 1e9:.3f} s" if t0 and s.time_ns else ""
    always_open = s.is_error or s.kind in ("user", "assistant", "system")
    extra: dict[str, Any] = {"in_progress": s.in_progress, "span_name": s.span_name, "agent": s.agent,
                             "stacktrace": s.stacktrace, "media": s.media, "chars": len(s.text), "offset": offset}
    if s.kind == "system":
        return StepView(index=s.index, kind=s.kind, tool_name=s.tool_name, is_error=s.is_error, body="",
                        is_args=False, open=True, error=s.error, **extra)
    html: Markup | None = None
    body = ""
    if is_args and s.arguments:
        html = json_html(s.arguments)
    elif s.kind == "assistant" and not s.is_error:
        html = markdown_html(s.text)
    elif (parsed := _step_json(s)) is not None:
        html = json_html(parsed)
        if s.kind in ("input", "output"):  # JSON by its mime type: the plain form kept, pretty-printed
            body, is_args = pretty(parsed), True
    else:
        body = pretty(s.arguments) if is_args else s.text
    size = len(s.text) if html is not None else len(body)
    return StepView(index=s.index, kind=s.kind, tool_name=s.tool_name, is_error=s.is_error, body=body,
                    is_args=is_args, open=always_open or size < OPEN_CHARS, html=html,
                    error=s.error if s.error and s.error not in s.text + body else None, **extra)


class TimelineCache:
    """In-process LRU of what is read off a unit per ``(unit id, content hash)`` (its step timeline
    and reading context): built once per content version, whoever asks (annotators, the page's step
    chunks); the views (markdown, folded JSON) are made only for the steps rendered. Thread-safe.

    Args:
        size: units kept (each holds its steps' text, about the size of the unit's content).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, unit_id: str, content_hash: str, build: Callable[[], T]) -> T:
        """The cached steps, else ``build()`` (cached unless the hash is empty, i.e. unknown)."""
        key = (unit_id, content_hash)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                found: T = self._items[key]
                return found
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


def make_env() -> Environment:
    """The pages' Jinja2 environment: ``templates/`` beside this module, autoescaped, filter ``pretty``,
    globals ``severity_levels`` (:data:`SEVERITY`) and ``impact_help`` (:data:`IMPACT_HELP`)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["pretty"] = pretty
    env.globals.update(severity_levels=SEVERITY, impact_help=IMPACT_HELP)
    return env


def ui_state(request: Request) -> UI:
    """The :class:`UI` that ``install_ui`` put on the app."""
    ui: UI = request.app.state.assay_ui
    return ui


def session_of(request: Request) -> dict[str, str] | None:
    """The signed session cookie's content (``user``, ``csrf``), None when missing, forged or expired."""
    return ui_state(request).codec.load(request.cookies.get(SESSION_COOKIE))


def current_user(request: Request) -> tuple[Account, dict[str, str]]:
    """The logged-in account and its session; a redirect to /login otherwise."""
    session = session_of(request)
    if session and session["user"]:
        try:
            return get_user(ui_state(request).store, session["user"]), session
        except NotFoundError:
            pass
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    raise HTTPException(status_code=303, headers={"Location": f"/login?next={target}"})


async def checked_form(request: Request, session: dict[str, str]) -> dict[str, str]:
    """The posted form, after checking its CSRF token (403 without a matching one)."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(session, data.get("csrf_token")):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    return data


def client_address(request: Request) -> str | None:
    """The client's address as the server sees it (the peer; see :mod:`assay._web.signin` behind a proxy)."""
    return request.client.host if request.client else None


def signature_or_404(store: Store, sid: int) -> Signature:
    """The signature (retired ones too); 404 when there is none."""
    for sig in list_signatures(store, include_retired=True):
        if sig.id == sid:
            return sig
    raise HTTPException(status_code=404, detail=f"no signature {sid}")


def require_admin(user: Account) -> None:
    """403 unless ``user`` is an admin."""
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="admins only")


def render(request: Request, template: str, session: dict[str, str] | None, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` and the session's CSRF token, with :data:`SECURITY_HEADERS`
    (and ``headers``)."""
    ui = ui_state(request)
    html = ui.env.get_template(template).render(csrf_token=(session or {}).get("csrf", ""), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS | (headers or {}))


def redirect(url: str) -> RedirectResponse:
    """A 303 to ``url`` (after a POST, or to the next page), with :data:`SECURITY_HEADERS`."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
