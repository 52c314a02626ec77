"""The loop from the browser: from a criterion with enough labels, draft evaluators, read their YAML and the
diff to the last version, calibrate (a background job, its progress polled), activate a certified version
or force one with a recorded reason, see the lineage, and export the labels as a versioned dataset. Each
action appends an audit record (``audit_log``, :mod:`assay._store.audit`). Routes (GET unless noted; login
required, the POSTs admins only):

    /criteria/{id or name}            (assay._web.criteria_pages) shows the loop's part: labels per class, the
                                      criterion's evaluator files, drafting, exported datasets (:func:`loop_context`)
    POST /criteria/{name}/draft       draft evaluators (``assay evaluators draft``): files in evaluators/
    POST /criteria/{name}/export      the labels as a versioned dataset: datasets/NAME.vN.jsonl, with the
                                      step notes of its units beside it (NAME.vN.notes.jsonl)
    /datasets/{file}                  download an exported file
    /evaluators, /evaluators/{name}   evaluators; one's YAML, diff to the last version, calibration, lineage
    POST /evaluators/{name}/calibrate start a calibration job; the page polls /jobs/{id}
    POST /evaluators/{name}/activate  activate the calibrated version (certified), or force it with a reason
    /jobs/{id}                        a job's progress (htmx fragment; redirects to the result when done)
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from assay._store import Store
from assay._store.audit import list_audit, record_audit
from assay._store.tables import EvaluatorRow
from assay._web.jobs import Job, jobs_of
from assay._web.pages import (
    SECURITY_HEADERS,
    checked_form,
    client_address,
    current_user,
    redirect,
    render,
    require_admin,
    ui_state,
)
from assay.annotations import Criterion, get_criterion
from assay.annotations.step_notes import export_step_notes, step_notes
from assay.calibration import CalibrationReport, build_dataset, calibrate, export_dataset
from assay.calibration.calibrate import evaluator_record, read_calibration, save_evaluator_record
from assay.calibration.dataset import consolidate
from assay.calibration.draft import draft_evaluators
from assay.evaluators import EvaluatorDef, content_version, load_evaluator, load_evaluators, save_evaluator
from assay.evaluators.definition import readable_yaml
from assay.exceptions import AssayError, NotFoundError
from assay.models import JudgeClient, make_judge
from assay.settings import Settings

loop_router = APIRouter()

MIN_PER_LABEL = 3
"""Labelled items of each of pass and fail a criterion needs before drafting: the stratified split then
gives few-shot examples in train and both labels in the test split calibration decides on."""


def _criterion(store: Store, name: str) -> Criterion:
    try:
        return get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no criterion {name!r}") from None


def draft_readiness(crit: Criterion, balance: Counter[str]) -> str:
    """Why the criterion cannot be drafted from yet ("" when it can)."""
    if crit.scale.kind != "binary":
        return (f"{crit.name} is {crit.scale.kind}: drafts are written for binary (pass/fail) criteria; write the "
                "evaluator file by hand (README: an evaluator file)")
    short = [f"{MIN_PER_LABEL - balance.get(label, 0)} more {label}" for label in ("pass", "fail")
             if balance.get(label, 0) < MIN_PER_LABEL]
    return f"needs at least {MIN_PER_LABEL} pass and {MIN_PER_LABEL} fail items: {' and '.join(short)}" if short else ""


def evaluator_rows(store: Store, settings: Settings, criterion: str | None = None) -> list[dict[str, Any]]:
    """The evaluator files (of one criterion, when given) with their current version, its status
    (``uncalibrated`` without a record) and its calibration report (None: never calibrated)."""
    rows = []
    for defn in _evaluator_files(settings):
        if criterion is None or defn.criterion.name == criterion:
            rec = evaluator_record(store, defn)
            rows.append({"defn": defn, "version": content_version(defn), "status": rec.status if rec else
                         "uncalibrated", "report": rec.calibration if rec else None})
    return rows


def _evaluator_files(settings: Settings) -> list[EvaluatorDef]:
    folder = settings.evaluators_path()
    return load_evaluators(folder) if folder.exists() else []


def exported_files(settings: Settings, name: str) -> list[str]:
    """File names of the datasets (and their notes) exported for criterion ``name``, newest version first."""
    folder = settings.workspace / "datasets"
    files = sorted(folder.glob(f"{name}.v*.jsonl")) if folder.exists() else []
    return [p.name for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def loop_context(store: Store, settings: Settings, crit: Criterion) -> dict[str, Any]:
    """What a criterion's page shows of the loop (``templates/_criterion_loop.html``): labels per class (one per
    item, :func:`assay.calibration.dataset.consolidate`), whether it can be drafted from, its evaluator files
    and exported datasets."""
    items, ties, stale = consolidate(store, crit)
    balance = Counter(str(i.target) for i in items)
    return {"n_items": len(items), "balance": dict(balance), "ties": ties, "stale_left_out": stale,
            "not_ready": draft_readiness(crit, balance), "loop_evaluators": evaluator_rows(store, settings, crit.name),
            "exported": exported_files(settings, crit.name), "min_per_label": MIN_PER_LABEL}


def keep_version(store: Store, defn: EvaluatorDef) -> None:
    """Store a version of an evaluator as a draft record unless it has one (so diffs and lineage keep it)."""
    if evaluator_record(store, defn) is None:
        save_evaluator_record(store, defn, "draft", None)


def write_draft(store: Store, folder: Path, defn: EvaluatorDef, who: str, replace: bool = False,
                client: str | None = None) -> str:
    """Write a drafted evaluator's file, keeping the version it replaces in the store; one line of what happened.
    An existing, different file is kept unless ``replace`` (as ``assay evaluators draft --overwrite``)."""
    path = folder / f"{defn.name}.yaml"
    try:
        previous = load_evaluator(path) if path.exists() else None
    except AssayError:
        previous = None  # an unreadable file is replaced only when asked; its text is not a version
    version = content_version(defn)
    if previous is not None and content_version(previous) == version:
        return f"{defn.name}: unchanged (version {version})"
    if path.exists() and not replace:
        return f"{defn.name}: kept the existing file (tick 'replace' to write the new draft, version {version})"
    if previous is not None:
        keep_version(store, previous)
    save_evaluator(defn, path)
    keep_version(store, defn)
    before = content_version(previous) if previous is not None else None
    record_audit(store, who, "evaluator.draft", f"evaluator:{defn.name}",
                 {"version": version, "previous_version": before, "kind": defn.kind, "file": path.name,
                  "criterion": defn.criterion.name, "criterion_version": defn.criterion.version}, client=client)
    return f"{defn.name}: " + (f"new version {version} (was {before})" if before else f"drafted, version {version}")


@loop_router.post("/criteria/{name}/draft")
async def draft(request: Request, name: str) -> Response:
    """Admin: draft an llm_judge and code checks from the criterion (``assay evaluators draft``; an API judge
    words the rubric when one is configured, else the criterion text is the rubric) and write their files
    (an existing file only with ``replace=1``)."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    ui = ui_state(request)
    crit = _criterion(ui.store, name)
    items, _, _ = consolidate(ui.store, crit)
    why = draft_readiness(crit, Counter(str(i.target) for i in items))
    if why:
        raise HTTPException(status_code=400, detail=f"cannot draft yet: {why}")
    judge = make_judge(ui.settings.judge, ui.store) if ui.settings.judge.provider != "local" else None
    made = await run_in_threadpool(draft_evaluators, ui.store, crit.name, judge=judge)
    replace = form.get("replace") == "1"
    lines = [write_draft(ui.store, ui.settings.evaluators_path(), d, user.name, replace, client_address(request))
             for d in (made.judge, *made.checks)]
    return redirect(f"/criteria/{quote(crit.name, safe='')}?message=" + quote("; ".join(lines)))


