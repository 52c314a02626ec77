"""Span-level writes for live ingestion (the OTLP receiver): spans arrive in any order, in
batches, with their content possibly in separate log records.

One transaction per call, so a batch is acknowledged only once committed. Rules:

* a trace's unit is ``session/<id>`` when a span of the trace carries a session id
  (``gen_ai.conversation.id`` / ``session.id``), else ``trace/<trace id>``. A session id that
  arrives late (in a later batch than spans already stored as ``trace/<trace id>``) **moves** the
  trace into the session unit and deletes the trace unit, so no duplicate unit is left. What was
  attached to the old unit id is re-pointed to the session unit (annotations, scores, severe flags,
  signature membership, the signature's representative unit; any other table with a foreign key to
  ``units.unit_id`` too): the judgments were made on content the session unit still holds. A row
  that would collide on a unique key with one the session unit already has (e.g. the same run scored
  both units) is dropped, the session unit's own row kept (rows pointing at a dropped row lose the
  pointer, or go too when it is required, e.g. an audit item of a dropped score), and per-unit
  caches (embeddings, severe scans, signal scans, queue claims) of the old id are dropped to be
  recomputed; failure signals moved to the session unit get their content keys recomputed. The
  old id is kept in the session unit's ``attributes["merged_from"]``, and :func:`resolve_unit_id`
  maps it to the session unit (the review page and the REST API redirect). Annotations keep their
  ``created_at`` and provenance; only their ``unit_id`` changes. A trace stored under one session
  keeps it (a different session id arriving later does not move it);
* a span sent more than once (an in-progress copy without end time, then the final one; a retried
  batch) is merged with its other copies, in the batch or stored: the most complete copy wins field by
  field whatever the order (:mod:`assay.traces.merge`), the span is flagged ``merged`` when the copies
  differed, and the unit's content hash and error state follow the merged span;
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
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    cast,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session as OrmSession

from assay._store.signal_rows import rekey_unit
from assay._store.tables import Base, EmbeddingRow, LogRecordRow, MediaRow, SignatureRow, SpanRow, UnitRow
from assay.exceptions import NotFoundError
from assay.traces.environment import Environment, spans_environment
from assay.traces.media import span_media
from assay.traces.merge import merge_copies
from assay.traces.model import Span, SpanEvent, Unit
from assay.traces.otlp.mapping import with_events

if TYPE_CHECKING:
    from assay._store.store import Store


@dataclass
class SpanWrite:
    """What one :func:`add_spans` call changed; ``warnings`` are human-readable (clock skew)."""

    spans_new: int = 0
    spans_duplicate: int = 0
    spans_merged: int = 0
    """Spans whose copies (in this batch, or stored before) differed and were merged."""
    units_new: int = 0
    orphans: int = 0
    linked: int = 0
    warnings: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    """``(old unit id, new unit id)`` for traces moved into a session unit by a late session id."""


def _flags(span: Span, orphan: bool, skew: bool) -> Span:
    flags = set(span.flags) - {"orphan", "clock_skew"}
    flags |= {"orphan"} if orphan else set()
    flags |= {"clock_skew"} if skew else set()
    return span if flags == set(span.flags) else span.model_copy(update={"flags": tuple(sorted(flags))})


def _skew_warning(span: Span, parent_start: int) -> str:
    return (f"clock skew: span {span.span_id} starts {(parent_start - span.start_ns) / 1e6:.3f} ms before its "
            f"parent {span.parent_span_id} (trace {span.trace_id}); raw times kept")


def _unit_ids(s: OrmSession, spans: list[Span]) -> tuple[dict[str, str], dict[str, str]]:
    """``({trace id: unit id}, {trace id: old unit id})`` for the traces of ``spans``; the second
    dict names the stored trace units that a late session id moves into a session unit."""
    traces = {sp.trace_id for sp in spans}
    rows = s.execute(select(SpanRow.trace_id, SpanRow.unit_id).where(SpanRow.trace_id.in_(traces)).distinct())
    known: dict[str, str] = {t: u for t, u in rows}
    sessions: dict[str, str] = {}
    for sp in spans:
        if sp.session_id:
            sessions.setdefault(sp.trace_id, sp.session_id)
    moves: dict[str, str] = {}
    for t in traces:
        target = f"session/{sessions[t]}" if t in sessions else f"trace/{t}"
        if t not in known:
            known[t] = target
        elif t in sessions and known[t] == f"trace/{t}":
            moves[t] = known[t]
            known[t] = target
    return known, moves


_CACHE_TABLES = frozenset({"severe_scans", "queue_claims", "signal_scans"})
"""Per-unit rows recomputed on demand: dropped for a moved unit instead of re-pointed."""


def _unit_fk_columns() -> list[tuple[Table, Column[str]]]:
    """Every column (outside ``units`` and ``spans``) with a foreign key to ``units.unit_id``."""
    out = []
    for table in Base.metadata.sorted_tables:
        if table.name in ("units", "spans"):
            continue
        out += [(table, col) for col in table.columns
                if any(fk.target_fullname == "units.unit_id" for fk in col.foreign_keys)]
    return out


def _repoint(s: OrmSession, table: Table, col: Column[str], old: str, new: str) -> None:
    """Re-point ``table`` rows from unit ``old`` to ``new``; a row that would collide on a unique
    key with a row of ``new`` is dropped."""
    if table.name in _CACHE_TABLES:
        s.execute(delete(table).where(col == old))
        return
    keys = [list(c.columns) for c in table.constraints
            if isinstance(c, PrimaryKeyConstraint | UniqueConstraint) and col.name in c.columns]
    for row in s.execute(select(table).where(col == old)).mappings().all():
        where = [c == row[c.name] for c in table.primary_key.columns]
        clash = any(s.execute(select(col).where(*[(c == new) if c is col else (c == row[c.name]) for c in key])
                              .limit(1)).first() for key in keys)
        if clash:
            _drop_references(s, table, row)
            s.execute(delete(table).where(*where))
        else:
            s.execute(update(table).where(*where).values({col.name: new}))


def _drop_references(s: OrmSession, table: Table, row: Any) -> None:
    """Before a row of ``table`` (single-column primary key) is dropped: rows pointing at it by a
    foreign key lose the pointer (nullable) or are dropped too (e.g. an audit item of a dropped score)."""
    pk = list(table.primary_key.columns)
    if len(pk) != 1:
        return
    for other in Base.metadata.sorted_tables:
        for col in other.columns:
            if any(fk.column is pk[0] for fk in col.foreign_keys):
                if col.nullable:
                    s.execute(update(other).where(col == row[pk[0].name]).values({col.name: None}))
                else:
                    s.execute(delete(other).where(col == row[pk[0].name]))


def _move_trace(s: OrmSession, trace_id: str, old: str, new: str) -> None:
    """Move a stored trace from its trace unit into a session unit (which must exist), re-point
    what referred to the old unit, delete the old unit and keep its id as an alias of the new."""
    s.execute(update(SpanRow).where(SpanRow.trace_id == trace_id, SpanRow.unit_id == old).values(unit_id=new))
    for table, col in _unit_fk_columns():
        _repoint(s, table, col, old, new)
    rekey_unit(s, new)  # failure signals' content keys name their unit
    s.execute(delete(EmbeddingRow).where(EmbeddingRow.unit_id == old))
    s.execute(update(SignatureRow).where(SignatureRow.representative_unit == old).values(representative_unit=new))
    row, target = s.get(UnitRow, old), s.get(UnitRow, new)
    if target is not None:
        merged = list((target.attributes or {}).get("merged_from", []))
        target.attributes = {**(target.attributes or {}), "merged_from": [*merged, old]}
    if row is not None and s.scalar(select(SpanRow.span_id).where(SpanRow.unit_id == old).limit(1)) is None:
        if target is not None and row.outcome != "unknown" and target.outcome == "unknown":
            target.outcome, target.reward = row.outcome, row.reward
        s.delete(row)
    s.flush()


def unit_row(store: Store, unit_id: str) -> UnitRow | None:
    """The unit's row without its spans (``content_hash`` says whether cached views are current)."""
    with store.session() as s:
        return s.get(UnitRow, unit_id)


