"""SQLAlchemy tables of the assay store (SQLite by default, PostgreSQL for teams)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class UnitRow(Base):
    """A unit. Indexes serve the unit-selection terms (:mod:`assay._store.selection`) and the online
    worker's walk in ingestion order. ``ix_units_id_pattern`` is for ``prefix:`` on PostgreSQL
    (``LIKE 'x%'`` needs ``text_pattern_ops`` unless the database collation is ``C``); on SQLite it
    repeats the primary key's index, which serves ``GLOB 'x*'`` as well."""

    __tablename__ = "units"
    __table_args__ = (Index("ix_units_outcome", "outcome", "has_error"),
                      Index("ix_units_ingested", "ingested_at", "unit_id"),
                      Index("ix_units_id_pattern", "unit_id", postgresql_ops={"unit_id": "text_pattern_ops"}))
    unit_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20), default="unknown")
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    has_error: Mapped[bool] = mapped_column(default=False)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The unit's :class:`assay.traces.usage.UnitUsage` (without configured prices), recomputed when its
    spans change; None for a unit stored before it existed (computed when first read)."""
    env: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    """Where the unit ran (:mod:`assay.traces.environment`): from its data, else the ingest option or the
    API key's environment; None when nothing named one (it counts as ``[environments] default``)."""
    release: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    """The release (app version) that produced it, None when unknown."""


class SpanRow(Base):
    """A span; ``(unit_id, start_ns)`` reads a unit's spans in time order from the index."""

    __tablename__ = "spans"
    __table_args__ = (Index("ix_spans_unit_start", "unit_id", "start_ns"),)
    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"))
    start_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_span_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class LogRecordRow(Base):
    """An OTLP log record (GenAI event) received on ``/v1/logs``, kept as received and joined to
    its span by trace and span id (empty when the record names no span); ``data`` is a SpanEvent."""

    __tablename__ = "log_records"
    __table_args__ = (Index("ix_log_records_span", "trace_id", "span_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    time_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class SignatureRow(Base):
    __tablename__ = "signatures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structural_key: Mapped[str] = mapped_column(String(300))
    label: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[Any]] = mapped_column(JSON, default=list)
    size: Mapped[int] = mapped_column(Integer, default=0)
    representative_unit: Mapped[str | None] = mapped_column(String(300), nullable=True)
    centroid: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="new")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    lifecycle: Mapped[str] = mapped_column(String(20), default="new")
    """Where the signature stands in the loop (``assay.signatures.lifecycle``): new, escalating,
    criterion_written, monitored, resolved or regressed."""
    lifecycle_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """When ``lifecycle`` last changed (None: never evaluated)."""


class LifecycleRow(Base):
    """One change of a signature's lifecycle, append-only: from (None at the first evaluation), to, why,
    the facts that decided it (``details``) and when."""

    __tablename__ = "signature_lifecycle"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class MemberRow(Base):
    __tablename__ = "signature_members"
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), primary_key=True)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True, index=True)
    structural_key: Mapped[str] = mapped_column(String(300))
    distance: Mapped[float | None] = mapped_column(Float, nullable=True)
    x: Mapped[float | None] = mapped_column(Float, nullable=True)
    y: Mapped[float | None] = mapped_column(Float, nullable=True)
    seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    severity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    assignment: Mapped[str] = mapped_column(String(10), default="cluster")