@loop_router.post("/criteria/{name}/export")
async def export(request: Request, name: str) -> Response:
    """Admin: export the criterion's labels as a versioned, content-addressed dataset (JSONL) into the workspace's
    datasets/ folder, with the step notes (comments, corrected outputs) of its units in a file beside it."""
    user, session = current_user(request)
    await checked_form(request, session)
    require_admin(user)
    ui = ui_state(request)
    crit = _criterion(ui.store, name)
    ds = build_dataset(ui.store, crit.name)
    path = export_dataset(ds, ui.settings.workspace / "datasets" / f"{crit.name}.v{ds.version}.jsonl")
    units = sorted({u for i in ds.items for u in (i.unit_id, i.second_unit_id) if u})
    notes = step_notes(ui.store, units)
    notes_path = export_step_notes(notes, path.with_name(f"{crit.name}.v{ds.version}.notes.jsonl"))
    record_audit(ui.store, user.name, "dataset.export", f"criterion:{crit.name}",
                 {"dataset_version": ds.version, "content_hash": ds.content_hash, "items": len(ds.items),
                  "notes": len(notes), "files": [path.name, notes_path.name]},
                 client=client_address(request))
    return redirect(f"/criteria/{quote(crit.name, safe='')}?message=" + quote(
        f"exported dataset version {ds.version}: {len(ds.items)} items to {path.name}, {len(notes)} step notes "
        f"to {notes_path.name}"))


