"""Export scores with their lineage: as OTel ``gen_ai.evaluation.result`` events (OTLP JSON log
records) or as plain JSON Lines.

Event shape (OTel GenAI semantic conventions, ``model/gen-ai/events.yaml`` of
open-telemetry/semantic-conventions-genai, stability *development*): a log record with
``eventName`` ``gen_ai.evaluation.result`` and the attributes ``gen_ai.evaluation.name``
(required: the evaluator name), ``gen_ai.evaluation.score.value`` and
``gen_ai.evaluation.score.label`` (when the unit was scored: score in [0, 1], label pass/fail),
``gen_ai.evaluation.explanation`` (the judge's reason or the check's message) and ``error.type``
(when it was not: ``error``, ``unscored`` or ``not_applicable``). The event is parented to the
evaluated span: ``traceId`` / ``spanId`` are the unit's root span when the unit has exactly one
(a trace, or a session of one trace); a session also gets ``gen_ai.conversation.id``. Lineage
goes in extra attributes: ``assay.evaluator.version``, ``assay.judge.model``,
``assay.judge.parameters`` (JSON text), ``assay.dataset.version``, ``assay.run.id``, plus
``assay.unit.id``, ``assay.score.status`` and ``assay.score.parse_status`` (ok, repaired, failed: how the
verdict was read from the judge's reply).

The file is OTLP JSON Lines, as the OpenTelemetry Collector's file exporter writes it: each line
one ``ExportLogsServiceRequest`` (proto3 JSON mapping: hex ids, 64-bit integers as strings) of
up to 1,000 records; ``POST`` any line to an OTLP/HTTP ``/v1/logs`` endpoint as is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, JsonValue
from sqlalchemy import select

from assay._store import Store
from assay._store.scores import RunParams, read_params
from assay._store.tables import RunRow, ScoreRow, SpanRow, UnitRow
from assay.exceptions import NotFoundError

EVENT_NAME = "gen_ai.evaluation.result"
BATCH = 1000
_SEVERITY_INFO = 9


class ScoreRecord(BaseModel):
    """One stored score with its full lineage and the ids of the unit's root span (when known)."""

    model_config = ConfigDict(frozen=True)

    score_id: int
    run_id: str
    run_kind: str
    unit_id: str
    evaluator: str
    evaluator_version: str
    judge_model: str | None
    judge_parameters: dict[str, JsonValue]
    dataset_version: int | None
    status: str
    score: float | None
    verdict: str | None
    reason: str
    parse_status: str | None = None
    """How the verdict was read: ok, repaired, failed (None: a score stored before this was recorded)."""
    created_at: datetime
    trace_id: str | None
    span_id: str | None
    conversation_id: str | None