def load_unit(store: Store, unit_id: str) -> Unit:
    """:meth:`Store.unit`, faster for long units: each span's stored JSON text is validated by
    pydantic-core directly (``Span.model_validate_json``), skipping ``json.loads`` and a second pass.

    Raises:
        NotFoundError: no such unit.
    """
    with store.session() as s:
        row = s.get(UnitRow, unit_id)
        if row is None:
            raise NotFoundError("unit", unit_id)
        texts = s.scalars(select(cast(SpanRow.data, Text)).where(SpanRow.unit_id == unit_id)
                          .order_by(SpanRow.start_ns)).all()
        return Unit(unit_id=row.unit_id, kind=row.kind, source=row.source,
                    spans=tuple(Span.model_validate_json(text) for text in texts), outcome=row.outcome,
                    reward=row.reward, attributes=row.attributes or {})


def orphan_count(store: Store, unit_id: str) -> int:
    """Spans of the unit whose parent is not stored (flagged ``orphan``): one anti-join on the span keys."""
    from sqlalchemy import and_, exists, func
    from sqlalchemy.orm import aliased

    parent = aliased(SpanRow)
    has_parent = exists().where(and_(parent.trace_id == SpanRow.trace_id, parent.span_id == SpanRow.parent_span_id))
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(SpanRow).where(
            SpanRow.unit_id == unit_id, SpanRow.parent_span_id.is_not(None), ~has_parent)) or 0)


