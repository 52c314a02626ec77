"""Explicit user feedback: found in traces or sent to the REST API, kept in full, and turned into failure
signals when it is negative.

Where feedback comes from (``[signals.feedback]`` names the attributes):

* an OTel **span attribute** (``user.feedback.score``, ``user_feedback.score``, ``user.feedback.thumbs`` ...)
  or the same attributes on a **span event** or an **OTLP log record** (``/v1/logs``; a record that names
  only its trace is matched by trace id); an event named ``feedback`` / ``user_feedback`` may also use
  the plain names ``score``, ``thumbs``, ``value``, ``comment``;
* an **OpenInference annotation** on a span (``annotations.N.annotation.name`` containing ``feedback``,
  with ``.score`` or ``.label``);
* a **Langfuse score** in an export (a trace score whose name contains ``feedback``, ``thumb``, ``rating``
  ...);
* a **file record's field** (a chat-log record's ``feedback``, kept as unit attributes);
* ``POST /api/v1/feedback`` (by trace id, session id or unit id; thumbs or a score; a comment).

A value is a score in [0, 1], a boolean (true: thumbs up), -1 / +1, or text (``up``, ``down``,
``thumbs_down``, ``👎`` ...), read by one parser in every channel
(:func:`~assay.traces.record_fields.parse_feedback`); anything else (a 1-5 rating, ``"high"``, a number
as text) is not feedback: the REST API answers 400, a chat-log record and an OTLP log record are
rejected with the reason, a span keeps its trace and the receiver's answer warns. Every item is
stored (``feedback`` table, idempotent on its content key): positive feedback too, and feedback whose
trace is not stored yet, as *pending* with the reason, attached when the trace arrives. Negative
feedback attached to a unit becomes a signal: ``thumbs_down`` (a thumbs-down) or ``low_feedback_score``
(a score below ``score_below``), for the whole unit (no step), at the feedback's time.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.tables import FeedbackRow, SpanRow, UnitRow, utcnow
from assay.settings.signals import SignalSettings
from assay.signals.model import FailureSignal, FeedbackChannel, FeedbackLineage
from assay.signals.store import signal_of, write_signals
from assay.traces.model import Span, SpanEvent, Unit
from assay.traces.record_fields import FeedbackField, Thumbs, feedback_value, parse_feedback

FEEDBACK_EVENTS = frozenset({"feedback", "user_feedback", "user.feedback", "thumbs"})
"""Event names whose plain attributes ``score`` / ``thumbs`` / ``value`` / ``comment`` are feedback."""
_PLAIN = ("score", "thumbs", "value", "rating")
_OI = re.compile(r"^((?:trace\.|session\.)?(?:annotations|evaluations))\.(\d+)\.(?:annotation|evaluation)\."
                 r"(name|score|label|explanation)$")
parse_value = feedback_value
"""A feedback value as ``(thumbs, score)``, or None (:func:`assay.traces.record_fields.feedback_value`)."""


class FeedbackItem(BaseModel):
    """One piece of explicit feedback: what was said (thumbs or a score, a comment), about what (a trace,
    a session or a unit, optionally a span), how it arrived.

    Raises (on construction):
        pydantic.ValidationError: no target, neither or both of thumbs and score, a score outside [0, 1],
            a trace id or span id that is not lowercase hex of the right length.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: FeedbackChannel
    sender: str | None = Field(default=None, description="API key owner or app, when known")
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    session_id: str | None = Field(default=None, min_length=1)
    unit_id: str | None = Field(default=None, min_length=1)
    span_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    thumbs: Thumbs | None = None
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    comment: str = Field(default="", max_length=20_000)
    origin: str = Field(default="", max_length=300, description="what carried it, e.g. span 'chat' attribute "
                        "user.feedback.score")
    time_ns: int = Field(default=0, ge=0, description="when it was given (ns, UTC); 0 when unknown")

    @model_validator(mode="after")
    def _complete(self) -> FeedbackItem:
        if not (self.trace_id or self.session_id or self.unit_id):
            raise ValueError("feedback needs a trace_id, session_id or unit_id")
        if (self.thumbs is None) == (self.score is None):
            raise ValueError("feedback needs exactly one of thumbs ('up' or 'down') and score (in [0, 1])")
        return self

    @property
    def key(self) -> str:
        """Content id (sha256 hex, 32 chars): the same feedback received twice is stored once."""
        body = json.dumps([self.channel, self.trace_id, self.session_id, self.unit_id, self.span_id, self.thumbs,
                           self.score, self.comment, self.origin, self.time_ns], ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    @property
    def what(self) -> str:
        """``thumbs down`` / ``feedback score 0.2``."""
        return f"thumbs {self.thumbs}" if self.thumbs else f"feedback score {self.score:g}"


def feedback_signal(item: FeedbackItem, unit_id: str, settings: SignalSettings) -> FailureSignal | None:
    """The failure signal of negative feedback on ``unit_id``; None for positive feedback (or when
    ``[signals.feedback]`` is disabled)."""
    cfg = settings.feedback
    if not cfg.enabled:
        return None
    if item.thumbs == "down":
        kind, strength = "thumbs_down", cfg.thumbs_down_strength
    elif item.score is not None and item.score < cfg.score_below:
        kind, strength = "low_feedback_score", cfg.low_score_strength
    else:
        return None
    evidence = item.what + (f" ({item.origin})" if item.origin else "") + (f": {item.comment}" if item.comment else "")
    evidence = " ".join(evidence.split())
    if len(evidence) > settings.evidence_chars:
        evidence = evidence[:settings.evidence_chars - 1] + "…"
    return FailureSignal(unit_id=unit_id, source="feedback", kind=kind, strength=strength, evidence=evidence,
                         time_ns=item.time_ns or time.time_ns(),
                         lineage=FeedbackLineage(channel=item.channel, sender=item.sender))


# --- finding feedback in traces ----------------------------------------------------------------------
def _comment(attrs: Mapping[str, Any], names: Sequence[str]) -> str:
    return next((str(attrs[n]) for n in names if isinstance(attrs.get(n), str) and attrs[n].strip()), "")


def _field(name: str) -> FeedbackField:
    """What an OTel attribute holds by its name: ``*.thumbs`` thumbs, ``*.score`` a score, others either."""
    last = name.rsplit(".", 1)[-1]
    return "thumbs" if last == "thumbs" else "score" if last == "score" else "feedback"


def from_attributes(attrs: Mapping[str, Any], settings: SignalSettings, channel: FeedbackChannel, origin: str,
                    target: Mapping[str, Any], names: Sequence[str] | None = None,
                    problems: list[str] | None = None) -> list[FeedbackItem]:
    """Feedback items in one attribute map (a span's, an event's, a unit's): one per feedback attribute
    present (``names``, default ``[signals.feedback] attributes``) holding a feedback value
    (:func:`~assay.traces.record_fields.parse_feedback`: an OTel ``*.thumbs`` attribute a thumbs value, a
    ``*.score`` a score, as the REST API's fields; a record's attributes either).

    Args:
        target: the :class:`FeedbackItem` fields saying what it is about (``trace_id``, ``unit_id``,
            ``span_id``, ``time_ns``).
        problems: when given, gets ``"NAME: reason"`` for each feedback attribute whose value is none.
    """
    cfg = settings.feedback
    out = []
    for name in names or cfg.attributes:
        if attrs.get(name) is None:
            continue
        try:
            thumbs, score = parse_feedback(attrs[name], _field(name) if channel != "record" else "feedback")
        except ValueError as exc:
            if problems is not None:
                problems.append(f"{name}: {exc}")
            continue
        out.append(FeedbackItem(channel=channel, thumbs=thumbs, score=score, origin=f"{origin} {name}",
                                comment=_comment(attrs, cfg.comment_attributes + ("comment",)), **target))
    return out


def _openinference(attrs: Mapping[str, Any], settings: SignalSettings, origin: str,
                   target: Mapping[str, Any]) -> list[FeedbackItem]:
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in attrs.items():
        m = _OI.match(key) if key.endswith((".name", ".score", ".label", ".explanation")) else None
        if m:
            entries.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = value
    out = []
    for (prefix, n), entry in sorted(entries.items()):
        name = str(entry.get("name", ""))
        if not any(w in name.lower() for w in settings.feedback.score_names):
            continue
        parsed = parse_value(entry["score"]) if "score" in entry else parse_value(entry.get("label"))
        if parsed is not None:
            out.append(FeedbackItem(channel="openinference", thumbs=parsed[0], score=parsed[1],
                                    comment=str(entry.get("explanation") or ""),
                                    origin=f"{origin} {prefix}.{n} ({name})"[:300], **target))
    return out


def _event(ev: SpanEvent, trace_id: str, span_id: str | None, settings: SignalSettings,
           span: Span | None = None, problems: list[str] | None = None) -> list[FeedbackItem]:
    """Feedback in a span event or an OTLP log record; a log record gives the same items whether it is read
    as it arrives or later, joined to its span."""
    attrs = {**({str(k): v for k, v in ev.body.items()} if isinstance(ev.body, dict) else {}), **ev.attributes}
    if ev.source == "log_record" or span is None:
        origin, when = f"log record '{ev.name}'"[:200], ev.time_ns
    else:
        origin, when = f"event '{ev.name}' on span '{span.name}'"[:200], ev.time_ns or span.end_ns
    target = {"trace_id": trace_id, "span_id": span_id or None, "time_ns": when}
    found = from_attributes(attrs, settings, "otel_event", origin, target, problems=problems)
    if not found and ev.name.lower() in FEEDBACK_EVENTS:
        found = from_attributes(attrs, settings, "otel_event", origin, target, names=_PLAIN, problems=problems)
    return found


def from_span(span: Span, settings: SignalSettings, problems: list[str] | None = None) -> list[FeedbackItem]:
    """Feedback on one span: its attributes, OpenInference annotations, and its events (joined log records
    included), each targeting the span's trace; ``problems`` (when given) gets each feedback attribute
    holding no feedback value, with the reason."""
    if not settings.feedback.enabled:
        return []
    origin = f"span '{span.name}'"[:200]
    target: dict[str, Any] = {"trace_id": span.trace_id, "span_id": span.span_id,
                              "time_ns": span.end_ns or span.start_ns}
    found = from_attributes(span.attributes, settings, "otel_attribute", f"{origin} attribute", target,
                            problems=problems)
    found += _openinference(span.attributes, settings, origin, target)
    for ev in span.events:
        found += _event(ev, span.trace_id, span.span_id, settings, span, problems)
    return found


def from_log_records(records: Iterable[tuple[str, str, SpanEvent]], settings: SignalSettings) -> list[FeedbackItem]:
    """Feedback in OTLP log records ``(trace id, span id, event)``; a record without a trace id has no
    target and is passed over."""
    if not settings.feedback.enabled:
        return []
    return [item for trace_id, span_id, ev in records if trace_id
            for item in _event(ev, trace_id, span_id, settings)]


def check_log_records(records: Iterable[tuple[str, str, SpanEvent]], settings: SignalSettings
                      ) -> tuple[list[tuple[str, str, SpanEvent]], list[str]]:
    """Split OTLP log records ``(trace id, span id, event)`` into those kept and the reasons of those rejected:
    a record about a trace whose feedback attribute holds no feedback value (``user.feedback.score = "high"``,
    ``7``, ``thumbs = "meh"``), as the REST API and the chat-log readers reject it."""
    kept, rejected = [], []
    for trace_id, span_id, ev in records:
        problems: list[str] = []
        if trace_id and settings.feedback.enabled:
            _event(ev, trace_id, span_id, settings, problems=problems)
        if problems:
            rejected.append(f"log record (traceId {trace_id}" + (f", spanId {span_id}" if span_id else "")
                            + f") rejected: {'; '.join(problems)}")
        else:
            kept.append((trace_id, span_id, ev))
    return kept, rejected


def _langfuse(unit: Unit, settings: SignalSettings) -> list[FeedbackItem]:
    from assay.traces.model import timestamp_ns

    out = []
    scores = unit.attributes.get("langfuse_scores")
    for score in scores if isinstance(scores, list) else []:
        name = str(score.get("name", "")) if isinstance(score, dict) else ""
        if not name or not any(w in name.lower() for w in settings.feedback.score_names):
            continue
        parsed = parse_value(score.get("stringValue") if score.get("dataType") == "CATEGORICAL" else score.get("value"))
        try:
            when = timestamp_ns(score["timestamp"]) if score.get("timestamp") else 0
        except ValueError:
            when = 0
        if parsed is not None:
            out.append(FeedbackItem(channel="langfuse", unit_id=unit.unit_id, thumbs=parsed[0], score=parsed[1],
                                    comment=str(score.get("comment") or ""), origin=f"Langfuse score {name!r}"[:300],
                                    time_ns=when))
    return out


def from_unit(unit: Unit, settings: SignalSettings) -> list[FeedbackItem]:
    """Every feedback item a stored or read unit carries: its record's fields (unit attributes), its
    Langfuse scores and each span's feedback (:func:`from_span`)."""
    if not settings.feedback.enabled:
        return []
    end = max((s.end_ns for s in unit.spans), default=0)
    found = from_attributes(unit.attributes, settings, "record", "record", {"unit_id": unit.unit_id, "time_ns": end})
    found += _langfuse(unit, settings)
    for span in unit.spans:
        found += from_span(span, settings)
    return found


# --- storing and attaching ----------------------------------------------------------------------------
class FeedbackResult(BaseModel):
    """What became of one feedback item: ``attached`` to a unit, or ``pending`` (its trace, session or
    unit is not stored yet; attached when it arrives) with the reason."""

    model_config = ConfigDict(frozen=True)

    feedback_id: int
    status: Literal["attached", "pending"]
    unit_id: str | None = Field(description="the unit it is attached to; null while pending")
    reason: str = Field(description="why it is pending, or a note (positive feedback makes no signal)")
    signal: FailureSignal | None = Field(description="the failure signal it made; null for positive feedback")
    duplicate: bool = Field(default=False, description="the same feedback was received before (stored once)")


def _resolve(s: OrmSession, item: FeedbackItem | FeedbackRow) -> tuple[str | None, str]:
    """The stored unit the feedback is about, or None and why not."""
    unit_id = item.unit_id if isinstance(item, FeedbackItem) else item.target_unit
    if unit_id:
        if s.get(UnitRow, unit_id) is not None:
            return unit_id, ""
        if unit_id.startswith("trace/"):
            owner = s.scalar(select(SpanRow.unit_id).where(SpanRow.trace_id == unit_id[6:]).limit(1))
            if owner is not None:
                return owner, ""
        return None, f"no stored unit {unit_id!r} yet: kept pending, attached when it arrives"
    if item.session_id:
        if s.get(UnitRow, f"session/{item.session_id}") is not None:
            return f"session/{item.session_id}", ""
        return None, f"no stored session {item.session_id!r} yet: kept pending, attached when it arrives"
    owner = s.scalar(select(SpanRow.unit_id).where(SpanRow.trace_id == item.trace_id).limit(1))
    if owner is not None:
        return owner, ""
    return None, f"no stored trace {item.trace_id!r} yet: kept pending, attached when it arrives"


def _item(row: FeedbackRow) -> FeedbackItem:
    return FeedbackItem.model_validate({
        "channel": row.channel, "sender": row.sender or None, "trace_id": row.trace_id, "session_id": row.session_id,
        "unit_id": row.target_unit, "span_id": row.span_id, "thumbs": row.thumbs, "score": row.score,
        "comment": row.comment, "origin": row.origin, "time_ns": row.time_ns})


def _attach(s: OrmSession, row: FeedbackRow, item: FeedbackItem, unit_id: str, settings: SignalSettings) -> None:
    signal = feedback_signal(item, unit_id, settings)
    if signal is not None:
        write_signals(s, [signal])
    row.status, row.unit_id, row.attached_at = "attached", unit_id, utcnow()
    row.signal_key = signal.key if signal is not None else None
    row.reason = "" if signal is not None else "not negative: no failure signal"


def _result(s: OrmSession, row: FeedbackRow, duplicate: bool = False) -> FeedbackResult:
    from assay._store.tables import SignalRow

    sig = s.scalar(select(SignalRow).where(SignalRow.key == row.signal_key)) if row.signal_key else None
    return FeedbackResult.model_validate({"feedback_id": row.id, "status": row.status, "unit_id": row.unit_id,
                                          "reason": row.reason, "signal": signal_of(sig) if sig is not None else None,
                                          "duplicate": duplicate})


def record_feedback(store: Store, items: Sequence[FeedbackItem], settings: SignalSettings) -> list[FeedbackResult]:
    """Store feedback (each item once, by its key), attach it to its unit when stored, and write the failure
    signal of negative feedback; feedback whose unit is not stored yet is kept pending with the reason.

    Returns:
        one result per item, in order (a repeated item: the first one's result, ``duplicate`` set).
    """
    results = []
    with store.session() as s:
        known = {r.key: r for r in s.scalars(select(FeedbackRow).where(FeedbackRow.key.in_([i.key for i in items])))}
        for item in items:
            if item.key in known:
                results.append(_result(s, known[item.key], duplicate=True))
                continue
            row = FeedbackRow(key=item.key, channel=item.channel, sender=item.sender or "", trace_id=item.trace_id,
                              session_id=item.session_id, target_unit=item.unit_id, span_id=item.span_id,
                              thumbs=item.thumbs, score=item.score, comment=item.comment, origin=item.origin,
                              time_ns=item.time_ns, status="pending", received_at=utcnow())
            unit_id, row.reason = _resolve(s, item)
            if unit_id is not None:
                _attach(s, row, item, unit_id, settings)
            s.add(row)
            s.flush()
            known[item.key] = row
            results.append(_result(s, row))
    return results


def attach_pending(store: Store, settings: SignalSettings, trace_ids: Iterable[str] | None = None,
                   session_ids: Iterable[str] | None = None, unit_ids: Iterable[str] | None = None) -> int:
    """Attach pending feedback whose trace, session or unit is stored now (all pending feedback when no
    ids are given; else only feedback naming one of them). Returns the number attached."""
    q = select(FeedbackRow).where(FeedbackRow.status == "pending")
    if trace_ids is not None or session_ids is not None or unit_ids is not None:
        q = q.where(or_(FeedbackRow.trace_id.in_(list(trace_ids or ())),
                        FeedbackRow.session_id.in_(list(session_ids or ())),
                        FeedbackRow.target_unit.in_(list(unit_ids or ()))))
    attached = 0
    with store.session() as s:
        for row in s.scalars(q.order_by(FeedbackRow.id)).all():
            unit_id, reason = _resolve(s, row)
            if unit_id is None:
                continue
            _attach(s, row, _item(row), unit_id, settings)
            attached += 1
    return attached


def pending_feedback(store: Store) -> int:
    """How much feedback is waiting for its trace, session or unit."""
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(FeedbackRow).where(FeedbackRow.status == "pending")) or 0)