def _roots(store: Store, unit_ids: set[str]) -> dict[str, tuple[str | None, str | None, str | None]]:
    """``{unit: (trace id, span id, conversation id)}``: ids only for a unit with exactly one root span."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    sessions: dict[str, str] = {}
    ids = sorted(unit_ids)
    with store.session() as s:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = select(SpanRow.unit_id, SpanRow.trace_id, SpanRow.span_id).where(
                SpanRow.unit_id.in_(chunk), SpanRow.parent_span_id.is_(None)).order_by(SpanRow.start_ns)
            for uid, t, sid in s.execute(q):
                found[uid].append((t, sid))
            kinds = s.execute(select(UnitRow.unit_id, UnitRow.kind).where(UnitRow.unit_id.in_(chunk)))
            sessions.update({uid: uid.split("/", 1)[-1] for uid, kind in kinds if kind == "session"})
    out: dict[str, tuple[str | None, str | None, str | None]] = {}
    for uid in unit_ids:
        roots = found.get(uid, [])
        one = roots[0] if len(roots) == 1 else None
        out[uid] = (one[0] if one else None, one[1] if one else None, sessions.get(uid))
    return out


def score_records(store: Store, run_id: str | None = None, evaluator: str | None = None) -> list[ScoreRecord]:
    """Stored scores (one run's, or all) with lineage from their run, in score order.

    Raises:
        NotFoundError: ``run_id`` names no run.
    """
    with store.session() as s:
        if run_id is not None and s.get(RunRow, run_id) is None:
            raise NotFoundError("run", run_id)
        q = select(ScoreRow, RunRow).join(RunRow, ScoreRow.run_id == RunRow.run_id).order_by(ScoreRow.id)
        if run_id is not None:
            q = q.where(ScoreRow.run_id == run_id)
        if evaluator is not None:
            q = q.where(ScoreRow.evaluator_name == evaluator)
        rows = [(a, b) for a, b in s.execute(q)]
    roots = _roots(store, {sc.unit_id for sc, _ in rows})
    runs = {run.run_id: run for _, run in rows}
    lineages = {run_id: read_params(run, RunParams).lineage for run_id, run in runs.items()}
    out = []
    for sc, run in rows:
        lin = lineages[run.run_id].get(f"{sc.evaluator_name}@{sc.evaluator_version}")
        t, sid, conv = roots.get(sc.unit_id, (None, None, None))
        out.append(ScoreRecord(
            score_id=sc.id, run_id=sc.run_id, run_kind=run.kind, unit_id=sc.unit_id, evaluator=sc.evaluator_name,
            evaluator_version=sc.evaluator_version, judge_model=sc.judge_model or (lin.judge_model if lin else None),
            judge_parameters=dict(lin.judge_parameters) if lin else {},
            dataset_version=sc.dataset_version if sc.dataset_version is not None or lin is None
            else lin.dataset_version,
            status=sc.status, score=sc.score, verdict=sc.verdict, reason=sc.reason or "",
            parse_status=sc.parse_status, created_at=sc.created_at, trace_id=t, span_id=sid, conversation_id=conv))
    return out


def _any(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _ns(when: datetime) -> int:
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def event_attributes(rec: ScoreRecord) -> dict[str, Any]:
    """The attributes of one ``gen_ai.evaluation.result`` event (see module docstring)."""
    attrs: dict[str, Any] = {"gen_ai.evaluation.name": rec.evaluator}
    if rec.status == "scored" and rec.score is not None:
        attrs["gen_ai.evaluation.score.value"] = float(rec.score)
        if rec.verdict:
            attrs["gen_ai.evaluation.score.label"] = rec.verdict
    else:
        attrs["error.type"] = rec.status
    if rec.reason:
        attrs["gen_ai.evaluation.explanation"] = rec.reason
    if rec.conversation_id:
        attrs["gen_ai.conversation.id"] = rec.conversation_id
    attrs["assay.evaluator.version"] = rec.evaluator_version
    if rec.judge_model:
        attrs["assay.judge.model"] = rec.judge_model
    if rec.judge_parameters:
        attrs["assay.judge.parameters"] = json.dumps(rec.judge_parameters, sort_keys=True)
    if rec.dataset_version is not None:
        attrs["assay.dataset.version"] = int(rec.dataset_version)
    attrs.update({"assay.run.id": rec.run_id, "assay.unit.id": rec.unit_id, "assay.score.status": rec.status})
    if rec.parse_status:
        attrs["assay.score.parse_status"] = rec.parse_status
    return attrs


def log_record(rec: ScoreRecord) -> dict[str, Any]:
    """One OTLP JSON ``LogRecord`` for a score."""
    ns = str(_ns(rec.created_at))
    out: dict[str, Any] = {"timeUnixNano": ns, "observedTimeUnixNano": ns, "severityNumber": _SEVERITY_INFO,
                           "severityText": "INFO", "eventName": EVENT_NAME,
                           "attributes": [{"key": k, "value": _any(v)} for k, v in event_attributes(rec).items()]}
    if rec.trace_id and rec.span_id:
        out["traceId"], out["spanId"] = rec.trace_id, rec.span_id
    return out


def otlp_requests(records: list[ScoreRecord], batch: int = BATCH) -> Iterator[dict[str, Any]]:
    """``ExportLogsServiceRequest`` JSON objects of up to ``batch`` records each."""
    from assay import __version__

    for i in range(0, len(records), batch):
        yield {"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "assay"}}]},
            "scopeLogs": [{"scope": {"name": "assay", "version": __version__},
                           "logRecords": [log_record(r) for r in records[i:i + batch]]}]}]}


def write_otel(records: list[ScoreRecord], out: IO[str]) -> int:
    """Write records as OTLP JSON Lines (module docstring); returns the number of records."""
    for req in otlp_requests(records):
        out.write(json.dumps(req, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(records)


def write_jsonl(records: list[ScoreRecord], out: IO[str]) -> int:
    """Write records as plain JSON Lines, one score per line with every lineage field; returns the count."""
    for r in records:
        out.write(r.model_dump_json() + "\n")
    return len(records)