def resolve_unit_id(store: Store, unit_id: str) -> str | None:
    """The unit id that holds ``unit_id`` now: itself when stored, the session unit it was merged
    into (late session id, see module docstring), or None when neither exists."""
    with store.session() as s:
        if s.get(UnitRow, unit_id) is not None:
            return unit_id
        if not unit_id.startswith("trace/"):
            return None
        owner = s.scalar(select(SpanRow.unit_id).where(SpanRow.trace_id == unit_id.removeprefix("trace/")).limit(1))
        return owner


def add_spans(store: Store, spans: list[Span], source: str, environment: Environment | None = None) -> SpanWrite:
    """Store spans (see module docstring). A span already stored, or sent twice in the batch (same trace
    id + span id), is merged with its other copies (:func:`assay.traces.merge.merge_copies`: the most
    complete copy wins field by field, whatever the order); identical copies count as duplicates.

    Args:
        store: the store.
        spans: valid spans, any order, any traces.
        source: recorded on units created here, e.g. ``"otlp-http"``.
        environment: the environment and release of a touched unit that has none yet and whose new spans
            name none (an API key's bound environment); the spans' own (resource) attributes win.

    Returns:
        :class:`SpanWrite` counts, after commit.
    """
    out = SpanWrite()
    batch, out.spans_duplicate, merged_keys = merge_batch(spans)
    if not batch:
        return out
    with store.session() as s:
        traces = {sp.trace_id for sp in batch}
        rows = s.execute(select(SpanRow.trace_id, SpanRow.span_id, SpanRow.start_ns)
                         .where(SpanRow.trace_id.in_(traces))).all()
        starts = {(t, sid): st for t, sid, st in rows}
        new = [sp for sp in batch if (sp.trace_id, sp.span_id) not in starts]
        updated = _merge_stored(s, [sp for sp in batch if (sp.trace_id, sp.span_id) in starts], out, merged_keys)
        out.spans_merged = len(merged_keys)
        starts.update({(sp.trace_id, sp.span_id): sp.start_ns for sp in new})
        starts.update({(sp.trace_id, sp.span_id): sp.start_ns for _, sp in updated})
        unit_of, moves = _unit_ids(s, [*new, *(sp for _, sp in updated)])
        pending = _pending_logs(s, new)
        values: list[dict[str, object]] = []
        written: list[Span] = [sp for _, sp in updated]
        for sp in new:
            sp = _placed(sp, starts, out)
            if (sp.trace_id, sp.span_id) in pending:
                sp = with_events(sp, pending[(sp.trace_id, sp.span_id)])
            written.append(sp)
            values.append({"trace_id": sp.trace_id, "span_id": sp.span_id, "unit_id": unit_of[sp.trace_id],
                           "start_ns": sp.start_ns, "parent_span_id": sp.parent_span_id,
                           "data": sp.model_dump(mode="json")})
        touched = {str(v["unit_id"]) for v in values} | {unit_of[sp.trace_id] for _, sp in updated}
        existing_units = set(s.scalars(select(UnitRow.unit_id).where(UnitRow.unit_id.in_(touched))))
        s.add_all([UnitRow(unit_id=uid, kind=uid.split("/", 1)[0], source=source, outcome="unknown", attributes={})
                   for uid in sorted(touched - existing_units)])
        out.units_new = len(touched - existing_units)
        s.flush()
        for trace_id, old in sorted(moves.items()):
            _move_trace(s, trace_id, old, unit_of[trace_id])
            out.moved.append((old, unit_of[trace_id]))
        existing_units |= {unit_of[t] for t in moves}
        for row, sp in updated:
            sp = _placed(sp, starts, out)
            row.data, row.start_ns, row.parent_span_id = sp.model_dump(mode="json"), sp.start_ns, sp.parent_span_id
        if values:
            s.execute(insert(SpanRow), values)
        store_media(s, written)
        out.spans_new = len(new)
        out.linked = _link_children(s, new, starts, out)
        _refresh_units(s, touched, existing_units, values)
        _place_units(s, written, unit_of, environment)
    if merged_keys:
        out.warnings.insert(0, _merge_warning(merged_keys))
    return out


