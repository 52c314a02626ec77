"""Search and filters over the stored units, one SQL query (SQLite and PostgreSQL alike).

Every filter is optional; given ones are intersected:

- ``q``: text in the unit id or anywhere in its spans' content (messages, tool arguments and results, case
  insensitive; the span JSON is searched as stored, so text with quotes or non-ASCII characters may not match
  inside it);
- ``source``: text in the unit's source (e.g. the file it was read from);
- ``signature``: a member of that failure signature;
- ``signal``: has a live failure signal of that kind (``tool_error``, ``user_frustration`` ...);
- ``state``: ``failed`` / ``passed``, by the unit's failure score (``[signals] fail_at``);
- ``label``: ``unlabelled`` (no human label), ``labelled``, ``pass`` or ``fail`` (a human gave that label);
- ``evaluator`` / ``verdict``: the latest score of that evaluator (any, when not named) has that verdict
  (``pass``, ``fail``) or status (``error``, ``unscored``, ``not_applicable``);
- ``since`` / ``until`` (dates, UTC, ``until`` inclusive): when the unit ran, its first span's start, or, for
  sources that record no times (their steps are numbered, e.g. tau-bench), when it was ingested.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, Text, and_, cast, func, or_, select

from assay._store.signal_rows import failed_units_query
from assay._store.tables import AnnotationRow, MemberRow, ScoreRow, SignalRow, SpanRow, UnitRow

REAL_TIME_NS = 10**18
"""Span starts before this (2001-09-09) are numbered steps, not times: such units are dated by ingestion."""
Verdict = Literal["pass", "fail", "error", "unscored", "not_applicable"]


class UnitFilter(BaseModel):
    """A search over units (see the module docstring); the query string of the search page."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    q: str = Field("", max_length=200)
    source: str = Field("", max_length=300)
    signature: int | None = None
    signal: str = Field("", max_length=40)
    state: Literal["", "failed", "passed"] = ""
    label: Literal["", "unlabelled", "labelled", "pass", "fail"] = ""
    evaluator: str = Field("", max_length=200)
    verdict: Literal["", "pass", "fail", "error", "unscored", "not_applicable"] = ""
    since: date | None = None
    until: date | None = None

    def is_empty(self) -> bool:
        """True when no filter is set (every unit matches)."""
        return self == UnitFilter()

    def params(self) -> dict[str, str]:
        """The filters that are set, as query parameters (what a shareable URL carries)."""
        return {k: str(v) for k, v in self.model_dump().items() if v not in ("", None)}


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _time_condition(f: UnitFilter) -> Any:
    """Units that ran in [since, until] (see the module docstring), or None without a range."""
    if f.since is None and f.until is None:
        return None
    lo = datetime.combine(f.since or date(1, 1, 1), datetime.min.time(), tzinfo=UTC)
    hi = datetime.combine(f.until or date(9999, 12, 30), datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    first = select(SpanRow.unit_id, func.min(SpanRow.start_ns).label("t0")).group_by(SpanRow.unit_id).subquery()
    lo_ns, hi_ns = int(max(lo.timestamp(), 0) * 1e9), int(min(hi.timestamp(), 9.2e9) * 1e9)
    timed = select(first.c.unit_id).where(first.c.t0 >= REAL_TIME_NS, first.c.t0 >= lo_ns, first.c.t0 < hi_ns)
    numbered = select(first.c.unit_id).where(first.c.t0 < REAL_TIME_NS)
    naive = (lo.replace(tzinfo=None), hi.replace(tzinfo=None))  # the store keeps UTC times without a zone
    return or_(UnitRow.unit_id.in_(timed),
               and_(or_(UnitRow.unit_id.in_(numbered), UnitRow.unit_id.not_in(select(first.c.unit_id))),
                    UnitRow.ingested_at >= naive[0], UnitRow.ingested_at < naive[1]))


def _verdict_condition(f: UnitFilter) -> Any:
    latest = select(func.max(ScoreRow.id)).group_by(ScoreRow.unit_id, ScoreRow.evaluator_name)
    if f.evaluator:
        latest = latest.where(ScoreRow.evaluator_name == f.evaluator)
    scores = select(ScoreRow.unit_id).where(ScoreRow.id.in_(latest))
    if f.verdict in ("pass", "fail"):
        scores = scores.where(ScoreRow.verdict == f.verdict)
    elif f.verdict:
        scores = scores.where(ScoreRow.status == f.verdict)
    return UnitRow.unit_id.in_(scores)


def _label_condition(f: UnitFilter) -> Any:
    human = select(AnnotationRow.unit_id).where(AnnotationRow.annotator_kind == "human")
    if f.label == "unlabelled":
        return UnitRow.unit_id.not_in(human)
    if f.label in ("pass", "fail"):
        human = human.where(AnnotationRow.label == f.label)
    return UnitRow.unit_id.in_(human)


def unit_query(f: UnitFilter, fail_at: float) -> Select[str]:
    """The ids of the units matching ``f``, newest ingested first (``fail_at``: ``[signals] fail_at``)."""
    conditions: list[Any] = []
    if f.q:
        like = _like(f.q)
        content = select(SpanRow.unit_id).where(func.lower(cast(SpanRow.data, Text)).like(like, escape="\\"))
        conditions.append(or_(func.lower(UnitRow.unit_id).like(like, escape="\\"), UnitRow.unit_id.in_(content)))
    if f.source:
        conditions.append(func.lower(UnitRow.source).like(_like(f.source), escape="\\"))
    if f.signature is not None:
        conditions.append(UnitRow.unit_id.in_(select(MemberRow.unit_id).where(MemberRow.signature_id == f.signature)))
    if f.signal:
        conditions.append(UnitRow.unit_id.in_(select(SignalRow.unit_id).where(SignalRow.kind == f.signal,
                                                                               SignalRow.retracted_at.is_(None))))
    if f.state:
        failed = UnitRow.unit_id.in_(failed_units_query(fail_at))
        conditions.append(failed if f.state == "failed" else ~failed)
    if f.label:
        conditions.append(_label_condition(f))
    if f.evaluator or f.verdict:
        conditions.append(_verdict_condition(f))
    when = _time_condition(f)
    if when is not None:
        conditions.append(when)
    return select(UnitRow.unit_id).where(*conditions).order_by(UnitRow.ingested_at.desc(), UnitRow.unit_id)
