"""Failure signals: evidence that a unit went wrong, found where production records no outcome.

Detectors compute implicit signals offline from each unit's step timeline (conversation cues, tool
errors, loops, sessions far longer than their workflow's norm); the recorded outcome, when a source
has one, is one more signal. :func:`assess` combines a unit's signals into a failure score (noisy-OR,
no labels needed); :func:`fit_combination` learns a calibrated combination from expert labels.
See docs/signals.md.
"""

from assay.signals import actions, conversation, grounding, population, tool_use  # noqa: F401 - built-ins register on import
from assay.signals.actions import is_action
from assay.signals.combine import SignalCombination, cross_validated_scores, fit_combination
from assay.signals.detect import detect, detect_many, fit, outcome_signals, unit_view
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
from assay.signals.score import FailureAssessment, assess, failure_score
from assay.signals.settings import DetectorSettings, SignalSettings

__all__ = [
    "DETECTORS", "KIND_SOURCE", "AnnotatorLineage", "Detector", "DetectorLineage", "DetectorSettings",
    "EvaluatorLineage", "FailureAssessment", "FailureSignal", "FeedbackLineage", "Finding", "JudgeLineage",
    "Lineage", "SessionNorms", "SignalCombination", "SignalKind", "SignalSettings", "SignalSource", "UnitView",
    "assess", "cross_validated_scores", "detect", "detect_many", "detector", "failure_score", "fit",
    "fit_combination", "is_action", "load_entry_points", "outcome_signals", "unit_view", "workflow_key",
]
