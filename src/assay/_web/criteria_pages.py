"""The criteria pages of the annotation app: criteria with stable ids and unique names, the signatures each
covers, and what an edit makes stale, shown before saving.

    /criteria                       every criterion: id, name, version, scale, signatures, labels, evaluators
    /criteria/{cid}                 one criterion by its stable id (or its name), with the loop from the browser
                                    (drafting, evaluator files, datasets: :mod:`assay._web.loop_pages`)
    /signatures/{sid}/criterion     the signature's criterion and the editor; POST (admin) creates one (a taken
                                    name is refused with a link to the criterion that has it), shares an existing
                                    one with the signature (``criterion``: its id), or writes a new version

Every admin action here leaves an audit record (``criterion.create``, ``criterion.edit``, ``criterion.cover``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from assay._store import Store
from assay._store.audit import record_audit
from assay._store.tables import EvaluatorRow
from assay._web.auth import Account
from assay._web.loop_pages import loop_context
from assay._web.pages import (
    checked_form,
    client_address,
    current_user,
    redirect,
    render,
    require_admin,
    signature_or_404,
    ui_state,
)
from assay.annotations import Criterion, list_annotations, list_criteria
from assay.annotations.agreement import label_counts
from assay.annotations.criteria import (
    cover_signature,
    create_criterion,
    criterion_signatures,
    edit_criterion,
    stale_impact,
)
from assay.annotations.queue import signature_criterion
from assay.annotations.scale import parse_scale_items
from assay.exceptions import NameTaken, NotFoundError, UsageError
from assay.signatures import Signature, list_signatures

criteria_router = APIRouter()


@dataclass(frozen=True)
class EvaluatorUse:
    """An evaluator written against a criterion: its newest version, and any active one."""

    name: str
    version: str
    status: str
    criterion_version: int


def evaluators_on(store: Store, criterion: str) -> list[EvaluatorUse]:
    """Evaluators whose stored definition names ``criterion``: per name the newest version, and every
    active version besides (what an edit leaves behind the criterion)."""
    out: list[EvaluatorUse] = []
    seen: set[str] = set()
    with store.session() as s:
        for row in s.scalars(select(EvaluatorRow).order_by(EvaluatorRow.name, EvaluatorRow.created_at.desc())):
            crit = (row.definition or {}).get("criterion") or {}
            if crit.get("name") != criterion or (row.name in seen and row.status != "active"):
                continue
            seen.add(row.name)
            out.append(EvaluatorUse(row.name, row.version, row.status, int(crit.get("version") or 1)))
    return out


def _criterion_context(store: Store, criterion: Criterion) -> dict[str, Any]:
    """What every page about one criterion shows: label counts, the edit's impact, evaluators, signatures."""
    annotations = list_annotations(store, criterion.name)
    return {"criterion": criterion, "counts": label_counts(annotations, criterion),
            "impact": stale_impact(store, criterion, annotations), "evaluators": evaluators_on(store, criterion.name)}


def _signature_labels(store: Store) -> dict[int, str]:
    """``{signature id: label}`` (retired ones too), to name the signatures a criterion covers."""
    return {sig.id: sig.label for sig in list_signatures(store, include_retired=True)}


@criteria_router.get("/criteria", response_class=HTMLResponse)
def criteria_page(request: Request) -> Response:
    """Every criterion with its stable id, name, version, scale, signatures, labels and evaluators."""
    user, session = current_user(request)
    store = ui_state(request).store
    rows = [_criterion_context(store, c) for c in list_criteria(store)]
    return render(request, "criteria.html", session, user=user, rows=rows, sig_labels=_signature_labels(store))


def criterion_by_ref(store: Store, ref: str) -> Criterion:
    """The criterion ``ref`` names: its stable id (digits), else its name; 404 when there is none."""
    criteria = list_criteria(store)
    found = next((c for c in criteria if ref.isdigit() and c.id == int(ref)), None) \
        or next((c for c in criteria if c.name == ref), None)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no criterion {ref!r}")
    return found


@criteria_router.get("/criteria/{ref}", response_class=HTMLResponse)
def criterion_detail(request: Request, ref: str, message: str = "") -> Response:
    """One criterion by its stable id (or its name): text, scale, the signatures it covers, labels by annotator,
    evaluators, and the loop from the browser (labels per class, drafting, datasets: :mod:`assay._web.loop_pages`).
    ``message``: what the last loop action did."""
    user, session = current_user(request)
    ui = ui_state(request)
    criterion = criterion_by_ref(ui.store, ref)
    return render(request, "criterion_detail.html", session, user=user, sig_labels=_signature_labels(ui.store),
                  message=message, **_criterion_context(ui.store, criterion),
                  **loop_context(ui.store, ui.settings, criterion))


