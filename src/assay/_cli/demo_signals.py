"""The demo's look at failure signals with the recorded outcome withheld: what the detectors alone find.

Each unit is copied as production would have it (no outcome, no reward, no source attributes), the
registered detectors run on the copies (:func:`assay.signals.detect_many`), and each signal kind,
the combined failure score at ``[signals] fail_at`` and "any signal at all" are compared with the
reward the source recorded. Rates carry n and a Wilson 95% interval (:func:`assay.stats.wilson_interval`);
the failure score's ROC AUC is sklearn's ``roc_auc_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from assay._cli._common import console
from assay.settings.signals import SignalSettings
from assay.signals import FailureSignal, detect_many, failure_score
from assay.stats import wilson_interval
from assay.traces.model import Unit


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its Wilson 95% interval; ``n == 0`` reads as undefined."""

    k: int
    n: int

    def text(self) -> str:
        """``"0.62 [0.49, 0.73] (31/50)"``, or ``"undefined (0/0)"``."""
        if not self.n:
            return "undefined (0/0)"
        low, high = wilson_interval(self.k, self.n)
        return f"{self.k / self.n:.2f} [{low:.2f}, {high:.2f}] ({self.k}/{self.n})"


@dataclass(frozen=True)
class Detection:
    """Precision and recall of one way of flagging units, against the recorded outcome."""

    name: str
    flagged: int
    precision: Rate
    recall: Rate


def withhold(unit: Unit) -> Unit:
    """``unit`` as production would have it: outcome ``unknown``, no reward, no source attributes."""
    return unit.model_copy(update={"outcome": "unknown", "reward": None, "attributes": {}})


def detection(name: str, flagged: Sequence[bool], failed: Sequence[bool]) -> Detection:
    """Precision (failed among flagged) and recall (flagged among failed) of ``flagged``."""
    hits = sum(f and t for f, t in zip(flagged, failed, strict=True))
    return Detection(name, sum(flagged), Rate(hits, sum(flagged)), Rate(hits, sum(failed)))


def detections(signals: Sequence[Sequence[FailureSignal]], failed: Sequence[bool],
               settings: SignalSettings) -> list[Detection]:
    """Every signal kind seen (most units flagged first), then the failure score at ``fail_at`` and any signal."""
    kinds = sorted({s.kind for sigs in signals for s in sigs})
    rows = [detection(kind.replace("_", " "), [any(s.kind == kind for s in sigs) for sigs in signals], failed)
            for kind in kinds]
    rows.sort(key=lambda d: (-d.flagged, d.name))
    rows.append(detection(f"failure score >= {settings.fail_at:g} (assay's 'failed')",
                          [failure_score(sigs) >= settings.fail_at for sigs in signals], failed))
    rows.append(detection("any signal at all", [bool(sigs) for sigs in signals], failed))
    return rows


def roc_auc(signals: Sequence[Sequence[FailureSignal]], failed: Sequence[bool]) -> float | None:
    """ROC AUC of the failure score against ``failed`` (None when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    if len(set(failed)) < 2:
        return None
    return float(roc_auc_score(list(failed), [failure_score(sigs) for sigs in signals]))


def show_blind_signals(units: Sequence[Unit], settings: SignalSettings) -> list[Detection]:
    """Detect on ``units`` with outcomes withheld and print each detector's precision/recall against the reward.

    Returns:
        the rows printed (signal kinds, then the failure score and any signal).
    """
    failed = [u.outcome == "fail" for u in units]
    signals = detect_many([withhold(u) for u in units], settings)
    rows = detections(signals, failed, settings)
    table = Table("signal (outcome withheld)", "units flagged", "precision [95% CI]", "recall [95% CI]",
                  title=f"failure signals alone on {len(units)} units; {sum(failed)} failed by the reward "
                        f"(base rate {sum(failed) / max(1, len(units)):.2f})")
    for row in rows:
        table.add_row(row.name, str(row.flagged), row.precision.text(), row.recall.text())
    console.print(table)
    auc = roc_auc(signals, failed)
    console.print(f"ROC AUC of the failure score: {'undefined' if auc is None else f'{auc:.2f}'} (0.5 = chance). "
                  "The detectors are cheap, documented cues, not a verdict: precision near the base rate means a "
                  "cue says little alone. From here on the recorded outcome counts as one more signal, as a "
                  "benchmark's reward or a production outcome would.")
    return rows
