"""The REST API: JSON under ``/api/v1`` for programmatic access to the annotation loop.

Every request needs an API key made by ``assay keys create`` (or the ``[server] api_key`` setting),
sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; without one the answer is 401.
Bodies are validated by Pydantic: a bad body is 422 with the reasons (FastAPI's ``detail`` list);
a body naming a unit or criterion that does not exist is 422 too, with one reason. A path naming
something that does not exist is 404. OpenAPI: ``/api/v1/openapi.json``, Swagger UI ``/api/v1/docs``.

Endpoints:
    GET  /signatures                  failure signatures ranked by impact
    GET  /units/{unit_id}             one unit and its step timeline (a trace id merged into a
                                      session by a late session id resolves to the session)
    GET  /annotations                 annotations (filters: unit_id, criterion; limit/offset)
    POST /annotations                 append one annotation (provenance: annotator, API key, time,
                                      criterion version); 201
    GET  /criteria                    criteria with their current version
    GET  /criteria/{name}/agreement   human-human agreement on one criterion
    GET  /evaluators                  evaluator versions with status, calibration and latest run
    GET  /evaluators/{name}/scores    the latest score per unit of an evaluator
    POST /feedback                    user feedback on a trace, session or unit (thumbs or a score, a
                                      comment): 201 attached, 202 kept pending until the trace arrives, 200
                                      the same feedback again; a malformed body is 400 with the reason
    GET  /feedback                    feedback received (filter: status=pending|attached)
    GET  /notes, POST /notes          comments and corrected outputs on steps (assay._web.api_notes)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from assay._store import Store
from assay._store.spans import load_unit, resolve_unit_id, unit_row
from assay._store.tables import AnnotationRow, ApiKeyRow, EvaluatorRow, ScoreRow
from assay._web.api_notes import add_note_routes
from assay.annotations import (
    Annotation,
    BinaryScale,
    add_annotations,
    fit_to_scale,
    get_criterion,
    list_annotations,
    list_criteria,
)
from assay.annotations.agreement import HumanAgreement, human_agreement
from assay.annotations.model import AnnotatorKind, Criterion, Label
from assay.annotations.scale import ScaleValue, ShownOrder
from assay.annotations.step_notes import StepNote, step_notes
from assay.exceptions import NotFoundError, UsageError
from assay.settings import Settings
from assay.signals import FailureSignal, FeedbackItem, FeedbackResult, assess, record_feedback, unit_signals
from assay.signals.feedback import FeedbackRecord, list_feedback
from assay.signatures import Signature, list_signatures
from assay.traces import Step, step_timeline
from assay.traces.model import timestamp_ns
from assay.traces.record_fields import parse_feedback
from assay.traces.usage import UnitUsage, unit_usage

MAX_LIMIT = 10_000


class UnitOut(BaseModel):
    """One unit as the API returns it: metadata and the step timeline."""

    unit_id: str = Field(description="the unit's id now (may differ from the id asked for, see resolved_from)")
    resolved_from: str | None = Field(None, description="the id asked for, when it was merged into this unit")
    kind: str = Field(description="'session' or 'trace'")
    source: str
    environment: str | None = Field(None, description="where it ran (deployment.environment.name, an ingest "
                                    "option or the API key's); null: not set (it counts as [environments] default)")
    release: str | None = Field(None, description="the release (service.version) that produced it; null: unknown")
    outcome: str = Field(description="'pass', 'fail' or 'unknown' (as the source recorded it)")
    reward: float | None
    trace_ids: list[str]
    span_count: int
    has_error: bool
    open_spans: int = Field(description="spans stored without an end time (in progress): the unit may still grow")
    orphan_spans: int = Field(description="spans whose parent has not arrived (flagged 'orphan'); after "
                              "[online] orphan_grace_s the parent counts as lost")
    content_missing_reason: str | None = Field(description="why a judge should skip the unit, or null")
    steps: list[Step] = Field(description="the step timeline in time order, indices 1-based, times in ns (UTC)")
    usage: UnitUsage = Field(description="token usage, cost (USD; the source's, else configured prices) and "
                             "latency, summed once per trace; unknown values are null, with coverage counts")
    failed: bool = Field(description="the unit counts as failed: its failure score is at least [signals] fail_at "
                                     "(before its first scan: the source recorded a failure)")
    failure_score: float = Field(description="noisy-OR of its failure signals' strengths, 0..1")
    signals: list[FailureSignal] = Field(description="its failure signals; ``step`` points into ``steps``")
    notes: list[StepNote] = Field(default_factory=list, description="comments and corrected outputs on its steps "
                                                                    "(``step`` points into ``steps``), oldest first")


class AnnotationIn(BaseModel):
    """A new annotation. ``annotator`` defaults to the API key's owner; ``criterion_version``
    defaults to the criterion's current version (give an older one only for labels made under it).
    The judgment is ``label`` (pass/fail) or ``value`` on the criterion's scale; a value that does not
    fit the scale is a 422 naming the allowed values."""

    model_config = ConfigDict(extra="forbid")

    unit_id: str = Field(min_length=1)
    label: Label | None = Field(None, description="pass or fail (binary criteria and labels without a criterion)")
    value: ScaleValue | None = Field(None, description="the judgment on the criterion's scale: pass/fail, a level, "
                                                       "a class name, first/second/tie")
    second_unit_id: str | None = Field(None, description="pairwise: the second output's unit")
    shown_order: ShownOrder | None = Field(None, description="pairwise: the order the outputs were shown in")
    severity: int | None = Field(None, ge=1, le=4, description="1 (minor) .. 4 (critical)")
    rationale: str = Field("", max_length=20_000)
    criterion: str | None = Field(None, description="criterion name or id; null: the unit as a whole")
    criterion_version: int | None = Field(None, ge=1)
    annotator: str | None = Field(None, min_length=1, max_length=200)
    annotator_kind: AnnotatorKind = "human"
    source: str = Field("api", max_length=300)
    extra: dict[str, Any] = Field(default_factory=dict)


class FeedbackIn(BaseModel):
    """User feedback (``POST /feedback``): exactly one of ``trace_id``, ``session_id``, ``unit_id``, and
    exactly one of ``thumbs`` and ``score``."""

    model_config = ConfigDict(extra="forbid")

    trace_id: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$", description="OTel trace id (32 hex)")
    session_id: str | None = Field(None, min_length=1, max_length=280,
                                   description="gen_ai.conversation.id / session.id of a session")
    unit_id: str | None = Field(None, min_length=1, max_length=300, description="an assay unit id")
    span_id: str | None = Field(None, pattern=r"^[0-9a-fA-F]{16}$", description="the span it is about (16 hex)")
    thumbs: Literal["up", "down"] | None = Field(None, description="'up' or 'down' (also true / false, -1 / +1)")
    score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="a number: 0 (bad) .. 1 (good)")
    comment: str = Field("", max_length=20_000)
    time: str | int | None = Field(None, description="when it was given: ISO 8601 or epoch (s, ms, us or ns); "
                                   "default: when it arrives")

    @field_validator("thumbs", "score", mode="before")
    @classmethod
    def _feedback_value(cls, value: object, info: ValidationInfo) -> object:
        """The one feedback parser of every channel (:func:`assay.traces.record_fields.parse_feedback`)."""
        if value is None:
            return None
        thumbs, score = parse_feedback(value, "thumbs" if info.field_name == "thumbs" else "score")
        return thumbs if info.field_name == "thumbs" else score

    @model_validator(mode="after")
    def _one_each(self) -> FeedbackIn:
        targets = [n for n in ("trace_id", "session_id", "unit_id") if getattr(self, n) is not None]
        if len(targets) != 1:
            raise ValueError(f"give exactly one of trace_id, session_id, unit_id (got {', '.join(targets) or 'none'})")
        if (self.thumbs is None) == (self.score is None):
            raise ValueError("give exactly one of thumbs ('up' or 'down') and score (a number in [0, 1])")
        return self


MAX_FEEDBACK_BYTES = 64 * 1024


def _reasons(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(msg if not where or msg.startswith(f"{where} ") else f"{where}: {msg}")  # names its field
    return "; ".join(parts)


def feedback_item(body: bytes, sender: str) -> FeedbackItem:
    """A ``POST /feedback`` body as a :class:`~assay.signals.FeedbackItem` (channel ``api``).

    Raises:
        HTTPException: 400 with the reason: not JSON, not an object, unknown or invalid fields, no or several
            targets, neither or both of thumbs and score, a bad time; 413 over 64 KiB.
    """
    if len(body) > MAX_FEEDBACK_BYTES:
        raise HTTPException(status_code=413, detail=f"feedback body over {MAX_FEEDBACK_BYTES} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status_code=400, detail=f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(status_code=400, detail="body must be a JSON object")
    try:
        given = FeedbackIn.model_validate(data)
        when = timestamp_ns(given.time) if given.time is not None else 0
    except ValidationError as exc:
        raise HTTPException(status_code=400, detail=_reasons(exc)) from None
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"time: {exc}") from None
    return FeedbackItem(channel="api", sender=sender, trace_id=given.trace_id.lower() if given.trace_id else None,
                        session_id=given.session_id, unit_id=given.unit_id,
                        span_id=given.span_id.lower() if given.span_id else None, thumbs=given.thumbs,
                        score=given.score, comment=given.comment, origin="POST /api/v1/feedback", time_ns=when)


class LatestRun(BaseModel):
    """What one evaluator version's latest run scored."""

    run_id: str
    scored: int = Field(description="units with a score")
    failed: int = Field(description="units where the evaluator failed (no score)")
    mean_score: float | None = Field(description="mean of the scores, 0..1; null without any")
    passes: int
    fails: int
    at: datetime