@loop_router.get("/datasets/{filename}")
def download(request: Request, filename: str) -> Response:
    """An exported dataset or notes file of the workspace's datasets/ folder."""
    current_user(request)
    folder = ui_state(request).settings.workspace / "datasets"
    path = folder / filename
    if "/" in filename or "\\" in filename or not filename.endswith(".jsonl") or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no exported file {filename!r}")
    return FileResponse(path, media_type="application/x-ndjson", filename=filename, headers=SECURITY_HEADERS)


# --- evaluators ----------------------------------------------------------------------------------
def _evaluator(settings: Settings, name: str) -> tuple[EvaluatorDef, Path]:
    for defn in _evaluator_files(settings):
        if defn.name == name:
            return defn, settings.evaluators_path() / f"{name}.yaml"
    raise HTTPException(status_code=404, detail=f"no evaluator file named {name!r} in evaluators/")


def stored_versions(store: Store, name: str) -> list[dict[str, Any]]:
    """Every stored version of an evaluator, oldest first: version, kind, status, when, override reason, its
    calibration report (None: never calibrated) and definition."""
    with store.session() as s:
        rows = list(s.scalars(select(EvaluatorRow).where(EvaluatorRow.name == name).order_by(EvaluatorRow.created_at)))
    out = []
    for r in rows:
        try:
            report = read_calibration(r.calibration)
        except ValidationError:
            report = None
        out.append({"version": r.version, "kind": r.kind, "status": r.status, "created_at": r.created_at,
                    "override_reason": r.override_reason, "report": report, "definition": r.definition})
    return out


