"""Span-level writes for live ingestion (the OTLP receiver): spans arrive in any order, in
batches, with their content possibly in separate log records.

One transaction per call, so a batch is acknowledged only once committed. Rules:

* a trace keeps the unit it was first stored under (``session/<id>`` when a span of the trace
  carried a session id then, else ``trace/<trace id>``);
* a span whose parent is not stored (yet) is kept as an orphan root and flagged ``orphan``; when
  the parent arrives in a later batch the flag is cleared (the child is linked);
* a child starting before its parent is kept with its raw times and flagged ``clock_skew``;
* log records are kept as received and merged into their span, whichever arrives first.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session as OrmSession

from assay._store.tables import LogRecordRow, SpanRow, UnitRow
from assay.traces.model import Span, SpanEvent
from assay.traces.otlp_json import with_events

if TYPE_CHECKING:
    from assay._store.store import Store


@dataclass
class SpanWrite:
    """What one :func:`add_spans` call changed; ``warnings`` are human-readable (clock skew)."""

    spans_new: int = 0
    spans_duplicate: int = 0
    units_new: int = 0
    orphans: int = 0
    linked: int = 0
    warnings: list[str] = field(default_factory=list)


def _flags(span: Span, orphan: bool, skew: bool) -> Span:
    flags = set(span.flags) - {"orphan", "clock_skew"}
    flags |= {"orphan"} if orphan else set()
    flags |= {"clock_skew"} if skew else set()
    return span if flags == set(span.flags) else span.model_copy(update={"flags": tuple(sorted(flags))})


def _skew_warning(span: Span, parent_start: int) -> str:
    return (f"clock skew: span {span.span_id} starts {(parent_start - span.start_ns) / 1e6:.3f} ms before its "
            f"parent {span.parent_span_id} (trace {span.trace_id}); raw times kept")


def _unit_ids(s: OrmSession, spans: list[Span]) -> dict[str, str]:
    traces = {sp.trace_id for sp in spans}
    rows = s.execute(select(SpanRow.trace_id, SpanRow.unit_id).where(SpanRow.trace_id.in_(traces)).distinct())
    known: dict[str, str] = {t: u for t, u in rows}
    sessions: dict[str, str] = {}
    for sp in spans:
        if sp.session_id:
            sessions.setdefault(sp.trace_id, sp.session_id)
    for t in traces - known.keys():
        known[t] = f"session/{sessions[t]}" if t in sessions else f"trace/{t}"
    return known


def add_spans(store: Store, spans: list[Span], source: str) -> SpanWrite:
    """Store spans (see module docstring); a span already stored (trace id + span id) is skipped.

    Args:
        store: the store.
        spans: valid spans, any order, any traces.
        source: recorded on units created here, e.g. ``"otlp-http"``.

    Returns:
        :class:`SpanWrite` counts, after commit.
    """
    out = SpanWrite()
    batch = list({(sp.trace_id, sp.span_id): sp for sp in spans}.values())
    out.spans_duplicate = len(spans) - len(batch)
    if not batch:
        return out
    with store.session() as s:
        traces = {sp.trace_id for sp in batch}
        rows = s.execute(select(SpanRow.trace_id, SpanRow.span_id, SpanRow.start_ns)
                         .where(SpanRow.trace_id.in_(traces))).all()
        starts = {(t, sid): st for t, sid, st in rows}
        new = [sp for sp in batch if (sp.trace_id, sp.span_id) not in starts]
        out.spans_duplicate += len(batch) - len(new)
        starts.update({(sp.trace_id, sp.span_id): sp.start_ns for sp in new})
        unit_of = _unit_ids(s, new)
        pending = _pending_logs(s, new)
        values: list[dict[str, object]] = []
        for sp in new:
            parent = starts.get((sp.trace_id, sp.parent_span_id or "")) if sp.parent_span_id else None
            orphan = bool(sp.parent_span_id) and parent is None
            skew = parent is not None and sp.start_ns < parent
            if skew and parent is not None:
                out.warnings.append(_skew_warning(sp, parent))
            out.orphans += orphan
            sp = _flags(sp, orphan, skew)
            if (sp.trace_id, sp.span_id) in pending:
                sp = with_events(sp, pending[(sp.trace_id, sp.span_id)])
            values.append({"trace_id": sp.trace_id, "span_id": sp.span_id, "unit_id": unit_of[sp.trace_id],
                           "start_ns": sp.start_ns, "parent_span_id": sp.parent_span_id,
                           "data": sp.model_dump(mode="json")})
        touched = {str(v["unit_id"]) for v in values}
        existing_units = set(s.scalars(select(UnitRow.unit_id).where(UnitRow.unit_id.in_(touched))))
        s.add_all([UnitRow(unit_id=uid, kind=uid.split("/", 1)[0], source=source, outcome="unknown", attributes={})
                   for uid in sorted(touched - existing_units)])
        out.units_new = len(touched - existing_units)
        s.flush()
        if values:
            s.execute(insert(SpanRow), values)
        out.spans_new = len(new)
        out.linked = _link_children(s, new, starts, out)
        _refresh_units(s, touched, existing_units, values)
    return out


def _pending_logs(s: OrmSession, spans: list[Span]) -> dict[tuple[str, str], list[SpanEvent]]:
    keys = [(sp.trace_id, sp.span_id) for sp in spans]
    out: dict[tuple[str, str], list[SpanEvent]] = defaultdict(list)
    for i in range(0, len(keys), 400):
        q = select(LogRecordRow).where(tuple_(LogRecordRow.trace_id, LogRecordRow.span_id).in_(keys[i:i + 400]))
        for row in s.scalars(q):
            out[(row.trace_id, row.span_id)].append(SpanEvent.model_validate(row.data))
    return out


def _link_children(s: OrmSession, new: list[Span], starts: dict[tuple[str, str], int], out: SpanWrite) -> int:
    """Clear ``orphan`` on stored children whose parent just arrived; flag their clock skew."""
    new_ids = {(sp.trace_id, sp.span_id) for sp in new}
    q = select(SpanRow.trace_id, SpanRow.span_id, SpanRow.parent_span_id).where(
        SpanRow.trace_id.in_({t for t, _ in new_ids}), SpanRow.parent_span_id.in_({sid for _, sid in new_ids}))
    stale = [(t, sid) for t, sid, parent in s.execute(q)
             if (t, parent) in new_ids and (t, sid) not in new_ids]
    linked = 0
    for key in stale:
        row = s.get(SpanRow, key)
        if row is None:
            continue
        child = Span.model_validate(row.data)
        parent_start = starts[(row.trace_id, child.parent_span_id or "")]
        skew = child.start_ns < parent_start
        if skew:
            out.warnings.append(_skew_warning(child, parent_start))
        row.data = _flags(child, False, skew).model_dump(mode="json")
        linked += "orphan" in child.flags
    return linked


def _refresh_units(s: OrmSession, unit_ids: set[str], existed: set[str] | None = None,
                   new_values: list[dict[str, object]] | None = None) -> None:
    """Recompute content hash and error state of units whose spans changed (same hash as
    :func:`assay._store.store.unit_content_hash`, from the stored JSON). A unit created by this
    write is hashed from ``new_values`` without reading the store back."""
    s.flush()
    fresh: dict[str, list[dict[str, object]]] = defaultdict(list)
    for v in new_values or []:
        fresh[str(v["unit_id"])].append(v["data"])  # type: ignore[arg-type]
    rows = {r.unit_id: r for r in s.scalars(select(UnitRow).where(UnitRow.unit_id.in_(unit_ids)))}
    for uid, row in rows.items():
        if existed is not None and uid not in existed:
            datas: list[dict[str, object]] = fresh[uid]
        else:
            datas = list(s.scalars(select(SpanRow.data).where(SpanRow.unit_id == uid)))
        parts = sorted(json.dumps(d, sort_keys=True) for d in datas)
        row.content_hash = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        row.has_error = any(d.get("status") == "error" for d in datas)


def add_log_records(store: Store, records: list[tuple[str, str, SpanEvent]]) -> tuple[int, int]:
    """Keep log records and merge each into its span if stored (else when the span arrives).

    Args:
        records: ``(trace id hex or "", span id hex or "", event)``.

    Returns:
        ``(records stored, spans updated)``, after commit.
    """
    updated = 0
    with store.session() as s:
        by_span: dict[tuple[str, str], list[SpanEvent]] = defaultdict(list)
        for trace_id, span_id, ev in records:
            s.add(LogRecordRow(trace_id=trace_id, span_id=span_id, time_ns=ev.time_ns, data=ev.model_dump(mode="json")))
            if trace_id and span_id:
                by_span[(trace_id, span_id)].append(ev)
        touched: set[str] = set()
        for (t, sid), events in by_span.items():
            row = s.get(SpanRow, (t, sid))
            if row is None:
                continue
            span = with_events(Span.model_validate(row.data), events)
            row.data = span.model_dump(mode="json")
            touched.add(row.unit_id)
            updated += 1
        _refresh_units(s, touched)
    return len(records), updated
