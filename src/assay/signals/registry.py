"""The detector registry: one typed dict, filled by the :func:`detector` decorator.

Built-in detectors register on import of :mod:`assay.signals`; extensions register the same way
from a module named in the ``assay.detectors`` entry-point group (loaded by
:func:`load_entry_points`). A detector sees a :class:`UnitView` (unit id, source and step
timeline), never the unit's recorded outcome or reward: it cannot read the answer it is
measured against.

A detector returns :class:`Finding` tuples; :meth:`Detector.run` turns them into
:class:`~assay.signals.model.FailureSignal` records with the unit id, source, time and lineage
filled in, so no detector can get its lineage wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from pydantic import BaseModel

from assay.exceptions import ConfigError, UsageError
from assay.signals.model import KIND_SOURCE, DetectorLineage, FailureSignal, SignalKind
from assay.signals.settings import DetectorSettings, SignalSettings
from assay.traces.model import Step

ENTRY_POINT_GROUP = "assay.detectors"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitView:
    """What a detector may read of a unit: its id, its source and its step timeline (1-based steps).

    Deliberately without ``outcome``, ``reward`` or attributes: detectors work as on production
    traces, which carry no verdict.
    """

    unit_id: str
    source: str
    steps: tuple[Step, ...]

    @cached_property
    def users(self) -> list[Step]:
        """User turns, in order."""
        return [s for s in self.steps if s.kind == "user"]

    @cached_property
    def assistants(self) -> list[Step]:
        """Assistant turns with text, in order."""
        return [s for s in self.steps if s.kind == "assistant"]

    @cached_property
    def calls(self) -> list[Step]:
        """Tool calls, in order."""
        return [s for s in self.steps if s.kind == "tool_call"]

    @cached_property
    def turns(self) -> list[Step]:
        """User and assistant turns, in order (the conversation without tools)."""
        return [s for s in self.steps if s.kind in ("user", "assistant")]

    @property
    def size(self) -> int:
        """Number of steps other than system prompts."""
        return sum(1 for s in self.steps if s.kind != "system")


class Finding(NamedTuple):
    """What a detector found: kind, strength in [0, 1], evidence text, the step (None: whole unit)."""

    kind: SignalKind
    strength: float
    evidence: str
    step: Step | None = None


DetectFn = Callable[[UnitView, Any, Any], list[Finding]]
FitFn = Callable[[Sequence[UnitView], Any], BaseModel]


@dataclass(frozen=True)
class Detector:
    """A registered detector.

    ``detect(view, settings, fitted)`` returns findings; ``fit(views, settings)`` (population
    detectors only) learns what the detector compares against from a batch of units, and its result
    is passed as ``fitted``. ``settings_model`` is the detector's settings class (a sub-table of
    ``[signals]`` for built-ins, ``[signals.extensions.NAME]`` for extensions).
    """

    name: str
    version: str
    settings_model: type[DetectorSettings]
    detect: DetectFn
    fit: FitFn | None = None
    doc: str = field(default="", compare=False)

    def settings_of(self, settings: SignalSettings) -> DetectorSettings:
        """This detector's settings from the ``[signals]`` section.

        Raises:
            ConfigError: an extension's settings do not validate against its model.
        """
        own = getattr(settings, self.name, None)
        if isinstance(own, DetectorSettings):
            return own
        try:
            return self.settings_model.model_validate(settings.extensions.get(self.name, {}))
        except ValueError as exc:
            raise ConfigError(str(exc), f"signals.extensions.{self.name}") from exc

    def run(self, view: UnitView, settings: SignalSettings, fitted: BaseModel | None = None) -> list[FailureSignal]:
        """Run on one unit and return its signals (empty when disabled, or a population detector without
        ``fitted``)."""
        cfg = self.settings_of(settings)
        if not cfg.enabled or (self.fit is not None and fitted is None):
            return []
        lineage = DetectorLineage(name=self.name, version=self.version)
        last = view.steps[-1].time_ns if view.steps else 0
        return [FailureSignal(unit_id=view.unit_id, source=KIND_SOURCE[f.kind], kind=f.kind,
                              strength=round(f.strength, 4),
                              evidence=_cut(f.evidence, settings.evidence_chars),
                              step=f.step.index if f.step else None,
                              time_ns=f.step.time_ns if f.step else last, lineage=lineage)
                for f in self.detect(view, cfg, fitted)]


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


DETECTORS: dict[str, Detector] = {}
"""Every registered detector by name, in registration order (the order signals are listed in)."""


def detector(name: str, version: str, settings: type[DetectorSettings],
             fit: FitFn | None = None) -> Callable[[DetectFn], DetectFn]:
    """Register ``fn(view, settings, fitted) -> list[Finding]`` as detector ``name``.

    Raises:
        UsageError: ``name`` is already registered with another version or function.
    """
    def register(fn: DetectFn) -> DetectFn:
        entry = Detector(name, version, settings, fn, fit, (fn.__doc__ or "").strip())
        known = DETECTORS.get(name)
        if known is not None and known != entry:
            raise UsageError(f"detector {name!r} is already registered (version {known.version})")
        DETECTORS[name] = entry
        return fn
    return register


def load_entry_points() -> list[str]:
    """Import every module of the ``assay.detectors`` entry-point group (each registers its detectors
    with :func:`detector` on import). A module that fails to import is logged and skipped.

    Returns:
        the names of the entry points loaded.
    """
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:  # noqa: BLE001 - one broken extension must not stop the others
            log.exception("detector extension %s failed to load", ep.name)
            continue
        loaded.append(ep.name)
    return loaded
