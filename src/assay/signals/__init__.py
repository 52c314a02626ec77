"""Failure signals: evidence that a unit went wrong, found where production records no outcome.

Detectors compute implicit signals offline from each unit's step timeline (conversation cues, tool
errors, loops, sessions far longer than their workflow's norm); the recorded outcome, when a source
has one, is one more signal. :func:`assess` combines a unit's signals into a failure score (noisy-OR,
no labels needed); :func:`fit_combination` learns a calibrated combination from expert labels.
Explicit feedback (:mod:`assay.signals.feedback`), failed evaluator scores, human labels and flags, and
open coding by a judge (:mod:`assay.signals.open_coding`) are the other sources. The store keeps them
(:mod:`assay.signals.store`); :func:`update_signals` computes what is missing. See docs/signals.md.
"""

from assay.signals import actions, conversation, grounding, population, tool_use  # noqa: F401 - built-ins register on import
from assay.signals.actions import is_action
from assay.signals.combine import SignalCombination, cross_validated_scores, fit_combination
from assay.signals.detect import detect, detect_many, fit, outcome_signals, unit_view
from assay.signals.feedback import (
    FeedbackItem,
    FeedbackResult,
    attach_pending,
    feedback_signal,
    record_feedback,
)
from assay.signals.model import (
    KIND_SOURCE,
    AnnotatorLineage,
    DetectorLineage,
    EvaluatorLineage,
    FailureSignal,
    FeedbackLineage,
    JudgeLineage,
    Lineage,
    SignalKind,
    SignalSource,
)
from assay.signals.population import SessionNorms, workflow_key
from assay.signals.registry import DETECTORS, Detector, Finding, UnitView, detector, load_entry_points
from assay.signals.scan import DetectingSink, ScanReport, SignalUpdate, scan_units, units_to_scan, update_signals
from assay.signals.score import FailureAssessment, assess, failure_score
from assay.signals.settings import DetectorSettings, SignalSettings
from assay.signals.store import SignalCount, add_signals, failure_scores, list_signals, signal_counts, unit_signals

__all__ = [
    "AnnotatorLineage", "DETECTORS", "DetectingSink", "Detector", "DetectorLineage", "DetectorSettings",
    "EvaluatorLineage", "FailureAssessment", "FailureSignal", "FeedbackItem", "FeedbackLineage", "FeedbackResult",
    "Finding", "JudgeLineage", "KIND_SOURCE", "Lineage", "ScanReport", "SessionNorms", "SignalCombination",
    "SignalCount", "SignalKind", "SignalSettings", "SignalSource", "SignalUpdate", "UnitView", "add_signals",
    "assess", "attach_pending", "cross_validated_scores", "detect", "detect_many", "detector", "failure_score",
    "failure_scores", "feedback_signal", "fit", "fit_combination", "is_action", "list_signals", "load_entry_points",
    "outcome_signals", "record_feedback", "scan_units", "signal_counts", "unit_signals", "unit_view",
    "units_to_scan", "update_signals", "workflow_key",
]