class FeedbackRecord(BaseModel):
    """One stored feedback item as received, with what became of it."""

    model_config = ConfigDict(frozen=True)

    feedback_id: int
    channel: str
    sender: str
    trace_id: str | None
    session_id: str | None
    unit_id: str | None = Field(description="the unit id it named (not the one it is attached to)")
    span_id: str | None
    thumbs: str | None
    score: float | None
    comment: str
    origin: str
    time_ns: int
    status: Literal["attached", "pending"]
    reason: str
    attached_to: str | None = Field(description="the unit it is attached to")
    signal_key: str | None = Field(description="key of the failure signal it made, if any")
    received_at: datetime
    attached_at: datetime | None


def list_feedback(store: Store, status: Literal["pending", "attached"] | None = None, limit: int | None = None,
                  offset: int = 0) -> list[FeedbackRecord]:
    """Stored feedback, oldest first (``status``: only pending or only attached)."""
    q = select(FeedbackRow).order_by(FeedbackRow.id)
    if status is not None:
        q = q.where(FeedbackRow.status == status)
    with store.session() as s:
        rows = s.scalars(q.offset(offset).limit(limit) if limit else q.offset(offset))
        return [FeedbackRecord.model_validate({
            "feedback_id": r.id, "channel": r.channel, "sender": r.sender, "trace_id": r.trace_id,
            "session_id": r.session_id, "unit_id": r.target_unit, "span_id": r.span_id, "thumbs": r.thumbs,
            "score": r.score, "comment": r.comment, "origin": r.origin, "time_ns": r.time_ns, "status": r.status,
            "reason": r.reason, "attached_to": r.unit_id, "signal_key": r.signal_key, "received_at": r.received_at,
            "attached_at": r.attached_at}) for r in rows]