class EvaluatorOut(BaseModel):
    """One stored evaluator version."""

    name: str
    version: str = Field(description="content hash of the definition")
    kind: str
    status: str = Field(description="'draft', 'active', ... (activation needs calibration or an override)")
    calibration: dict[str, Any]
    override_reason: str | None
    created_at: datetime
    latest_run: LatestRun | None


class ScoreOut(BaseModel):
    """One score with its lineage."""

    unit_id: str
    run_id: str
    evaluator_name: str
    evaluator_version: str
    judge_model: str | None
    dataset_version: int | None
    status: str
    score: float | None = Field(description="0..1; null when the evaluator failed")
    verdict: str | None
    reason: str
    parse_status: str | None = Field(None, description="how the verdict was read: ok, repaired or failed "
                                     "(null: stored before this was recorded)")
    created_at: datetime


class Caller(BaseModel):
    """Who is calling: the API key's owner (or 'api' for the configured key) and the key's prefix."""

    owner: str
    key_prefix: str


def _bad(reason: str) -> HTTPException:
    return HTTPException(status_code=422, detail=reason)


def api_app(settings: Settings, store: Store) -> FastAPI:
    """The REST API as an app to mount at ``/api/v1`` (see module docstring)."""
    app = FastAPI(title="assay REST API", version="1", docs_url="/docs", redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Signatures, units, annotations, criteria, agreement, evaluators and scores. "
                              "Send an API key from `assay keys create` as `Authorization: Bearer KEY`.")
    app.include_router(api_router(settings, store))
    return app


