"""The default strengths of the agent-side cues, derived on the dev half of the 300 tau-bench runs only.

Each cue with its own strength setting gets Cheng's **causal power** (Cheng 1997, "From covariation to
causation: a causal power theory", Psychological Review 104(2); the strength of a noisy-OR cause):

    power = (p1 - p0) / (1 - p0),   clipped at 0

with p1 = P(fail | the cue fired on the unit) and p0 = P(fail | it did not), each shrunk toward the dev
half's base fail rate b by ``PRIOR_UNITS`` pseudo-units: p = (failed + m * b) / (units + m). Kept at their
reasoned strengths: cues seen on fewer than ``MIN_UNITS`` dev units (the dev half says little about them)
and what the user says (``USER_SIDE``: tau-bench's user is a simulator playing a script, not a customer).

Signals are detected on all 300 runs with their rewards withheld, as the benchmark does (the population
detector ``long_session`` fits its length norms on the batch, label-free); rewards are read for the dev
half only (split as ``bench_discovery.split_of``: sha256 of ``domain/task_id``, even = dev).

    python benchmarks/derive_strengths.py       # prints the table; the defaults in assay.settings.signals
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench_discovery import load_units, split_of, withhold

PRIOR_UNITS = 5
"""m: pseudo-units at the base rate (fixed by reasoning: a cue seen on 8 units must not reach certainty)."""
MIN_UNITS = 5
"""Cues flagged on fewer dev units keep their reasoned strength."""
USER_SIDE = ("user_frustration", "user_correction", "user_repeat", "unanswered_complaint",
             "escalation (user asks, no hand-off)")
"""Cues of what the user says: kept at their reasoned strengths (tau-bench's users are simulated)."""


def _kind(kind: str) -> Callable[[Any], bool]:
    return lambda s: s.kind == kind


CUES: dict[str, Callable[[Any], bool]] = {
    "escalation (hand-off tool)": lambda s: s.kind == "escalation" and s.evidence.startswith("tool "),
    "escalation (user asks, no hand-off)": lambda s: s.kind == "escalation" and not s.evidence.startswith("tool "),
}
"""Cues that share a kind but have their own strength setting; every other kind is one cue."""


def causal_power(fired: list[bool], failed: list[bool]) -> float:
    """Cheng's causal power of a binary cue for ``failed``, both proportions shrunk toward the base rate."""
    base = sum(failed) / len(failed)

    def shrunk(flags: list[bool]) -> float:
        return (sum(flags) + PRIOR_UNITS * base) / (len(flags) + PRIOR_UNITS)

    p1 = shrunk([f for c, f in zip(fired, failed, strict=True) if c])
    p0 = shrunk([f for c, f in zip(fired, failed, strict=True) if not c])
    return max(0.0, (p1 - p0) / (1 - p0))


def main() -> int:
    from assay.signals import SignalSettings, detect_many

    units = load_units()
    # detect on all 300 with outcomes withheld, as the benchmark does; read the dev half's outcomes only
    every = detect_many([withhold(u) for u in units], SignalSettings())
    dev = [n for n, u in enumerate(units) if split_of(u) == "dev"]
    failed = [units[n].outcome == "fail" for n in dev]
    signals = [every[n] for n in dev]
    cues = {**{k: _kind(k) for k in sorted({s.kind for sig in signals for s in sig}) if k != "escalation"}, **CUES}
    print(f"dev half: {len(signals)} units, {sum(failed)} failed; m = {PRIOR_UNITS}, min units {MIN_UNITS}")
    for name, test in cues.items():
        fired = [any(test(s) for s in sig) for sig in signals]
        n, k = sum(fired), sum(f for c, f in zip(fired, failed, strict=True) if c)
        power = causal_power(fired, failed)
        keep = "user side, kept" if name in USER_SIDE else "too few units, kept" if n < MIN_UNITS else ""
        print(f"{name:36s} flagged {n:3d}, failed {k:3d}: causal power {power:.2f} {keep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
