"""Run the registered detectors on units: :func:`detect` for one unit, :func:`detect_many` for a batch
(population detectors are fitted on the batch).

Detectors read a :class:`~assay.signals.registry.UnitView` (id, source, step timeline). Only
:func:`outcome_signals` reads the unit's recorded outcome, and only to report it as a signal of
source ``outcome``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from assay.signals.model import DetectorLineage, FailureSignal
from assay.signals.registry import DETECTORS, UnitView
from assay.signals.settings import SignalSettings
from assay.traces.model import Unit
from assay.traces.timeline import step_timeline

OUTCOME_DETECTOR = DetectorLineage(name="outcome", version="1")
"""Lineage of signals made from the outcome a source recorded."""


def unit_view(unit: Unit) -> UnitView:
    """What detectors may read of ``unit``: id, source and step timeline (no outcome, reward or attributes)."""
    return UnitView(unit.unit_id, unit.source, tuple(step_timeline(unit)))


def outcome_signals(unit: Unit, settings: SignalSettings) -> list[FailureSignal]:
    """One ``outcome_fail`` signal when the source recorded the outcome ``fail`` (e.g. tau-bench reward 0),
    else none. Its time is the unit's last span end."""
    if not settings.outcome.enabled or unit.outcome != "fail":
        return []
    reward = "" if unit.reward is None else f" (reward {unit.reward:g})"
    end = max((s.end_ns for s in unit.spans), default=0)
    return [FailureSignal(unit_id=unit.unit_id, source="outcome", kind="outcome_fail",
                          strength=settings.outcome.strength, evidence=f"the source recorded outcome fail{reward}",
                          time_ns=end, lineage=OUTCOME_DETECTOR)]


def fit(views: Sequence[UnitView], settings: SignalSettings | None = None) -> dict[str, BaseModel]:
    """Fit every enabled population detector on ``views``.

    Returns:
        ``{detector name: fitted model}`` (e.g. ``{"long_session": SessionNorms}``), to pass to :func:`detect`.
    """
    cfg = settings or SignalSettings()
    return {d.name: d.fit(views, d.settings_of(cfg)) for d in DETECTORS.values()
            if d.fit is not None and d.settings_of(cfg).enabled}


def view_signals(view: UnitView, settings: SignalSettings, fitted: Mapping[str, BaseModel]) -> list[FailureSignal]:
    """Signals of every registered detector on one view, in registration order."""
    return [sig for d in DETECTORS.values() for sig in d.run(view, settings, fitted.get(d.name))]


def detect(unit: Unit, settings: SignalSettings | None = None,
           fitted: Mapping[str, BaseModel] | None = None) -> list[FailureSignal]:
    """Failure signals of one unit: its recorded outcome, then every registered detector.

    Args:
        unit: any unit, from any reader.
        settings: the ``[signals]`` section (default: all defaults).
        fitted: fitted population detectors (from :func:`fit`); without them, population detectors
            such as ``long_session`` emit nothing for a lone unit.
    """
    cfg = settings or SignalSettings()
    return outcome_signals(unit, cfg) + view_signals(unit_view(unit), cfg, fitted or {})


def detect_many(units: Sequence[Unit], settings: SignalSettings | None = None,
                fitted: Mapping[str, BaseModel] | None = None) -> list[list[FailureSignal]]:
    """Failure signals of each unit of a batch, in input order. Population detectors are fitted on the
    batch itself unless ``fitted`` is given. Holds the batch's step timelines in memory at once.
    """
    cfg = settings or SignalSettings()
    views = [unit_view(u) for u in units]
    models = fit(views, cfg) if fitted is None else fitted
    return [outcome_signals(u, cfg) + view_signals(v, cfg, models) for u, v in zip(units, views, strict=True)]
