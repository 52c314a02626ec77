"""The admin page: accounts and API keys, one pass of the online worker, a trace file upload, and the audit
record of the app's actions. Admins only; every action appends an audit record (no password or key in it).

    /admin                     accounts, API keys, worker, upload, the latest audit records
    POST /admin/users          add an account (or reset its password and role)
    POST /admin/keys           create an API key (shown once, on the page that answers)
    POST /admin/keys/revoke    revoke a key by its prefix
    POST /admin/worker         score what is complete now with every active evaluator (``assay worker --once``),
                               in the background
    POST /admin/ingest         ingest one uploaded trace file (``assay ingest``; up to MAX_UPLOAD_BYTES)
"""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from assay._store.audit import list_audit, record_audit
from assay._web.auth import ROLES, Account, add_user, create_api_key, csrf_ok, list_api_keys, list_users, revoke_api_key
from assay._web.jobs import Job, jobs_of
from assay._web.pages import (
    UI,
    checked_form,
    client_address,
    current_user,
    redirect,
    render,
    require_admin,
    ui_state,
)
from assay.exceptions import NotFoundError, UsageError
from assay.signals import DetectingSink
from assay.suite.online import OnlineWorker
from assay.traces.ingest import IngestResult, ingest_paths
from assay.traces.readers import SUFFIXES

admin_router = APIRouter()

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""The largest trace file the page ingests (bigger ones: ``assay ingest`` on the server)."""


def _admin(request: Request) -> tuple[Account, dict[str, str]]:
    user, session = current_user(request)
    require_admin(user)
    return user, session


def _page(request: Request, session: dict[str, str], user: Account, status: int = 200, **extra: Any) -> Response:
    store = ui_state(request).store
    return render(request, "admin.html", session, status=status, user=user, users=list_users(store),
                  keys=list_api_keys(store), audit=list_audit(store, limit=100), roles=ROLES,
                  max_upload_mb=MAX_UPLOAD_BYTES // (1024 * 1024), **extra)


@admin_router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, message: str = "", job: str | None = None) -> Response:
    """Accounts, keys, the worker, the upload form and the audit record."""
    user, session = _admin(request)
    return _page(request, session, user, message=message, job=jobs_of(request).get(job) if job else None)


@admin_router.post("/admin/users")
async def add_account(request: Request) -> Response:
    """Add an account or reset one's password and role (Argon2id, as ``assay users add``)."""
    user, session = _admin(request)
    form = await checked_form(request, session)
    name, role = form.get("name", "").strip(), form.get("role", "annotator")
    try:
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}: use admin or annotator")
        account = add_user(ui_state(request).store, name, form.get("password", ""), "admin" if role == "admin"
                           else "annotator")
    except UsageError as exc:
        return _page(request, session, user, status=400, error=str(exc))
    record_audit(ui_state(request).store, user.name, "user.add", f"user:{account.name}", {"role": account.role},
                 client=client_address(request))
    return redirect(f"/admin?message=user+{account.name}+({account.role})+saved")


@admin_router.post("/admin/keys", response_class=HTMLResponse)
async def add_key(request: Request) -> Response:
    """Create an API key and show it once (only its SHA-256 is stored)."""
    user, session = _admin(request)
    form = await checked_form(request, session)
    owner = form.get("owner", "").strip()[:200]
    key = create_api_key(ui_state(request).store, owner)
    record_audit(ui_state(request).store, user.name, "key.create", f"key:{key[:12]}", {"owner": owner},
                 client=client_address(request))
    return _page(request, session, user, new_key=key, new_key_owner=owner)


@admin_router.post("/admin/keys/revoke")
async def revoke_key(request: Request) -> Response:
    """Revoke the key whose prefix is given."""
    user, session = _admin(request)
    form = await checked_form(request, session)
    prefix = form.get("prefix", "").strip()
    try:
        revoke_api_key(ui_state(request).store, prefix)
    except NotFoundError as exc:
        return _page(request, session, user, status=404, error=str(exc))
    except UsageError as exc:
        return _page(request, session, user, status=400, error=str(exc))
    record_audit(ui_state(request).store, user.name, "key.revoke", f"key:{prefix[:12]}", {},
                 client=client_address(request))
    return redirect(f"/admin?message=revoked+the+key+starting+{prefix[:12]}")


def _worker_pass(ui: UI, who: str, job: Job, client: str | None = None) -> str:
    """The worker job: one drained run of the online worker on the app's store, audited (``client``: the address
    of the request that started it)."""
    worker = OnlineWorker(ui.store, ui.settings, log=lambda line: setattr(job, "message", line))
    try:
        report = worker.run(threading.Event(), once=True)
    except Exception as exc:
        record_audit(ui.store, who, "worker.once", "worker", {"error": f"{type(exc).__name__}: {exc}"},
                     client=client)
        raise
    line = report.line()
    record_audit(ui.store, who, "worker.once", "worker", {"run_id": report.run_id, "scored": report.scored,
                                                          "failed": report.failed, "summary": line},
                 client=client)
    return line


@admin_router.post("/admin/worker")
async def run_worker_once(request: Request) -> Response:
    """Score what is complete now with every active evaluator, once (``assay worker --once``), in the background."""
    user, session = _admin(request)
    await checked_form(request, session)
    ui, client = ui_state(request), client_address(request)
    job = jobs_of(request).start("worker", "Online worker, one pass", user.name, "/admin",
                                 lambda job: _worker_pass(ui, user.name, job, client))
    return redirect(f"/admin?job={job.id}")


def _upload_name(filename: str) -> str:
    """A safe file name for an upload that keeps what format detection reads: its suffixes."""
    name = re.sub(r"[^\w.-]", "_", Path(filename or "upload").name).lstrip(".") or "upload"
    if not any(name.endswith(s) or name.endswith(s + ".gz") for s in SUFFIXES):
        raise HTTPException(status_code=400, detail=f"{filename!r}: give a {', '.join(SUFFIXES)} file (gzipped too)")
    return name


def _ingest(ui: UI, name: str, data: bytes) -> IngestResult:
    with tempfile.TemporaryDirectory(prefix="assay-upload-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return ingest_paths([path], DetectingSink(ui.store, ui.settings.signals))


@admin_router.post("/admin/ingest", response_class=HTMLResponse)
async def ingest_upload(request: Request) -> Response:
    """Ingest one uploaded trace file (any format ``assay ingest`` reads, detected from its content)."""
    user, session = _admin(request)
    async with request.form(max_files=1) as form:
        token = form.get("csrf_token")
        if not csrf_ok(session, token if isinstance(token, str) else None):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status_code=400, detail="no file uploaded")
        name = _upload_name(upload.filename or "")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(status_code=413, detail=f"{name} is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB: use "
                                                    "`assay ingest` on the server")
    ui = ui_state(request)
    result = await run_in_threadpool(_ingest, ui, name, data)
    record_audit(ui.store, user.name, "ingest", f"file:{name}",
                 {"bytes": len(data), "units_new": result.units_new, "units_updated": result.units_updated,
                  "spans_new": result.spans_new, "rejected": len(result.rejected)},
                 client=client_address(request))
    return _page(request, session, user, ingested=result, ingested_name=name,
                 status=200 if result.units_read else 422)