def _editor(request: Request, session: dict[str, str], user: Account, sig: Signature, status: int = 200,
            error: str = "", taken: Criterion | None = None, typed: dict[str, str] | None = None) -> Response:
    """The signature's criterion page: the criterion, what an edit makes stale, the editor (``typed``: the
    form as posted, shown again after an error so nothing typed is lost)."""
    store = ui_state(request).store
    criterion = signature_criterion(store, sig.id)
    context = _criterion_context(store, criterion) if criterion is not None else {"criterion": None}
    others = list_criteria(store) if criterion is None else []
    return render(request, "criterion.html", session, status=status, user=user, sig=sig, error=error, taken=taken,
                  typed=typed or {}, others=others, sig_labels=_signature_labels(store), **context)


@criteria_router.get("/signatures/{sid}/criterion", response_class=HTMLResponse)
def criterion_page(request: Request, sid: int) -> Response:
    """The signature's criterion, its version, its labels (current and stale) and, before any edit, what
    saving a new version would make stale."""
    user, session = current_user(request)
    return _editor(request, session, user, signature_or_404(ui_state(request).store, sid))


def _audit(request: Request, user: Account, action: str, criterion: Criterion, details: dict[str, Any]) -> None:
    record_audit(ui_state(request).store, user.name, action, f"criterion:{criterion.id}",
                 {"name": criterion.name, "version": criterion.version, **details}, client=client_address(request))


@criteria_router.post("/signatures/{sid}/criterion")
async def save_criterion(request: Request, sid: int) -> Response:
    """Admin: create the signature's criterion (``name``, ``text``, ``scale`` with ``scale_items``: one level or
    class per line, ``VALUE = ANCHOR`` or ``NAME = DESCRIPTION``), share an existing one with it (``criterion``:
    its id), or write a new version of its criterion (when the text or the scale changed). A taken name is
    refused (409) with a link to the criterion that has it; a bad scale is 400; the form comes back as typed."""
    user, session = current_user(request)
    form = await checked_form(request, session)
    require_admin(user)
    store = ui_state(request).store
    sig = signature_or_404(store, sid)
    existing = signature_criterion(store, sid)
    try:
        if existing is None and form.get("criterion"):
            shared = cover_signature(store, form["criterion"], sid, added_by=user.name)
            _audit(request, user, "criterion.cover", shared, {"signature": sid})
        else:
            _write(request, user, form, sid, existing)
    except NameTaken as exc:
        taken = next((c for c in list_criteria(store) if c.id == exc.existing_id), None)
        return _editor(request, session, user, sig, 409, str(exc), taken, form)
    except ValidationError as exc:
        return _editor(request, session, user, sig, 400, "scale: " + "; ".join(e["msg"] for e in exc.errors()),
                       typed=form)
    except NotFoundError as exc:
        return _editor(request, session, user, sig, 404, str(exc), typed=form)
    except (UsageError, ValueError) as exc:
        return _editor(request, session, user, sig, 400, str(exc), typed=form)
    return redirect(f"/signatures/{sid}/criterion")


def _write(request: Request, user: Account, form: dict[str, str], sid: int, existing: Criterion | None) -> None:
    """Create the signature's criterion, or a new version of ``existing``; audited.

    Raises:
        NameTaken, ValidationError, UsageError, ValueError: the caller shows them with the form.
    """
    store = ui_state(request).store
    scale = parse_scale_items(form.get("scale", "binary"), form.get("scale_items", ""))
    if existing is None:
        made = create_criterion(store, form.get("text", ""), form.get("name", "").strip() or f"signature-{sid}",
                                signature_id=sid, scale=scale)
        _audit(request, user, "criterion.create", made, {"signature": sid})
        return
    impact = stale_impact(store, existing)
    saved = edit_criterion(store, existing.name, form.get("text", ""), scale=scale)
    if saved.version != existing.version:
        _audit(request, user, "criterion.edit", saved, {"from_version": existing.version, "stale_labels": impact.total,
                                                         "signatures": criterion_signatures(store, saved)})
