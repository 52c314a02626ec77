"""Detectors of what the agent states without a source: figures that appear nowhere before.

Reads only the step timeline (:class:`~assay.signals.registry.UnitView`).
"""

from __future__ import annotations

import re
from typing import Any

from assay.signals.registry import Finding, UnitView, detector
from assay.signals.settings import UngroundedSettings

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def numbers(text: str) -> set[float]:
    """Every number written in ``text`` (digit runs, thousands commas dropped), also inside words and ids
    (``certificate_7091239`` gives 7091239)."""
    out: set[float] = set()
    for match in _NUMBER.findall(text):
        try:
            out.add(float(match.replace(",", "").rstrip(".")))
        except ValueError:
            continue
    return out


@detector("ungrounded_number", "2", UngroundedSettings)
def ungrounded_number(view: UnitView, cfg: UngroundedSettings, _: Any = None) -> list[Finding]:
    """An assistant turn that states a number >= ``min_value`` found in no earlier step (system prompt, user
    turns, tool calls and results, its own earlier turns): a figure the agent computed in its head or
    invented. One signal per such turn, listing the numbers."""
    seen: set[float] = set()
    out = []
    for step in view.steps:
        found = numbers(step.text)
        if step.kind == "assistant":
            new = sorted(n for n in found - seen if n >= cfg.min_value)
            if new:
                shown = ", ".join(f"{n:g}" for n in new[:8])
                out.append(Finding("ungrounded_number", cfg.strength, f"stated without a source: {shown} | "
                                   f"{step.text}", step))
        seen |= found
    return out
