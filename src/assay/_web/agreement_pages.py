"""The agreement pages of the annotation app: human-human agreement per criterion, on its scale.

    /agreement          one row per criterion: items two or more people labelled, their labels, Cohen's kappa
                        of the pairs of people who overlap (each with its n), Fleiss' kappa, Krippendorff's alpha,
                        disagreements on the verdict apart from those on severity only, stale labels
    /agreement/{name}   one criterion: the same numbers, the kappa matrix, the pairs, every disagreement linked
                        to its unit

Both pages read one :class:`~assay.annotations.agreement.HumanAgreement` per criterion, so their counts are
the same numbers (stale labels are :func:`~assay.annotations.agreement.label_counts`' count, as on the
criterion pages). Agreement resting on labels made after seeing another one (blind review off) is marked.
An annotator (not an admin) sees the labels of a disagreement only on items they labelled too.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from assay._web.pages import current_user, render, ui_state
from assay.annotations import get_criterion, list_annotations, list_criteria
from assay.annotations.agreement import human_agreement
from assay.annotations.criteria import criterion_signatures
from assay.exceptions import NotFoundError

agreement_router = APIRouter()


@agreement_router.get("/agreement", response_class=HTMLResponse)
def agreement_page(request: Request) -> Response:
    """Human-human agreement per criterion."""
    user, session = current_user(request)
    store = ui_state(request).store
    annotations = list_annotations(store)
    rows = [human_agreement(annotations, c) for c in list_criteria(store)]
    return render(request, "agreement.html", session, user=user, rows=rows)


@agreement_router.get("/agreement/{name}", response_class=HTMLResponse)
def agreement_detail(request: Request, name: str) -> Response:
    """One criterion's agreement, its pairs and its disagreements (verdict, then severity only), each unit
    linked to its review page in the queue of a signature the criterion covers."""
    user, session = current_user(request)
    store = ui_state(request).store
    try:
        criterion = get_criterion(store, name)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no criterion named {name!r}") from None
    signatures = criterion_signatures(store, criterion)
    return render(request, "agreement_detail.html", session, user=user, criterion=criterion,
                  row=human_agreement(list_annotations(store, criterion.name), criterion),
                  review_sig=signatures[0] if signatures else None)