class SevereFlagRow(Base):
    """Rare-severe flags: one row per (unit, source, reason); source rule, feedback or person."""

    __tablename__ = "severe_flags"
    __table_args__ = (UniqueConstraint("unit_id", "source", "reason"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    source: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(500))
    flagged_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SevereScanRow(Base):
    """Which unit content was last checked against which severe rules (content and rules hashes)."""

    __tablename__ = "severe_scans"
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    rules_hash: Mapped[str] = mapped_column(String(64))
    scanned_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmbeddingRow(Base):
    __tablename__ = "embeddings"
    unit_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class CriterionRow(Base):
    __tablename__ = "criteria"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    scale: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The criterion's scale (``assay.annotations.scale``) as JSON; NULL is binary (pass/fail)."""


class CriterionSignatureRow(Base):
    """A signature a criterion covers besides the one it was written for (``criteria.signature_id``):
    a criterion may cover several signatures, each added on purpose, by someone, at a time."""

    __tablename__ = "criterion_signatures"
    criterion_id: Mapped[int] = mapped_column(ForeignKey("criteria.id"), primary_key=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), primary_key=True)
    added_by: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnnotationRow(Base):
    """Append-only: corrections add a row, never overwrite.

    ``value`` is the judgment on the criterion's scale (JSON: a string or a level); NULL on rows made
    before scales existed, whose ``label`` (pass/fail) is the value. ``label`` is NULL on non-binary
    scales. A pairwise judgment names its second output's unit (``second_unit_id``) and the order the
    annotator saw them in (``shown_order``).
    """

    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    criterion_id: Mapped[int | None] = mapped_column(ForeignKey("criteria.id"), nullable=True)
    criterion_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    annotator: Mapped[str] = mapped_column(String(200))
    annotator_kind: Mapped[str] = mapped_column(String(10))
    label: Mapped[str | None] = mapped_column(String(10), nullable=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    second_unit_id: Mapped[str | None] = mapped_column(ForeignKey("units.unit_id"), nullable=True)
    shown_order: Mapped[str | None] = mapped_column(String(20), nullable=True)
    severity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rationale: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(300), default="")
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    blind: Mapped[bool | None] = mapped_column(nullable=True)
    """Made without seeing another label on the item (blind review); NULL: not known (imports, the API)."""


