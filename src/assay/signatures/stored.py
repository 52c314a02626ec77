"""The failure signals signatures read: the store's, so every source shapes a signature.

A failed unit's failure-local text (:func:`~assay.signatures.evidence.failure_text`) and its
signature's signal mix come from the signals the store keeps (:mod:`assay.signals.store`): the
detectors' cues (population detectors such as ``long_session`` among them, fitted on every unit
scanned), explicit feedback, failed evaluator scores, human ``fail`` labels and flags, and
open-coding notes. A unit the detectors never ran on (no ``signal_scans`` row: stored before
signals existed, or still waiting for the worker) adds what the detectors find on it alone
(its recorded outcome included), so a store that was never scanned clusters as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from assay._store import Store
from assay._store.tables import SignalScanRow
from assay.signals import FailureSignal, SignalSettings, UnitView, outcome_signals, unit_signals
from assay.signals.detect import view_signals
from assay.traces.model import Step, Unit

_CHUNK = 500


def scanned_units(store: Store, unit_ids: Sequence[str]) -> set[str]:
    """Which of ``unit_ids`` the detectors have run on (a ``signal_scans`` row)."""
    out: set[str] = set()
    with store.session() as s:
        for i in range(0, len(unit_ids), _CHUNK):
            chunk = list(unit_ids[i:i + _CHUNK])
            out.update(s.scalars(select(SignalScanRow.unit_id).where(SignalScanRow.unit_id.in_(chunk))))
    return out


def detected(unit: Unit, steps: list[Step], settings: SignalSettings) -> list[FailureSignal]:
    """What the detectors find on the unit alone: its recorded outcome and every per-unit detector
    (population detectors need a fitted population and stay silent)."""
    return outcome_signals(unit, settings) + view_signals(UnitView(unit.unit_id, unit.source, tuple(steps)),
                                                          settings, {})


def within(signals: Sequence[FailureSignal], steps: list[Step]) -> list[FailureSignal]:
    """The signals with a step pointer past the end of the timeline made whole-unit (step None): a
    stored signal may point into content the unit no longer has (e.g. a trace moved into its session)."""
    last = steps[-1].index if steps else 0
    return [s if s.step is None or s.step <= last else s.model_copy(update={"step": None}) for s in signals]


def stored_signals(store: Store, units: Sequence[Unit], steps: Sequence[list[Step]],
                   settings: SignalSettings) -> list[list[FailureSignal]]:
    """Each unit's failure signals as the store keeps them (not retracted), plus, for a unit never
    scanned, what the detectors find on it alone (see module docstring); each list fits its timeline.

    Args:
        store: the store.
        units, steps: parallel: the (stored) units and their step timelines.
        settings: the ``[signals]`` section (detector thresholds for never-scanned units).

    Returns:
        one list per unit, in input order.
    """
    ids = [u.unit_id for u in units]
    kept = unit_signals(store, ids)
    scanned = scanned_units(store, ids)
    out = []
    for unit, timeline in zip(units, steps, strict=True):
        signals = list(kept.get(unit.unit_id, []))
        if unit.unit_id not in scanned:
            keys = {s.key for s in signals}
            signals += [s for s in detected(unit, timeline, settings) if s.key not in keys]
        out.append(within(signals, timeline))
    return out
