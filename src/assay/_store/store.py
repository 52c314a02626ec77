"""The store: one object that owns the engine; every write goes through it.

SQLite (WAL mode) is the embedded default; any SQLAlchemy URL (PostgreSQL) works the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Text, cast, create_engine, event, select
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from assay._store.environments import check_environment
from assay._store.migrate import upgrade as upgrade_schema
from assay._store.selection import EnvTerm, UnitSelection
from assay._store.signal_rows import SETTINGS_KEY, failed_units_query
from assay._store.tables import SpanRow, UnitRow
from assay.exceptions import NotFoundError
from assay.settings import EnvironmentSettings, EnvScope
from assay.settings.signals import SignalSettings
from assay.traces.environment import Environment, unit_environment
from assay.traces.merge import merge_copies
from assay.traces.model import Span, SpanEvent, Unit
from assay.traces.usage import unit_usage

if TYPE_CHECKING:
    from assay._store.spans import SpanWrite


IN_CHUNK = 500
"""Ids per ``IN (...)`` list when reading units (well within SQLite's and PostgreSQL's bound-parameter limits)."""


@dataclass
class IngestCounts:
    """What one write of units changed."""

    units_new: int = 0
    units_updated: int = 0
    spans_new: int = 0
    spans_duplicate: int = 0
    spans_merged: int = 0
    """Spans whose copies differed and were merged (see :meth:`Store.add_units`)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def unit_content_hash(spans: list[Span] | tuple[Span, ...]) -> str:
    """SHA-256 (hex) of a unit's spans, order-independent."""
    parts = sorted(json.dumps(s.model_dump(mode="json"), sort_keys=True) for s in spans)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Store:
    """The assay store.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///.assay/assay.db`` or ``postgresql+psycopg://...``.
            For SQLite the parent folder is created. The schema is migrated to the newest
            revision on open (Alembic, see :mod:`assay._store.migrate`).
        signals: the ``[signals]`` settings (``settings.signals``): ``fail_at`` decides which units are
            *failed*, and the store writes failed evaluator scores as signals with their strength.
            Default: the defaults.
        environments: the ``[environments]`` settings (``settings.environments``): the environment a unit
            stored without one counts as, in ``env:NAME`` selections. Default: the defaults.
    """

    def __init__(self, url: str, signals: SignalSettings | None = None,
                 environments: EnvironmentSettings | None = None) -> None:
        self.url = url
        self.signals = signals or SignalSettings()
        self.environments = environments or EnvironmentSettings()
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, info={SETTINGS_KEY: self.signals})

    @contextmanager
    def session(self) -> Iterator[OrmSession]:
        """A transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        """Dispose of the engine's connections."""
        self.engine.dispose()

    # --- units -------------------------------------------------------------------------
    def add_units(self, units: list[Unit]) -> IngestCounts:
        """Store units and their spans. A span already stored (same trace id + span id), or given twice,
        is merged with its other copies (:func:`assay.traces.merge.merge_copies`: the most complete copy
        wins field by field); identical copies count as duplicates.

        A unit seen before gets the new spans added; its outcome is updated when the new
        data knows it, its environment and release when it had none
        (:func:`assay.traces.environment.unit_environment`).
        """
        counts = IngestCounts()
        with self.session() as s:
            for unit in units:
                self._add_unit(s, unit, counts)
        return counts

    def _add_unit(self, s: OrmSession, unit: Unit, counts: IngestCounts) -> None:
        from assay._store.spans import merge_batch, store_media, stored_rows

        spans, duplicates, merged = merge_batch(list(unit.spans))
        counts.spans_duplicate += duplicates
        stored = stored_rows(s, [(sp.trace_id, sp.span_id) for sp in spans])
        new_spans: list[Span] = []
        changed = 0
        for sp in spans:
            old = stored.get((sp.trace_id, sp.span_id))
            if old is None:
                new_spans.append(sp)
                continue
            both, differed = merge_copies([Span.model_validate(old.data), sp])
            if not differed:
                counts.spans_duplicate += 1
                continue
            merged.add((sp.trace_id, sp.span_id))
            old.data, old.start_ns = both.model_dump(mode="json"), both.start_ns
            old.parent_span_id = both.parent_span_id
            changed += 1
        counts.spans_new += len(new_spans)
        counts.spans_merged += len(merged)
        row = s.get(UnitRow, unit.unit_id)
        if row is None:
            row = UnitRow(unit_id=unit.unit_id, kind=unit.kind, source=unit.source,
                          outcome=unit.outcome, reward=unit.reward, attributes=unit.attributes)
            s.add(row)
            s.flush()
            counts.units_new += 1
        elif new_spans or changed or (unit.outcome != "unknown" and row.outcome != unit.outcome):
            counts.units_updated += 1
        if unit.outcome != "unknown":
            row.outcome, row.reward = unit.outcome, unit.reward
        env = unit_environment(unit)
        row.env, row.release = row.env or env.name, row.release or env.release
        for sp in new_spans:
            s.add(SpanRow(trace_id=sp.trace_id, span_id=sp.span_id, unit_id=unit.unit_id,
                          start_ns=sp.start_ns, parent_span_id=sp.parent_span_id,
                          data=sp.model_dump(mode="json")))
        store_media(s, spans)
        if new_spans or changed:
            s.flush()
            for uid in {unit.unit_id} | {stored[k].unit_id for k in merged if k in stored}:
                all_spans = self._spans(s, uid)
                target = s.get(UnitRow, uid)
                if target is not None:
                    target.content_hash = unit_content_hash(all_spans)
                    target.has_error = any(sp.status == "error" for sp in all_spans)
                    target.usage = unit_usage(all_spans).model_dump(mode="json")

    def add_spans(self, spans: list[Span], source: str = "otlp-http", environment: Environment | None = None
                  ) -> SpanWrite:
        """Store spans arriving in batches (live ingestion): orphan/clock-skew flags, late parents
        linked, pending log records merged; see :mod:`assay._store.spans`. A unit whose spans name no
        environment or release gets ``environment``'s (an API key's). Committed on return."""
        from assay._store.spans import add_spans

        return add_spans(self, spans, source, environment)

    def add_log_records(self, records: list[tuple[str, str, SpanEvent]]) -> tuple[int, int]:
        """Keep OTLP log records and merge them into their spans: ``(stored, spans updated)``."""
        from assay._store.spans import add_log_records

        return add_log_records(self, records)

    @staticmethod
    def _spans(s: OrmSession, unit_id: str) -> list[Span]:
        rows = s.scalars(select(SpanRow).where(SpanRow.unit_id == unit_id).order_by(SpanRow.start_ns))
        return [Span.model_validate(r.data) for r in rows]

    @staticmethod
    def _load(s: OrmSession, unit_ids: Sequence[str]) -> list[Unit]:
        """Units of ``unit_ids`` (at most :data:`IN_CHUNK` distinct) in two queries: the unit rows, then their
        spans in (unit, start) order, each span's stored JSON validated straight from its text.

        Raises:
            NotFoundError: one of the ids does not exist.
        """
        wanted = list(dict.fromkeys(unit_ids))
        rows = {r.unit_id: r for r in s.execute(select(
            UnitRow.unit_id, UnitRow.kind, UnitRow.source, UnitRow.outcome, UnitRow.reward, UnitRow.attributes)
            .where(UnitRow.unit_id.in_(wanted)))}
        missing = next((u for u in wanted if u not in rows), None)
        if missing is not None:
            raise NotFoundError("unit", missing)
        spans: dict[str, list[Span]] = {u: [] for u in wanted}
        q = (select(SpanRow.unit_id, cast(SpanRow.data, Text)).where(SpanRow.unit_id.in_(wanted))
             .order_by(SpanRow.unit_id, SpanRow.start_ns))
        for uid, data in s.execute(q):
            spans[uid].append(Span.model_validate_json(data))
        return [Unit(unit_id=uid, kind=rows[uid].kind, source=rows[uid].source, spans=tuple(spans[uid]),
                     outcome=rows[uid].outcome, reward=rows[uid].reward, attributes=rows[uid].attributes or {})
                for uid in unit_ids]

    def unit(self, unit_id: str) -> Unit:
        """Load one unit with all its spans.

        Raises:
            NotFoundError: no such unit.
        """
        return self.units([unit_id])[0]

    def unit_rows(self, selection: str | UnitSelection | None = None) -> list[UnitRow]:
        """Unit rows (no spans) matching a selection (see :meth:`select_unit_ids`), sorted by unit id."""
        where = self._checked(selection).where(self.signals, self.environments)
        with self.session() as s:
            return list(s.scalars(select(UnitRow).where(where).order_by(UnitRow.unit_id)))

    def units(self, unit_ids: Sequence[str]) -> list[Unit]:
        """Load several units with their spans, in the given order: two queries per :data:`IN_CHUNK` ids.

        Callers with many units load them a chunk at a time (memory grows with the units asked for).

        Raises:
            NotFoundError: one of the ids does not exist.
        """
        ids = list(unit_ids)
        with self.session() as s:
            return [u for i in range(0, len(ids), IN_CHUNK) for u in self._load(s, ids[i:i + IN_CHUNK])]

    def select_unit_ids(self, selection: str | UnitSelection | None = None) -> list[str]:
        """Unit ids matching a selection, sorted: one query (see :mod:`assay._store.selection`).

        A selection is a :class:`~assay._store.selection.UnitSelection` or its text form: ``None``/``"all"``
        (every unit), ``"failed"`` (the unit's failure score, the noisy-OR of its failure signals, is at
        least ``[signals] fail_at``; see :meth:`failed_unit_ids`), ``"passed"`` (every other unit),
        ``"prefix:TEXT"`` (unit id starts with TEXT), ``"source:TEXT"`` (source contains TEXT),
        ``"labelled"`` (units with annotations), ``"env:NAME"`` (the unit ran in environment NAME; a unit
        stored without one counts as ``[environments] default``) or ``"release:X"`` (produced by release
        X). Comma-separated terms are intersected. ``None`` means every unit; an explicitly empty selection
        (``""``, ``"prefix:"``, ``"source:"``, ``"env:"``, ``"release:"``, an empty comma term) is refused,
        so an unset CI variable never silently selects everything.

        Raises:
            UsageError: an empty or unknown selection term.
        """
        query = self._checked(selection).query(self.signals, self.environments)
        with self.session() as s:
            return list(s.scalars(query))

    def env_scope(self, env: str | None = None) -> EnvScope | None:
        """What ``--env`` asks for under this store's ``[environments]`` settings: None (or empty) is
        production, ``all`` every unit (None: no filter).

        Raises:
            UsageError: an environment the store does not know
                (:func:`~assay._store.environments.check_environment`).
        """
        return check_environment(self, self.environments.scope(env))

    def _checked(self, selection: str | UnitSelection | None) -> UnitSelection:
        """The parsed selection, its ``env:NAME`` terms checked like ``--env`` (:meth:`env_scope`)."""
        parsed = UnitSelection.parse(selection)
        for term in parsed.terms:
            if isinstance(term, EnvTerm):
                self.env_scope(term.value)
        return parsed

    def failed_unit_ids(self) -> list[str]:
        """Ids of the *failed* units, sorted: a unit's failure score (noisy-OR of its failure signals'
        strengths) is at least ``[signals] fail_at``; a unit not yet run through the detectors counts by
        what its source recorded (outcome fail or an error span). One SQL query
        (:func:`assay._store.signal_rows.failed_units_query`, usable as a subquery)."""
        with self.session() as s:
            return sorted(s.scalars(failed_units_query(self.signals.fail_at)))

    def failed_among(self, unit_ids: list[str]) -> set[str]:
        """Which of ``unit_ids`` are *failed* (see :meth:`failed_unit_ids`)."""
        failed = failed_units_query(self.signals.fail_at).subquery()
        with self.session() as s:
            return {u for i in range(0, len(unit_ids), IN_CHUNK)
                    for u in s.scalars(select(failed.c[0]).where(failed.c[0].in_(unit_ids[i:i + IN_CHUNK])))}