def diff_to_previous(defn: EvaluatorDef, versions: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(the last stored version other than ``defn``'s, unified diff lines from it to ``defn``; none: (None, []))."""
    current = content_version(defn)
    older = [v for v in versions if v["version"] != current]
    if not older:
        return None, []
    try:
        before = EvaluatorDef.model_validate(older[-1]["definition"])
    except ValidationError:
        return older[-1]["version"], []
    lines = difflib.unified_diff(readable_yaml(before).splitlines(), readable_yaml(defn).splitlines(),
                                 fromfile=f"{defn.name}@{older[-1]['version']}", tofile=f"{defn.name}@{current}",
                                 lineterm="")
    return older[-1]["version"], list(lines)


@loop_router.get("/evaluators", response_class=HTMLResponse)
def evaluators_page(request: Request) -> Response:
    """Every evaluator file with the status of its current version."""
    user, session = current_user(request)
    ui = ui_state(request)
    return render(request, "evaluators.html", session, user=user, rows=evaluator_rows(ui.store, ui.settings))


@loop_router.get("/evaluators/{name}", response_class=HTMLResponse)
def evaluator_page(request: Request, name: str, job: str | None = None, message: str = "") -> Response:
    """One evaluator: its file, the diff to its last version, its calibration report and verdict, the actions
    (calibrate, activate, force), a running job's progress and the lineage (versions and audit records)."""
    user, session = current_user(request)
    ui = ui_state(request)
    defn, path = _evaluator(ui.settings, name)
    rec = evaluator_record(ui.store, defn)
    versions = stored_versions(ui.store, name)
    previous, diff = diff_to_previous(defn, versions)
    report = rec.calibration if rec else None
    return render(request, "evaluator.html", session, user=user, defn=defn, version=content_version(defn),
                  yaml_text=path.read_text(encoding="utf-8"), state=rec.status if rec else "uncalibrated",
                  override_reason=rec.override_reason if rec else None, report=report,
                  report_json=report.model_dump_json(indent=2) if report else "", previous=previous, diff=diff,
                  versions=versions[::-1], audit=list_audit(ui.store, target=f"evaluator:{name}"),
                  job=jobs_of(request).get(job) if job else None, message=message,
                  forceable=report is not None and report.test is not None and report.test.n > 0)


def _close(judge: JudgeClient | None) -> None:
    """Stop a judge's model process, if it has one (a local judge), through its wrappers."""
    while judge is not None:
        close = getattr(judge, "close", None)
        if callable(close):
            close()
        judge = getattr(judge, "inner", None)


def _calibrate(store: Store, settings: Settings, defn: EvaluatorDef, who: str, job: Job,
               client: str | None = None) -> str:
    """The calibration job: run ``calibrate`` (which sets the version's status by its verdict), audit the result
    (``client``: the address of the request that started it)."""
    judge = make_judge(settings.judge, store) if defn.uses_judge else None
    target = f"evaluator:{defn.name}"
    try:
        report = calibrate(store, defn, judge, settings.judge, progress=job.advance, min_kappa=settings.min_kappa)
    except Exception as exc:
        record_audit(store, who, "evaluator.calibrate", target,
                     {"version": content_version(defn), "error": f"{type(exc).__name__}: {exc}"}, client=client)
        raise
    finally:
        _close(judge)
    record_audit(store, who, "evaluator.calibrate", target,
                 {"version": report.evaluator_version, "dataset_version": report.dataset_version,
                  "run_id": report.run_id, "meets_threshold": report.meets_threshold, "status": report.status,
                  "notes": list(report.notes)}, client=client)
    return verdict_line(report)


def verdict_line(report: CalibrationReport) -> str:
    """The certification verdict in words, as the report says it."""
    if report.meets_threshold:
        return f"certified: it meets its threshold on the test split; status {report.status}"
    return f"not certified: {'; '.join(report.notes) or 'below its threshold'}; status {report.status}"


@loop_router.post("/evaluators/{name}/calibrate")
async def start_calibration(request: Request, name: str) -> Response:
    """Admin: calibrate the evaluator's current version on its criterion's labels, in the background."""
    user, session = current_user(request)
    await checked_form(request, session)
    require_admin(user)
    ui = ui_state(request)
    defn, _ = _evaluator(ui.settings, name)
    crit = _criterion(ui.store, defn.criterion.name)
    items, _, _ = consolidate(ui.store, crit)
    if not items:
        raise HTTPException(status_code=400, detail=f"criterion {crit.name!r} has no labelled units to calibrate on")
    calls = len(items) * (2 if defn.scale.kind == "pairwise" else 1)
    client = client_address(request)
    job = jobs_of(request).start(f"calibrate:{name}", f"Calibrating {name} @ {content_version(defn)}", user.name,
                                 f"/evaluators/{quote(name, safe='')}",
                                 lambda job: _calibrate(ui.store, ui.settings, defn, user.name, job, client),
                                 total=calls)
    return redirect(f"/evaluators/{quote(name, safe='')}?job={job.id}")


@loop_router.post("/evaluators/{name}/activate")
async def activate(request: Request, name: str) -> Response:
    """Admin: make the calibrated current version active: at once when its report certifies it, otherwise only
    with a reason (an override, recorded with the version and in the audit trail), never without a measurement
    on the test split."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    ui = ui_state(request)
    defn, _ = _evaluator(ui.settings, name)
    rec = evaluator_record(ui.store, defn)
    if rec is None or rec.calibration is None:
        raise HTTPException(status_code=400, detail=f"{name} @ {content_version(defn)} is not calibrated: calibrate "
                                                    "it first")
    report, reason = rec.calibration, form.get("reason", "").strip()
    if not report.meets_threshold:
        if not reason:
            raise HTTPException(status_code=400, detail="it is not certified: forcing it active needs a reason")
        if report.test is None or report.test.n == 0:
            raise HTTPException(status_code=400, detail="it scored no labelled unit of the test split: an override "
                                                        "accepts a measured shortfall, not a missing measurement")
    override = None if report.meets_threshold else reason
    save_evaluator_record(ui.store, defn, "active", report.model_copy(update={"status": "active",
                                                                            "override_reason": override}),
                          override_reason=override)
    record_audit(ui.store, user.name, "evaluator.force" if override else "evaluator.activate",
                 f"evaluator:{name}", {"version": content_version(defn), "reason": override,
                                       "dataset_version": report.dataset_version, "run_id": report.run_id},
                 client=client_address(request))
    return redirect(f"/evaluators/{quote(name, safe='')}?message=" + quote(
        "forced active: " + override if override else "activated"))


@loop_router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    """A job's progress (the fragment the page polls); once it finished, htmx is sent to its result."""
    user, session = current_user(request)
    job = jobs_of(request).get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail="no such job (finished long ago, or the server restarted)")
    resp = render(request, "_job.html", session, user=user, job=job)
    if not job.running and request.headers.get("hx-request"):
        resp.headers["HX-Redirect"] = job.link
    return resp