class EvaluatorRow(Base):
    __tablename__ = "evaluators"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    calibration: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRow(Base):
    __tablename__ = "datasets"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    criterion_id: Mapped[int | None] = mapped_column(ForeignKey("criteria.id"), nullable=True)
    items: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ScoreRow(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("run_id", "unit_id", "evaluator_version"),
                      Index("ix_scores_eval", "evaluator_name"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"))
    evaluator_name: Mapped[str] = mapped_column(String(200))
    evaluator_version: Mapped[str] = mapped_column(String(32))
    judge_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(20), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[str | None] = mapped_column(Text, nullable=True)
    parse_status: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MediaRow(Base):
    """Inline bytes of message media (images, audio, files), once per content: the key is their SHA-256
    (:class:`assay.traces.media.MediaPart` ``sha256``); the review page serves thumbnails from here."""

    __tablename__ = "media"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JudgeCacheRow(Base):
    __tablename__ = "judge_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    reply: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AccountRow(Base):
    """A person who may log in to the annotation app; ``role`` is admin or annotator."""

    __tablename__ = "accounts"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """An API key for ingestion and the REST API: only its SHA-256 is stored; it may be bound to an
    environment (``env``)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    env: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The environment the receiver gives units sent with this key when their resource names none."""


class ReviewQueueRow(Base):
    """Review-queue settings of one signature: sample size and labels needed per item (K)."""

    __tablename__ = "review_queues"
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, default=10)
    k: Mapped[int] = mapped_column(Integer, default=2)
    blind: Mapped[bool] = mapped_column(default=True, server_default=true())
    """Blind review: an annotator sees no other label on an item until they saved theirs."""


class QueueClaimRow(Base):
    """An item of a review queue handed to one annotator and not yet labelled (a lease).

    While a claim is live, the item counts as taken for that annotator, so two people
    asking at the same moment never both get an item that needed only one more label.
    """

    __tablename__ = "queue_claims"
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), primary_key=True)
    annotator: Mapped[str] = mapped_column(String(200), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


class OnlineScoreRow(Base):
    """Online scoring ledger: one row per (evaluator version, unit) ever taken by a worker, so a unit
    is scored online at most once per evaluator version. ``score_id`` is None while claimed (a lease
    from ``claimed_at``); set when the score row is written, in the same transaction."""

    __tablename__ = "online_scores"
    evaluator_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    evaluator_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    score_id: Mapped[int | None] = mapped_column(ForeignKey("scores.id"), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    scored_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditItemRow(Base):
    """A judge-audit item: an online score whose unit is sent to people for a label on the evaluator's
    criterion, so judge-human agreement can be tracked over time (see :mod:`assay.suite.audit`)."""

    __tablename__ = "audit_items"
    __table_args__ = (UniqueConstraint("unit_id", "evaluator_name", "evaluator_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    evaluator_name: Mapped[str] = mapped_column(String(200), index=True)
    evaluator_version: Mapped[str] = mapped_column(String(32))
    criterion_name: Mapped[str] = mapped_column(String(200))
    criterion_version: Mapped[int] = mapped_column(Integer, default=1)
    score_id: Mapped[int] = mapped_column(ForeignKey("scores.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignalRow(Base):
    """A failure signal (``assay.signals.FailureSignal``), append-only: a row is never edited or deleted.

    ``key`` is the signal's content id (writes are idempotent on it); ``weight`` is -ln(1 - strength)
    (capped), what the ``failed`` selection sums (noisy-OR in log space); ``producer_*`` repeat the
    lineage's type, name and version for queries. ``retracted_at`` is set on a detector's signal that a
    re-detection of the unit (new content, detector version or thresholds) no longer finds; a retracted
    signal no longer counts.
    """

    __tablename__ = "failure_signals"
    __table_args__ = (Index("ix_failure_signals_producer", "producer_type", "producer", "producer_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    source: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(40), index=True)
    strength: Mapped[float] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float)
    evidence: Mapped[str] = mapped_column(Text, default="")
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    time_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    producer_type: Mapped[str] = mapped_column(String(20))
    producer: Mapped[str] = mapped_column(String(200))
    producer_version: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retracted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SignalScanRow(Base):
    """Which unit content was last run through the detectors, under which detectors and settings
    (``detectors_hash``), with what the population detectors need of it: its workflow key and size."""

    __tablename__ = "signal_scans"
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    detectors_hash: Mapped[str] = mapped_column(String(64))
    workflow: Mapped[str] = mapped_column(String(600), default="")
    steps: Mapped[int] = mapped_column(Integer, default=0)
    population: Mapped[bool] = mapped_column(default=False)
    scanned_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeedbackRow(Base):
    """Explicit user feedback as received (thumbs or a score, optional comment), attached to its unit or
    pending until its trace arrives (``status``, ``reason``). Idempotent on ``key``, its content id."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_pending", "status", "trace_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    sender: Mapped[str] = mapped_column(String(200), default="")
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    target_unit: Mapped[str | None] = mapped_column(String(300), nullable=True)
    span_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    thumbs: Mapped[str | None] = mapped_column(String(4), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    origin: Mapped[str] = mapped_column(String(300), default="")
    time_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text, default="")
    unit_id: Mapped[str | None] = mapped_column(ForeignKey("units.unit_id"), nullable=True, index=True)
    signal_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    attached_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OpenCodingRow(Base):
    """One open-coding call (or cache hit) of a judge model on one unit's content: its note, the step it
    names, tokens and cost; the ledger the daily budget (UTC ``day``) is counted from."""

    __tablename__ = "open_coding"
    __table_args__ = (Index("ix_open_coding_day", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    prompt_version: Mapped[str] = mapped_column(String(32))
    day: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    cached: Mapped[bool] = mapped_column(default=False)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    went_wrong: Mapped[bool | None] = mapped_column(nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepNoteRow(Base):
    """A note on one step of a unit's timeline, append-only (a correction is a new row): a ``comment``
    or a ``correction`` (what the agent should have said or done at that step), with provenance.
    ``step`` is the 1-based index in the step timeline of the unit's content ``content_hash``."""

    __tablename__ = "step_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    span_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    author_kind: Mapped[str] = mapped_column(String(10), default="human")
    criterion_id: Mapped[int | None] = mapped_column(ForeignKey("criteria.id"), nullable=True)
    criterion_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(300), default="")
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueAdditionRow(Base):
    """A unit added to a signature's review queue beside its sample, with where it came from: a search, another
    signature, an evaluator's failed scores, or a contrast item (a unit of a neighbouring signature, or a passing
    unit, so the calibration set has both classes). Removing one deletes its row (the audit record keeps it)."""

    __tablename__ = "queue_additions"
    __table_args__ = (UniqueConstraint("signature_id", "unit_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), index=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"))
    origin: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    added_by: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueReviewerRow(Base):
    """A person assigned to review a signature's queue (when a queue has any, the queue hands items to them)."""

    __tablename__ = "queue_reviewers"
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), primary_key=True)
    annotator: Mapped[str] = mapped_column(String(200), primary_key=True)
    assigned_by: Mapped[str] = mapped_column(String(200), default="")
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """One audit record, append-only: who did what (``action``, e.g. ``signin.failed``, ``criterion.edit``) to
    what (``target``), when, from which client address, with details (see :mod:`assay._store.audit`)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_target", "action", "target"),
                      Index("ix_audit_log_action_client", "action", "client"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(300), default="")
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
