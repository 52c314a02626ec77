"""Errors as pages in the app's style for the browser; JSON stays JSON for machines.

:func:`install_error_pages` adds exception handlers to the app: an ``HTTPException`` with a status of 400 or
more (404 no such unit, 403 admins only or a wrong CSRF token, 400 a bad form ...), a request that does not
validate (a path or query parameter of the wrong type: 400) and any unexpected exception (500) answer with
an HTML page carrying the message and a way back, with the app's security headers. Redirects (the 303 to
/login) pass through unchanged. Paths of machines keep FastAPI's JSON answers: the REST API (``/api/...``,
whose mounted app has its own handlers), the OTLP receiver (``/v1/...``), ``/health`` and static assets.
A 500 page never shows the exception (the server's log has it).
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from assay._web.auth import Account, get_user
from assay._web.pages import render, session_of
from assay.exceptions import NotFoundError

MACHINE_PREFIXES = ("/api/", "/api", "/v1/", "/health", "/static/", "/dashboard/assets/")
"""Paths answered in JSON (or as the protocol wants), never with an HTML page."""

_HINTS = {
    400: "The request did not fit: check what you typed or the link you followed.",
    401: "Log in first.",
    403: "You may not do this: it needs an admin, or the form was too old (reload the page and try again).",
    404: "There is nothing here: the link may be old, or the unit, signature or criterion was removed.",
    405: "This address does not take that kind of request.",
    409: "This clashes with something that exists already.",
    429: "Too many attempts: wait a little, then try again.",
    500: "Something went wrong on the server. The error is in the server's log; try again, or tell your admin.",
}


def for_browser(request: Request) -> bool:
    """True for the app's pages (not the REST API, the OTLP receiver, /health or static files)."""
    path = request.url.path
    return not any(path == p.rstrip("/") or path.startswith(p) for p in MACHINE_PREFIXES)


def _viewer(request: Request) -> tuple[Account | None, dict[str, str] | None]:
    """The logged-in account for the page header, when there is one (never raises)."""
    try:
        session = session_of(request)
        if session and session["user"]:
            return get_user(request.app.state.assay_ui.store, session["user"]), session
        return None, session
    except (NotFoundError, AttributeError, KeyError):
        return None, None


def error_page(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The error page: status, its name, what went wrong (``detail``), a hint and links back."""
    user, session = _viewer(request)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return render(request, "error.html", session, status=status, headers=headers, user=user, code=status,
                  title=title, detail=detail, hint=_HINTS.get(status, ""))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 400 or not for_browser(request):
        return await http_exception_handler(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else "Error"
    return error_page(request, exc.status_code, detail, dict(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not for_browser(request):
        return await request_validation_exception_handler(request, exc)
    where = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
    return error_page(request, 400, f"Bad request: {where}")


async def _server_error(request: Request, exc: Exception) -> Response:
    if not for_browser(request):
        return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
    return error_page(request, 500, "Internal server error.")


def install_error_pages(app: FastAPI) -> None:
    """Answer errors of the app's pages with HTML pages (see the module docstring); needs the UI installed."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
