"""What the review page shows of an item's labels: blind review and stale labels.

Blind review (on unless a queue turns it off, :func:`assay.annotations.queue.set_queue`): an annotator sees
no other human's or judge's label on an item, and no failure signal made from one (a human ``fail`` label,
a failed evaluator score), until they saved their own current label on it; then every label shows (the
reveal). A stale label of theirs (made under an older version of the criterion) does not count as theirs:
the form is not pre-filled with it, and it shows, marked stale, only after the new one is saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assay.annotations import Annotation, Criterion
from assay.annotations.agreement import is_stale
from assay.signals import FailureSignal

HIDDEN_SIGNAL_SOURCES = frozenset({"label", "evaluator"})
"""Failure-signal sources that carry someone's label (a human ``fail``, a failed judge score): hidden while blind."""


@dataclass(frozen=True)
class LabelView:
    """An item's labels as one annotator may see them now.

    Attributes:
        shown: ``(label, stale)`` pairs on the page (none while blind).
        hidden: labels not shown (blind review).
        blind: the page is blind now (the queue is blind and the annotator has no current label on the item).
        mine: the annotator's latest current label on the item (pre-fills the form), or None.
        mine_stale: the annotator's latest stale label, when they have no current one.
    """

    shown: list[tuple[Annotation, bool]]
    hidden: int
    blind: bool
    mine: Annotation | None
    mine_stale: Annotation | None

    def signals(self, signals: Sequence[FailureSignal]) -> list[FailureSignal]:
        """The failure signals the page may show (those made from a label are hidden while blind)."""
        return [x for x in signals if not self.blind or x.source not in HIDDEN_SIGNAL_SOURCES]


def _on(a: Annotation, criterion: Criterion | None) -> bool:
    """True when ``a`` was made against the review's criterion (or, without one, against none)."""
    return a.criterion == (criterion.name if criterion else None)


def label_view(labels: Sequence[Annotation], annotator: str, criterion: Criterion | None,
               blind_queue: bool) -> LabelView:
    """What ``annotator`` sees of ``labels`` (every label on the item, any criterion, oldest first) on a review
    against ``criterion`` in a queue that is blind or not (see the module docstring)."""
    stale = [criterion is not None and a.criterion == criterion.name and is_stale(a, criterion) for a in labels]
    own = [(a, old) for a, old in zip(labels, stale, strict=True)
           if a.annotator == annotator and a.annotator_kind == "human" and _on(a, criterion)]
    current = [a for a, old in own if not old]
    mine = current[-1] if current else None
    old_mine = [a for a, old in own if old]
    blind = blind_queue and mine is None
    shown = [] if blind else list(zip(labels, stale, strict=True))
    return LabelView(shown=shown, hidden=len(labels) - len(shown), blind=blind, mine=mine,
                     mine_stale=old_mine[-1] if old_mine and mine is None else None)


def made_blind(view: LabelView, annotator: str) -> bool:
    """Whether a label saved now is made blind: the page hid the other labels, or there were none to see."""
    return view.blind or all(a.annotator == annotator for a, _ in view.shown)
