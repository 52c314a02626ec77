"""Failure-signal rows: the one write path of the ``failure_signals`` table, and what "failed" means in SQL.

The typed record is :class:`assay.signals.FailureSignal` (a layer above); here a signal is the dict of
its fields (``unit_id, source, kind, strength, evidence, step, time_ns, lineage``), so the store can
write the signals it makes itself: every failed score of an active evaluator, in the one score writer
(:func:`assay._store.scores.add_scores`). :mod:`assay.signals.store` writes every other source here.

**Failed.** A unit is *failed* when its failure score, the noisy-OR of its (not retracted) signals'
strengths, ``1 - prod(1 - strength)``, is at least ``[signals] fail_at``. In SQL the product is a sum
of logs: each row keeps ``weight = -ln(1 - strength)`` (capped at :data:`MAX_WEIGHT` for strength 1)
and a unit fails when ``SUM(weight) >= -ln(1 - fail_at + 5e-7)`` (the 5e-7 matches
:func:`assay.signals.assess`, which rounds the score to 6 decimals). A unit whose content was never
run through the detectors (no ``signal_scans`` row: stored before signals existed, or still waiting for
the worker) counts as failed by what the source recorded until then: outcome ``fail``, or an error span
where the source recorded no outcome (the definition before signals existed).
:func:`failed_units_query` is that one definition, as a subquery of unit ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, union
from sqlalchemy.orm import Session as OrmSession

from assay._store.tables import EvaluatorRow, SignalRow, SignalScanRow, UnitRow, utcnow
from assay._util.content import signal_key
from assay.settings.signals import SignalSettings

SETTINGS_KEY = "assay.signals"
"""Key of the ``[signals]`` settings in ``OrmSession.info`` (the store's sessions carry them)."""
MAX_WEIGHT = -math.log(1e-12)
"""Weight of a signal of strength 1 (about 27.6): certain, whatever else the unit has."""
INSERT_CHUNK = 500


def weight(strength: float) -> float:
    """``-ln(1 - strength)``, at most :data:`MAX_WEIGHT`: a signal's share of the noisy-OR in log space."""
    return min(MAX_WEIGHT, -math.log(max(1e-12, 1.0 - strength)))


def fail_threshold(fail_at: float) -> float:
    """The sum of weights at which a unit is failed (see module docstring)."""
    return -math.log(max(1e-12, 1.0 - fail_at + 5e-7))


def producer(lineage: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(type, name, version)`` of a lineage dict: detector name and version, evaluator name and
    version, annotator, feedback channel and sender, judge model and prompt version."""
    kind = str(lineage["type"])
    name, version = {"detector": ("name", "version"), "evaluator": ("name", "version"),
                     "annotator": ("annotator", ""), "feedback": ("channel", "sender"),
                     "judge": ("model", "prompt_version")}[kind]
    return kind, str(lineage.get(name) or ""), str(lineage.get(version) or "") if version else ""


def row_values(signal: Mapping[str, Any], created_at: datetime | None = None) -> dict[str, Any]:
    """The ``failure_signals`` row of a signal's fields (key, weight and producer columns added), stored at
    ``created_at`` (timezone-aware; default the wall clock)."""
    lineage = dict(signal["lineage"])
    kind, name, version = producer(lineage)
    return {"key": signal_key(signal["unit_id"], signal["kind"], signal.get("step"), signal["evidence"], lineage),
            "unit_id": signal["unit_id"], "source": signal["source"], "kind": signal["kind"],
            "strength": float(signal["strength"]), "weight": weight(float(signal["strength"])),
            "evidence": signal["evidence"], "step": signal.get("step"), "time_ns": int(signal.get("time_ns") or 0),
            "lineage": lineage, "producer_type": kind, "producer": name[:200], "producer_version": version[:200],
            "created_at": created_at or utcnow()}


def insert_signals(s: OrmSession, signals: Sequence[Mapping[str, Any]],
                   created_at: datetime | None = None) -> list[str]:
    """Write signals in the open transaction ``s`` (stored at ``created_at``, timezone-aware, default the wall clock);
    a signal whose key is stored already is skipped (``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and
    PostgreSQL).

    Returns:
        the keys of the rows inserted.
    """
    rows = list({r["key"]: r for r in (row_values(sig, created_at) for sig in signals)}.values())
    if not rows:
        return []
    dialect = s.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        have = set(s.scalars(select(SignalRow.key).where(SignalRow.key.in_([r["key"] for r in rows]))))
        fresh = [r for r in rows if r["key"] not in have]
        s.add_all([SignalRow(**r) for r in fresh])
        s.flush()
        return [r["key"] for r in fresh]
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(SignalRow).on_conflict_do_nothing(index_elements=["key"]).returning(SignalRow.key)
    result = s.execute(stmt, rows, execution_options={"insertmanyvalues_page_size": INSERT_CHUNK})
    return list(result.scalars())


def settings_of(s: OrmSession) -> SignalSettings:
    """The ``[signals]`` settings the session's store was opened with (defaults when none)."""
    cfg = s.info.get(SETTINGS_KEY)
    return cfg if isinstance(cfg, SignalSettings) else SignalSettings()


def add_evaluator_fails(s: OrmSession, evaluator: str, version: str, run_id: str, run_kind: str,
                        fails: Sequence[tuple[str, str]], at: datetime | None = None) -> int:
    """Failed scores as signals (kind ``evaluator_fail``, lineage evaluator name, version and run), in the
    open transaction: only for an **active** evaluator version, a run kind of ``[signals.evaluator]
    run_kinds`` (gate, gate baseline, online, backfill; never calibration), and once per unit and
    evaluator version (a gate re-run or a repeat adds no second signal).

    Args:
        fails: ``(unit id, the score's reason)`` of each failed score just written.
        at: when the scores were made (timezone-aware; default the wall clock): the signals' time and ``created_at``.

    Returns:
        the number of signals written.
    """
    cfg = settings_of(s)
    if not fails or not cfg.evaluator.enabled or run_kind not in cfg.evaluator.run_kinds:
        return 0
    status = s.scalar(select(EvaluatorRow.status).where(EvaluatorRow.name == evaluator,
                                                        EvaluatorRow.version == version))
    if status != "active":
        return 0
    units = sorted({u for u, _ in fails})
    have = set(s.scalars(select(SignalRow.unit_id).where(
        SignalRow.producer_type == "evaluator", SignalRow.producer == evaluator, SignalRow.producer_version == version,
        SignalRow.unit_id.in_(units))))
    at = at or utcnow()
    now_ns = int(at.timestamp() * 1e9)
    lineage = {"type": "evaluator", "name": evaluator, "version": version, "run_id": run_id}
    todo = {u: reason for u, reason in fails if u not in have}
    rows = [{"unit_id": u, "source": "evaluator", "kind": "evaluator_fail", "strength": cfg.evaluator.strength,
             "evidence": _cut(f"{evaluator} failed: {reason}" if reason else f"{evaluator} failed", cfg.evidence_chars),
             "step": None, "time_ns": now_ns, "lineage": lineage} for u, reason in sorted(todo.items())]
    return len(insert_signals(s, rows, at))


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failed_units_query(fail_at: float) -> Select[tuple[str]]:
    """Ids of failed units, as one SQL statement (see module docstring): the units whose signals'
    weights add up to ``fail_at``, and the units never scanned whose source recorded a failure."""
    by_signals = (select(SignalRow.unit_id).where(SignalRow.retracted_at.is_(None)).group_by(SignalRow.unit_id)
                  .having(func.sum(SignalRow.weight) >= fail_threshold(fail_at)))
    scanned = select(SignalScanRow.unit_id).where(SignalScanRow.unit_id == UnitRow.unit_id).exists()
    recorded = select(UnitRow.unit_id).where(
        or_(UnitRow.outcome == "fail", and_(UnitRow.outcome == "unknown", UnitRow.has_error)), ~scanned)
    return select(union(by_signals, recorded).subquery().c[0])


def rekey_unit(s: OrmSession, unit_id: str) -> None:
    """Recompute the content keys of a unit's signals after they were moved to it (a trace merged into
    its session by a late session id); a signal the unit already holds under the new key is dropped."""
    rows = list(s.scalars(select(SignalRow).where(SignalRow.unit_id == unit_id).order_by(SignalRow.id)))
    taken = {r.key for r in rows}
    for row in rows:
        key = signal_key(row.unit_id, row.kind, row.step, row.evidence, row.lineage)
        if key == row.key:
            continue
        if key in taken:
            s.delete(row)
        else:
            taken.discard(row.key)
            row.key = key
            taken.add(key)
    s.flush()
