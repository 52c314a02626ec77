"""Signals from people: a human ``fail`` label (kind ``human_fail``) and a person's severe flag (``flag``).

Annotations (:func:`assay.annotations.add_annotations`) and flags (:func:`assay.signatures.flag_unit`)
write these in the same transaction as the label or flag, so a label never exists without its signal.
Each is about the whole unit (no step), at the time it was made, with the person as lineage.
"""

from __future__ import annotations

import time

from assay.settings.signals import SignalSettings
from assay.signals.model import AnnotatorLineage, FailureSignal


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label_signal(unit_id: str, annotator: str, settings: SignalSettings, criterion: str | None = None,
                 severity: int | None = None, rationale: str = "") -> FailureSignal | None:
    """The signal of a human ``fail`` label (None when ``[signals.label]`` is disabled).

    Evidence: ``labelled fail by ANNOTATOR on CRITERION, severity N: RATIONALE``.
    """
    if not settings.label.enabled:
        return None
    text = f"labelled fail by {annotator}" + (f" on {criterion}" if criterion else "") + \
        (f", severity {severity}" if severity else "") + (f": {rationale}" if rationale.strip() else "")
    return FailureSignal(unit_id=unit_id, source="label", kind="human_fail", strength=settings.label.strength,
                         evidence=_cut(text, settings.evidence_chars), time_ns=time.time_ns(),
                         lineage=AnnotatorLineage(annotator=annotator or "unknown"))


def flag_signal(unit_id: str, flagged_by: str, reason: str, settings: SignalSettings) -> FailureSignal | None:
    """The signal of a person's severe flag (None when ``[signals.label]`` is disabled)."""
    if not settings.label.enabled:
        return None
    evidence = _cut(f"flagged severe by {flagged_by or 'someone'}: {reason}", settings.evidence_chars)
    return FailureSignal(unit_id=unit_id, source="flag", kind="flag", strength=settings.label.flag_strength,
                         evidence=evidence,
                         time_ns=time.time_ns(), lineage=AnnotatorLineage(annotator=flagged_by or "unknown"))
