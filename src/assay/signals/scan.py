"""Run the detectors on stored units and keep their signals: at ingest, in the online worker, and on
``assay signals update``.

Each scan of a unit records, in ``signal_scans``, the content hash it saw, a hash of the detectors and
their settings, and what the population detectors need of the unit (its workflow key and size). A unit
needs a (new) scan when it has no such row, its content or the detectors changed, or it was scanned
before any length norm existed (:func:`units_to_scan`). A scan writes the outcome and detector signals
(idempotent on their keys) and the feedback the unit carries (:mod:`assay.signals.feedback`), and
retracts the unit's earlier detector signals that this scan no longer finds (a new detector version,
changed thresholds, a unit that grew); a retracted signal found again counts again.

**Population detectors** (``long_session``) compare a unit with norms fitted on every unit scanned so
far plus the batch (:func:`assay.signals.population.fit_profiles` over the kept workflow keys and sizes),
so a stream of units, one batch at a time, is judged against the whole store without loading it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.store import IngestCounts
from assay._store.tables import SignalRow, SignalScanRow, UnitRow, utcnow
from assay.settings.signals import SignalSettings
from assay.signals.detect import fit, outcome_signals, unit_view, view_signals
from assay.signals.feedback import FeedbackItem, attach_pending, from_unit, record_feedback
from assay.signals.model import FailureSignal
from assay.signals.population import SessionNorms, fit_profiles, workflow_key
from assay.signals.registry import DETECTORS, UnitView
from assay.signals.store import write_signals
from assay.traces.model import Unit

LOAD_CHUNK = 200
"""Units loaded from the store at a time by :func:`update_signals` (bounds memory)."""


def detectors_hash(settings: SignalSettings) -> str:
    """SHA-256 (hex) of the registered detectors (name, version) and their settings: a unit scanned under
    other detectors or thresholds is scanned again."""
    body: list[list[object]] = [[d.name, d.version, d.settings_of(settings).model_dump(mode="json")]
                                for d in DETECTORS.values()]
    body.append(["outcome", "1", settings.outcome.model_dump(mode="json")])
    body.append(["evidence_chars", settings.evidence_chars])
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class ScanReport:
    """What scans did: units scanned, signals written (new), detector signals retracted, feedback items
    found in the units (stored once) and pending feedback attached."""

    units: int = 0
    signals: int = 0
    retracted: int = 0
    feedback: int = 0
    attached: int = 0

    def add(self, other: ScanReport) -> None:
        """Add another report's counts to this one."""
        for name in ("units", "signals", "retracted", "feedback", "attached"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _stored_profiles(s: OrmSession, exclude: set[str]) -> list[tuple[str, str, int]]:
    q = select(UnitRow.unit_id, UnitRow.source, SignalScanRow.workflow, SignalScanRow.steps).join(
        SignalScanRow, SignalScanRow.unit_id == UnitRow.unit_id)
    return [(src, wf, n) for uid, src, wf, n in s.execute(q) if uid not in exclude]


def population_models(store: Store, views: Sequence[UnitView], settings: SignalSettings) -> dict[str, BaseModel]:
    """Fitted population detectors for a batch: every one fitted on the batch, ``long_session`` on the
    stored profiles of the units scanned before plus the batch."""
    fitted = fit(views, settings)
    if "long_session" in fitted:
        cfg = settings.long_session
        with store.session() as s:
            stored = _stored_profiles(s, {v.unit_id for v in views})
        batch = [(v.source, workflow_key(v, cfg.read_only_prefixes), v.size) for v in views]
        fitted["long_session"] = fit_profiles(stored + batch, cfg)
    return fitted


def _has_norm(view: UnitView, fitted: dict[str, BaseModel], settings: SignalSettings) -> bool:
    norms = fitted.get("long_session")
    if not isinstance(norms, SessionNorms):
        return True  # no population detector enabled: nothing is missing
    return norms.norm_for(view, settings.long_session) is not None


def _write(s: OrmSession, found: dict[str, list[FailureSignal]]) -> tuple[int, int]:
    """Write the units' detector signals and retract the earlier ones this scan did not find; a retracted
    signal found again counts again. Returns ``(written, retracted)``."""
    keys = {sig.key for sigs in found.values() for sig in sigs}
    written = write_signals(s, [sig for sigs in found.values() for sig in sigs])
    rows = s.execute(select(SignalRow.id, SignalRow.key, SignalRow.retracted_at).where(
        SignalRow.unit_id.in_(list(found)), SignalRow.producer_type == "detector")).all()
    stale = [i for i, key, gone in rows if gone is None and key not in keys]
    again = [i for i, key, gone in rows if gone is not None and key in keys]
    if stale:
        s.execute(update(SignalRow).where(SignalRow.id.in_(stale)).values(retracted_at=utcnow()))
    if again:  # found again (e.g. thresholds changed back)
        s.execute(update(SignalRow).where(SignalRow.id.in_(again)).values(retracted_at=None))
    return written, len(stale)


def scan_units(store: Store, units: Sequence[Unit], settings: SignalSettings) -> ScanReport:
    """Detect the signals of stored ``units`` (already loaded, e.g. as just read by ``assay ingest``), write
    them and their feedback, and record the scans, in one transaction. The units must be stored (their
    content hash is read from the store)."""
    report = ScanReport(units=len(units))
    if not units:
        return report
    ids = [u.unit_id for u in units]
    views = [unit_view(u) for u in units]
    fitted = population_models(store, views, settings)
    digest = detectors_hash(settings)
    prefixes = settings.long_session.read_only_prefixes
    found = {u.unit_id: outcome_signals(u, settings) + view_signals(v, settings, fitted)
             for u, v in zip(units, views, strict=True)}
    items: list[FeedbackItem] = [item for u in units for item in from_unit(u, settings)]
    with store.session() as s:
        report.signals, report.retracted = _write(s, found)
        hashes = dict(s.execute(select(UnitRow.unit_id, UnitRow.content_hash).where(UnitRow.unit_id.in_(ids))).all())
        scans = {r.unit_id: r for r in s.scalars(select(SignalScanRow).where(SignalScanRow.unit_id.in_(ids)))}
        now = utcnow()
        for view in views:
            scan = scans.get(view.unit_id) or SignalScanRow(unit_id=view.unit_id)
            scan.content_hash, scan.detectors_hash = hashes.get(view.unit_id, ""), digest
            scan.workflow, scan.steps = workflow_key(view, prefixes)[:600], view.size
            scan.population, scan.scanned_at = _has_norm(view, fitted, settings), now
            s.add(scan)
    if items:
        fresh = [r for r in record_feedback(store, items, settings) if not r.duplicate]
        report.feedback = len(fresh)
        report.signals += sum(r.signal is not None for r in fresh)
    return report


def units_to_scan(store: Store, settings: SignalSettings, unit_ids: Sequence[str] | None = None) -> list[str]:
    """Ids of the units (of ``unit_ids``, default all) that need a scan: never scanned, content or
    detectors changed since, or scanned without a length norm while one exists now. Oldest first."""
    digest = detectors_hash(settings)
    with store.session() as s:
        scanned = s.scalar(select(func.count()).select_from(SignalScanRow)) or 0
        norms_exist = settings.long_session.enabled and scanned >= settings.long_session.min_group
        stale = [SignalScanRow.unit_id.is_(None), SignalScanRow.content_hash != UnitRow.content_hash,
                 SignalScanRow.detectors_hash != digest]
        if norms_exist:
            stale.append(SignalScanRow.population.is_not(True))
        # the test runs in SQL: a pass over a store that is up to date reads no row
        q = (select(UnitRow.unit_id).outerjoin(SignalScanRow, SignalScanRow.unit_id == UnitRow.unit_id)
             .where(or_(*stale)).order_by(UnitRow.ingested_at, UnitRow.unit_id))
        if unit_ids is None:
            return list(s.scalars(q))
        ids = list(dict.fromkeys(unit_ids))
        return [u for i in range(0, len(ids), 500) for u in s.scalars(q.where(UnitRow.unit_id.in_(ids[i:i + 500])))]


@dataclass
class SignalUpdate(ScanReport):
    """What :func:`update_signals` did (:class:`ScanReport`), plus the units it found up to date."""

    up_to_date: int = 0


def update_signals(store: Store, settings: SignalSettings, unit_ids: Sequence[str] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> SignalUpdate:
    """Compute what is missing: scan every unit that needs it (:func:`units_to_scan`), ``LOAD_CHUNK`` units
    at a time, then attach pending feedback whose unit is stored now.

    Args:
        unit_ids: only these units (default: every stored unit).
        progress: called with ``(units done, units to scan)`` after each chunk.
    """
    todo = units_to_scan(store, settings, unit_ids)
    total = len(store.select_unit_ids()) if unit_ids is None else len(set(unit_ids))
    report = SignalUpdate(up_to_date=total - len(todo))
    for start in range(0, len(todo), LOAD_CHUNK):
        report.add(scan_units(store, store.units(todo[start:start + LOAD_CHUNK]), settings))
        if progress:
            progress(min(start + LOAD_CHUNK, len(todo)), len(todo))
    report.attached += attach_pending(store, settings)
    return report


class DetectingSink:
    """Where ``assay ingest`` writes units (a :class:`assay.traces.ingest.UnitSink`): the store, then, for
    the units just written and still in memory, their signals (:func:`scan_units`: no second read) and
    pending feedback that names them.

    Args:
        store: the store (or a callable opening it on first use, so nothing is created for nothing).
        settings: the ``[signals]`` section.
    """

    def __init__(self, store: Store | Callable[[], Store], settings: SignalSettings) -> None:
        self._store = store
        self.settings = settings
        self.report = ScanReport()

    @property
    def store(self) -> Store:
        """The store (opened on first use when given as a callable)."""
        if not isinstance(self._store, Store):
            self._store = self._store()
        return self._store

    def add_units(self, units: list[Unit]) -> IngestCounts:
        """Store the units, detect and store the signals of those not scanned as they are now (a file ingested
        again costs no second detection), attach pending feedback naming them."""
        counts = self.store.add_units(units)
        todo = set(units_to_scan(self.store, self.settings, [u.unit_id for u in units]))
        self.report.add(scan_units(self.store, [u for u in units if u.unit_id in todo], self.settings))
        self.report.attached += attach_pending(self.store, self.settings, unit_ids=[u.unit_id for u in units],
                                               trace_ids={t for u in units for t in u.trace_ids})
        return counts
