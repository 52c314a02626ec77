"""The combined failure score of a unit, and the ambiguous band.

Rule (noisy-OR, Pearl 1988, *Probabilistic Reasoning in Intelligent Systems* §4.3.2): each signal is
read as an independent chance ``strength`` that the unit failed, so

    failure score = 1 - prod(1 - strength_i)      over the unit's signals (0 when it has none)

It is at least the strongest signal, grows with every further signal, and never leaves [0, 1]. A unit
counts as **failed** at ``fail_at`` and is **ambiguous** in ``[ambiguous_low, ambiguous_high)``: its
cheap signals neither clearly fire nor are clearly absent, so a judge model's open coding is worth
its cost there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from assay.signals.model import FailureSignal
from assay.signals.settings import SignalSettings


def failure_score(signals: Iterable[FailureSignal]) -> float:
    """Noisy-OR of the signals' strengths, in [0, 1] (0.0 for no signals)."""
    return 1.0 - math.prod(1.0 - s.strength for s in signals)


class FailureAssessment(BaseModel):
    """What a unit's signals add up to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit_id: str
    score: float = Field(ge=0, le=1, description="failure score (noisy-OR of the signals' strengths)")
    failed: bool = Field(description="score >= fail_at")
    ambiguous: bool = Field(description="ambiguous_low <= score < ambiguous_high")
    kinds: tuple[str, ...] = Field(description="the distinct signal kinds, in first-seen order")


def assess(unit_id: str, signals: Iterable[FailureSignal], settings: SignalSettings | None = None) -> FailureAssessment:
    """Combine one unit's signals into its failure score, failed flag and ambiguity.

    Raises:
        UsageError: a signal belongs to another unit.
    """
    from assay.exceptions import UsageError

    cfg = settings or SignalSettings()
    signals = list(signals)
    other = next((s.unit_id for s in signals if s.unit_id != unit_id), None)
    if other is not None:
        raise UsageError(f"signal of unit {other!r} passed to assess({unit_id!r})")
    score = round(failure_score(signals), 6)
    return FailureAssessment(unit_id=unit_id, score=score, failed=score >= cfg.fail_at,
                             ambiguous=cfg.ambiguous_low <= score < cfg.ambiguous_high,
                             kinds=tuple(dict.fromkeys(s.kind for s in signals)))
