"""A certificate covers the judge it was earned with: every run that scores checks its judge against it.

Calibration records the :class:`~assay.models.JudgeIdentity` of the judge that scored the labelled units
(``CalibrationReport.judge``). Before a gate, an online worker or a backfill scores with an active (or
calibrated) evaluator, :func:`judge_changes` compares the judge it would use with that one;
:func:`refuse_judge_changes` raises :class:`~assay.exceptions.JudgeChanged` (CLI exit 2) naming both,
unless the caller allows the change (``--allow-judge-change``), which the run then records with its
scores. Kinds that ask no judge have nothing to compare; an evaluator activated without a calibration
(``--force`` before any) has no certified judge; a calibration stored before identities were recorded is
compared by judge model name alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from assay._store import Store
from assay.calibration.calibrate import evaluator_record
from assay.evaluators import EvaluatorDef
from assay.evaluators.lineage import run_identity
from assay.exceptions import JudgeChanged
from assay.models import JudgeClient, judge_change
from assay.settings import JudgeSettings


def judge_change_of(store: Store, defn: EvaluatorDef, judge: JudgeClient | None,
                    settings: JudgeSettings) -> str | None:
    """How the judge ``defn`` would score with differs from the one its calibration certified, in words
    (``certified ... ; this run ... (what differs)``); None when it is the same judge or nothing is certified
    (no active version, no calibration, a kind without a judge)."""
    record = evaluator_record(store, defn)
    report = record.calibration if record is not None and record.status == "active" else None
    if report is None or not defn.uses_judge:
        return None
    effective = run_identity(defn, judge, settings)
    if effective is None:
        return None
    what = judge_change(report.judge, report.judge_model, effective)
    if what is None:
        return None
    certified = report.judge.describe() if report.judge is not None else f"model {report.judge_model}"
    return f"certified with {certified}; this run would use {effective.describe()} ({what})"


def judge_changes(store: Store, suite: Iterable[EvaluatorDef], judges: Mapping[str, JudgeClient | None],
                  settings: JudgeSettings) -> dict[str, str]:
    """``{evaluator: change}`` for every evaluator of ``suite`` whose judge (``judges[name]``) is not the
    certified one."""
    out: dict[str, str] = {}
    for defn in suite:
        change = judge_change_of(store, defn, judges.get(defn.name), settings)
        if change is not None:
            out[defn.name] = change
    return out


def refuse_judge_changes(changes: Mapping[str, str], allow: bool) -> dict[str, str]:
    """Raise unless ``allow``; returns the changes to record.

    Raises:
        JudgeChanged: a change and ``allow`` False (CLI exit 2).
    """
    if changes and not allow:
        raise JudgeChanged(dict(changes))
    return dict(changes)