def _place_units(s: OrmSession, spans: list[Span], unit_of: dict[str, str], fallback: Environment | None) -> None:
    """Give touched units without an environment or release the one their new or merged ``spans`` name, else
    ``fallback``."""
    by_unit: dict[str, list[Span]] = defaultdict(list)
    for sp in spans:
        by_unit[unit_of[sp.trace_id]].append(sp)
    rows = s.scalars(select(UnitRow).where(UnitRow.unit_id.in_(list(by_unit)),
                                           or_(UnitRow.env.is_(None), UnitRow.release.is_(None))))
    for row in rows:
        found = spans_environment(by_unit[row.unit_id]).or_else(fallback)
        row.env, row.release = row.env or found.name, row.release or found.release


def merge_batch(spans: list[Span]) -> tuple[list[Span], int, set[tuple[str, str]]]:
    """One span per (trace id, span id) of a batch: ``(spans, identical copies dropped, ids whose copies
    differed and were merged)``."""
    groups: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for sp in spans:
        groups[(sp.trace_id, sp.span_id)].append(sp)
    out: list[Span] = []
    duplicates = 0
    merged: set[tuple[str, str]] = set()
    for key, copies in groups.items():
        span, differed = merge_copies(copies)
        out.append(span)
        if differed:
            merged.add(key)
        else:
            duplicates += len(copies) - 1
    return out, duplicates, merged


def stored_rows(s: OrmSession, keys: list[tuple[str, str]]) -> dict[tuple[str, str], SpanRow]:
    """The stored rows among ``keys`` (trace id, span id), by key (400 keys per query).

    Each query is ``trace_id IN (...) AND span_id IN (...)``, which the primary key's index serves, and
    the exact keys are picked from its rows: SQLite answers a row-value ``(trace_id, span_id) IN (...)``
    with a scan of the whole spans table, which made every unit's ingest slower as the store grew.
    """
    rows: dict[tuple[str, str], SpanRow] = {}
    for i in range(0, len(keys), 400):
        part = keys[i:i + 400]
        wanted = set(part)
        q = select(SpanRow).where(SpanRow.trace_id.in_(list({t for t, _ in part})),
                                  SpanRow.span_id.in_(list({sp for _, sp in part})))
        for row in s.scalars(q):
            if (row.trace_id, row.span_id) in wanted:
                rows[(row.trace_id, row.span_id)] = row
    return rows


