"""Thresholds of the failure-signal detectors: the ``[signals]`` section of ``assay.toml``.

The models live in :mod:`assay.settings.signals` (settings sit below every stage); this module
keeps the names beside the detectors they configure.
"""

from assay.settings.signals import (  # noqa: F401
    CORRECTION,
    ESCALATION_TEXT,
    FRUSTRATION,
    REFUSAL,
    ComplaintSettings,
    DetectorSettings,
    EmptyAnswerSettings,
    EscalationSettings,
    FrustrationSettings,
    LongSessionSettings,
    OutcomeSettings,
    RefusalSettings,
    RepeatSettings,
    RetrySettings,
    SignalSettings,
    ToolErrorSettings,
    ToolLoopSettings,
    UngroundedSettings,
    _Patterns,
)

__all__ = ["CORRECTION", "ComplaintSettings", "DetectorSettings", "ESCALATION_TEXT", "EmptyAnswerSettings",
    "EscalationSettings", "FRUSTRATION", "FrustrationSettings", "LongSessionSettings", "OutcomeSettings",
    "REFUSAL", "RefusalSettings", "RepeatSettings", "RetrySettings", "SignalSettings", "ToolErrorSettings",
    "ToolLoopSettings", "UngroundedSettings", "_Patterns"]