def _caller_dependency(settings: Settings, store: Store) -> Any:
    def caller(request: Request) -> Caller:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        configured = settings.server.api_key
        if given and configured and secrets.compare_digest(given.encode(), configured.encode()):
            return Caller(owner="api", key_prefix=given[:12])
        if given:
            digest = hashlib.sha256(given.encode()).hexdigest()
            with store.session() as s:
                row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
                if row is not None and row.revoked_at is None:
                    return Caller(owner=row.owner or "api", key_prefix=row.prefix)
        raise HTTPException(status_code=401, detail="missing or wrong API key: send 'Authorization: Bearer <key>' "
                            "or 'X-API-Key: <key>' (create one with 'assay keys create')",
                            headers={"WWW-Authenticate": "Bearer"})

    return caller


def api_router(settings: Settings, store: Store) -> APIRouter:
    """The ``/api/v1`` routes bound to a store, every one behind the API-key check."""
    caller = _caller_dependency(settings, store)
    router = APIRouter(dependencies=[Depends(caller)])

    @router.get("/signatures", response_model=list[Signature], summary="Failure signatures ranked by impact")
    def signatures(include_retired: bool = False) -> list[Signature]:
        return list_signatures(store, include_retired=include_retired, prices=settings.prices)

    @router.get("/units/{unit_id:path}", response_model=UnitOut, summary="One unit and its step timeline")
    def unit(unit_id: str) -> UnitOut:
        current = resolve_unit_id(store, unit_id)
        if current is None:
            raise HTTPException(status_code=404, detail=f"unit not found: {unit_id!r}")
        u = load_unit(store, current)
        row = unit_row(store, current)
        signals = unit_signals(store, [current])[current]
        return UnitOut(unit_id=u.unit_id, resolved_from=unit_id if current != unit_id else None, kind=u.kind,
                       source=u.source, environment=row.env if row else None, release=row.release if row else None,
                       outcome=u.outcome, reward=u.reward, trace_ids=u.trace_ids,
                       span_count=len(u.spans), has_error=u.has_error,
                       open_spans=sum(s.end_ns <= 0 and not s.synthetic_time for s in u.spans),
                       orphan_spans=sum("orphan" in s.flags for s in u.spans),
                       content_missing_reason=u.content_missing_reason, steps=step_timeline(u),
                       usage=unit_usage(u).priced(settings.prices),
                       failed=current in store.failed_among([current]),
                       failure_score=assess(current, signals, store.signals).score, signals=signals,
                       notes=step_notes(store, [current]))

    @router.post("/feedback", response_model=FeedbackResult, status_code=201,
                 summary="User feedback on a trace, session or unit (thumbs or a score in [0, 1])",
                 responses={200: {"description": "the same feedback was received before (stored once)"},
                            202: {"description": "kept pending: its trace, session or unit is not stored yet"},
                            400: {"description": "malformed body, with the reason"}},
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": FeedbackIn.model_json_schema()}}}})
    async def post_feedback(request: Request, who: Caller = Depends(caller)) -> JSONResponse:  # noqa: B008
        item = feedback_item(await request.body(), who.owner)
        result = (await run_in_threadpool(record_feedback, store, [item], store.signals))[0]
        status = 200 if result.duplicate else 201 if result.status == "attached" else 202
        return JSONResponse(result.model_dump(mode="json"), status_code=status)

    @router.get("/feedback", response_model=list[FeedbackRecord], summary="Feedback received, oldest first")
    def get_feedback(status: Literal["pending", "attached"] | None = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
                     offset: Annotated[int, Query(ge=0)] = 0) -> list[FeedbackRecord]:
        return list_feedback(store, status, limit, offset)

    @router.get("/annotations", response_model=list[Annotation], summary="Annotations, oldest first")
    def annotations(unit_id: str | None = None, criterion: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
                    offset: Annotated[int, Query(ge=0)] = 0) -> list[Annotation]:
        name = None
        if criterion is not None:
            try:
                name = get_criterion(store, criterion).name
            except NotFoundError as exc:
                raise HTTPException(status_code=404, detail=str(exc)) from None
        rows = [a for a in list_annotations(store, name) if unit_id is None or a.unit_id == unit_id]
        return rows[offset:offset + limit]

    @router.post("/annotations", response_model=Annotation, status_code=201,
                 summary="Append one annotation (never overwrites; a correction is a new record)")
    def create_annotation(body: AnnotationIn, who: Caller = Depends(caller)) -> Annotation:  # noqa: B008
        current = resolve_unit_id(store, body.unit_id)
        if current is None:
            raise _bad(f"unit not found: {body.unit_id!r}")
        crit: Criterion | None = None
        if body.criterion is not None:
            try:
                crit = get_criterion(store, body.criterion)
            except NotFoundError as exc:
                raise _bad(str(exc)) from None
            if body.criterion_version is not None and body.criterion_version > crit.version:
                raise _bad(f"criterion_version {body.criterion_version} is newer than {crit.name!r} "
                           f"(current version {crit.version})")
        elif body.criterion_version is not None:
            raise _bad("criterion_version given without a criterion")
        extra = {**body.extra, "api_key": who.key_prefix}
        if current != body.unit_id:
            extra["unit_id_given"] = body.unit_id
        second = resolve_unit_id(store, body.second_unit_id) if body.second_unit_id else None
        if body.second_unit_id and second is None:
            raise _bad(f"unit not found: {body.second_unit_id!r}")
        try:
            record = Annotation(unit_id=current, annotator=body.annotator or who.owner,
                                annotator_kind=body.annotator_kind, label=body.label, value=body.value,
                                second_unit_id=second, shown_order=body.shown_order, severity=body.severity,
                                rationale=body.rationale, criterion=crit.name if crit else None,
                                criterion_version=(body.criterion_version or crit.version) if crit else None,
                                source=body.source, extra=extra)
            add_annotations(store, [record])
        except ValidationError as exc:
            raise _bad("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        except UsageError as exc:
            raise _bad(str(exc)) from None
        record = fit_to_scale(record, crit.scale if crit else BinaryScale())
        with store.session() as s:
            row = s.scalar(select(AnnotationRow).where(AnnotationRow.unit_id == current,
                                                       AnnotationRow.annotator == record.annotator)
                           .order_by(AnnotationRow.id.desc()).limit(1))
            return record.model_copy(update={"created_at": row.created_at if row else None,
                                             "criterion_version": row.criterion_version if row else None})

    @router.get("/criteria", response_model=list[Criterion], summary="Criteria with their current version")
    def criteria() -> list[Criterion]:
        return list_criteria(store)

    @router.get("/criteria/{name}/agreement", response_model=HumanAgreement,
                summary="Human-human agreement on one criterion (kappa / alpha; null when undefined)")
    def agreement(name: str) -> HumanAgreement:
        try:
            crit = get_criterion(store, name)
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return human_agreement(list_annotations(store, crit.name), crit)

    @router.get("/evaluators", response_model=list[EvaluatorOut],
                summary="Evaluator versions (newest first per name) with their latest run")
    def evaluators() -> list[EvaluatorOut]:
        with store.session() as s:
            rows = list(s.scalars(select(EvaluatorRow).order_by(EvaluatorRow.name, EvaluatorRow.created_at.desc())))
            return [EvaluatorOut(name=r.name, version=r.version, kind=r.kind, status=r.status,
                                 calibration=r.calibration or {}, override_reason=r.override_reason,
                                 created_at=r.created_at, latest_run=_latest_run(s, r.name, r.version))
                    for r in rows]

    @router.get("/evaluators/{name}/scores", response_model=list[ScoreOut],
                summary="The latest score per unit of one evaluator (its newest version unless given)")
    def scores(name: str, version: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000) -> list[ScoreOut]:
        with store.session() as s:
            if version is None:
                version = s.scalar(select(EvaluatorRow.version).where(EvaluatorRow.name == name)
                                   .order_by(EvaluatorRow.created_at.desc()).limit(1))
                if version is None:
                    version = s.scalar(select(ScoreRow.evaluator_version).where(ScoreRow.evaluator_name == name)
                                       .order_by(ScoreRow.id.desc()).limit(1))
            if version is None:
                raise HTTPException(status_code=404, detail=f"evaluator not found: {name!r}")
            rows = s.scalars(select(ScoreRow).where(ScoreRow.evaluator_name == name,
                                                    ScoreRow.evaluator_version == version).order_by(ScoreRow.id))
            latest = {r.unit_id: r for r in rows}
            return [ScoreOut.model_validate(r, from_attributes=True)
                    for r in sorted(latest.values(), key=lambda r: r.unit_id)[:limit]]

    add_note_routes(router, store, caller)
    return router


def _latest_run(s: Any, name: str, version: str) -> LatestRun | None:
    """Summary of the newest run that scored this evaluator version, or None."""
    run_id = s.scalar(select(ScoreRow.run_id).where(ScoreRow.evaluator_name == name,
                                                   ScoreRow.evaluator_version == version)
                      .order_by(ScoreRow.id.desc()).limit(1))
    if run_id is None:
        return None
    q = select(ScoreRow.score, ScoreRow.verdict, ScoreRow.created_at).where(
        ScoreRow.run_id == run_id, ScoreRow.evaluator_name == name, ScoreRow.evaluator_version == version)
    rows = list(s.execute(q))
    values = [r.score for r in rows if r.score is not None]
    at = s.scalar(select(func.max(ScoreRow.created_at)).where(ScoreRow.run_id == run_id))
    return LatestRun(run_id=run_id, scored=len(values), failed=len(rows) - len(values),
                     mean_score=sum(values) / len(values) if values else None,
                     passes=sum(r.verdict == "pass" for r in rows), fails=sum(r.verdict == "fail" for r in rows),
                     at=at)