def _merge_stored(s: OrmSession, spans: list[Span], out: SpanWrite,
                  merged_keys: set[tuple[str, str]]) -> list[tuple[SpanRow, Span]]:
    """Merge spans with their stored copies: ``(row, merged span)`` for each that differs from the stored
    one; the others count as duplicates."""
    rows = stored_rows(s, [(sp.trace_id, sp.span_id) for sp in spans])
    updated: list[tuple[SpanRow, Span]] = []
    for sp in spans:
        row = rows[(sp.trace_id, sp.span_id)]
        merged, differed = merge_copies([Span.model_validate(row.data), sp])
        if differed:
            merged_keys.add((sp.trace_id, sp.span_id))
            updated.append((row, merged))
        else:
            out.spans_duplicate += 1
    return updated


def _placed(sp: Span, starts: dict[tuple[str, str], int], out: SpanWrite) -> Span:
    """``sp`` with its tree flags set: ``orphan`` when its parent is not stored, ``clock_skew`` (and a
    warning) when it starts before its parent."""
    parent = starts.get((sp.trace_id, sp.parent_span_id or "")) if sp.parent_span_id else None
    orphan = bool(sp.parent_span_id) and parent is None
    skew = parent is not None and sp.start_ns < parent
    if skew and parent is not None:
        out.warnings.append(_skew_warning(sp, parent))
    out.orphans += orphan
    return _flags(sp, orphan, skew)


def _merge_warning(keys: set[tuple[str, str]]) -> str:
    named = ", ".join(f"span {sid} of trace {t}" for t, sid in sorted(keys)[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return (f"{len(keys)} span(s) arrived in differing copies and were merged (the most complete copy wins "
            f"field by field; flagged 'merged'): {named}{more}")


def store_media(s: OrmSession, spans: list[Span]) -> int:
    """Keep the inline media bytes of ``spans`` (by SHA-256, once each); returns how many were new."""
    parts = {p.sha256: p for p in span_media(spans) if p.sha256 and p.data is not None}
    if not parts:
        return 0
    have = set(s.scalars(select(MediaRow.sha256).where(MediaRow.sha256.in_(list(parts)))))
    s.add_all([MediaRow(sha256=sha, mime_type=p.mime_type, size_bytes=len(p.data or b""), data=p.data)
               for sha, p in parts.items() if sha not in have])
    return len(parts) - len(have)


def media_bytes(store: Store, sha256: str) -> tuple[bytes, str | None] | None:
    """Stored media bytes and their mime type, or None."""
    with store.session() as s:
        row = s.get(MediaRow, sha256)
        return (row.data, row.mime_type) if row is not None else None


def _pending_logs(s: OrmSession, spans: list[Span]) -> dict[tuple[str, str], list[SpanEvent]]:
    keys = [(sp.trace_id, sp.span_id) for sp in spans]
    out: dict[tuple[str, str], list[SpanEvent]] = defaultdict(list)
    for i in range(0, len(keys), 400):
        part = keys[i:i + 400]
        wanted = set(part)  # two IN lists the (trace_id, span_id) index serves; see stored_rows
        q = select(LogRecordRow).where(LogRecordRow.trace_id.in_(list({t for t, _ in part})),
                                       LogRecordRow.span_id.in_(list({sp for _, sp in part})))
        for row in s.scalars(q):
            if (row.trace_id, row.span_id) in wanted:
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
        row.usage = None  # stale: recomputed when read (assay._store.usage.unit_usages)


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
            store_media(s, [span])
            touched.add(row.unit_id)
            updated += 1
        _refresh_units(s, touched)
    return len(records), updated
