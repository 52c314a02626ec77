"""The kinds of runs, named once: what ``runs.kind`` holds, what settings name (``[drift] run_kinds``,
``[signals.evaluator] run_kinds``) and what every writer passes (:func:`assay._store.scores.new_run`).

============== ==============================================================================
kind           the run
============== ==============================================================================
calibration    an evaluator scored on its ground-truth dataset (``assay calibrate``)
split          a stored train/dev/test split of a dataset version (no scores)
gate           the CI gate's candidate side (``assay gate``)
gate-baseline  the gate's baseline side, when the baseline is a unit selection
backfill       an evaluator scored over stored units (``assay score``; written ``score`` before
               migration ``0010_env`` renamed it)
online         the worker's sample of production (``assay worker``)
import         verdicts of an external judge imported from a file or from traces (``assay scores import``)
============== ==============================================================================

Production scores are the ``online`` and ``backfill`` runs' (:data:`PRODUCTION_RUN_KINDS`): drift and
the report read those by default.
"""

from __future__ import annotations

from enum import StrEnum


class RunKind(StrEnum):
    """A run's kind (see the module docstring); a ``str``, so it is stored and compared as its value."""

    CALIBRATION = "calibration"
    SPLIT = "split"
    GATE = "gate"
    GATE_BASELINE = "gate-baseline"
    BACKFILL = "backfill"
    ONLINE = "online"
    IMPORT = "import"


PRODUCTION_RUN_KINDS: tuple[RunKind, ...] = (RunKind.ONLINE, RunKind.BACKFILL)
"""Runs whose scores are production's: drift and the report read them (``[drift] run_kinds``)."""
SIGNAL_RUN_KINDS: tuple[RunKind, ...] = (RunKind.GATE, RunKind.GATE_BASELINE, RunKind.ONLINE, RunKind.BACKFILL,
                                         RunKind.IMPORT)
"""Runs whose failed scores become failure signals (``[signals.evaluator] run_kinds``); never calibration."""
RENAMED = {"score": RunKind.BACKFILL}
"""Older names still read in settings: ``score`` is ``backfill``."""


def run_kind(name: str) -> RunKind:
    """The kind named ``name`` (an older name is read as its new one).

    Raises:
        ValueError: no such kind (the message lists them).
    """
    if name in RENAMED:
        return RENAMED[name]
    try:
        return RunKind(name)
    except ValueError:
        raise ValueError(f"unknown run kind {name!r}: use one of {', '.join(k.value for k in RunKind)}") from None


def parse_run_kinds(value: object) -> object:
    """A settings validator: a comma-separated string or a list of names as kinds (older names renamed);
    anything else is left for pydantic to refuse."""
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if isinstance(names, list | tuple):
        return [run_kind(str(n)).value for n in names]
    return names
