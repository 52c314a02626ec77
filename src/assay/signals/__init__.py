"""Failure signals: evidence that a unit went wrong, found where production records no outcome."""

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

__all__ = [
    "KIND_SOURCE", "AnnotatorLineage", "DetectorLineage", "EvaluatorLineage", "FailureSignal", "FeedbackLineage",
    "JudgeLineage", "Lineage", "SignalKind", "SignalSource",
]
