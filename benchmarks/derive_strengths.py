"""The default signal strengths, derived on the dev half of the 300 tau-bench runs only.

Each detector signal kind with its own strength setting gets Cheng's **causal power** (Cheng 1997, "From
covariation to causation: a causal power theory", Psychological Review 104(2); the parameter of a
noisy-OR cause):

    power = (p1 - p0) / (1 - p0),   clipped at 0

with p1 = P(fail | the kind fired on the unit) and p0 = P(fail | it did not), each shrunk toward the dev
half's base fail rate b by ``PRIOR_UNITS`` pseudo-units: p = (failed + m * b) / (units + m). Kinds that fire
on fewer than ``MIN_UNITS`` dev units keep the strength set by reasoning (the dev half says nothing about
them). Signals are detected on all 300 runs with their rewards withheld, as the benchmark does (the
population detector ``long_session`` fits its length norms on the batch, label-free); rewards are read for
the dev half only (split as ``bench_discovery.split_of``: sha256 of
``domain/task_id``, even = dev); the test half is never loaded into the computation.

    python benchmarks/derive_strengths.py       # prints the table; the defaults in assay.settings.signals
"""

from __future__ import annotations

import sys

from bench_discovery import load_units, split_of, withhold

PRIOR_UNITS = 5
"""m: pseudo-units at the base rate (fixed by reasoning: a cue seen on 8 units must not reach certainty)."""
MIN_UNITS = 5
"""Kinds flagged on fewer dev units keep their reasoned strength."""


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
    # detect on all 300 with outcomes withheld, as the benchmark does (long_session fits its length norms on
    # the batch, no labels); then keep the dev half, the only one whose outcomes are read
    every = detect_many([withhold(u) for u in units], SignalSettings())
    dev = [n for n, u in enumerate(units) if split_of(u) == "dev"]
    failed = [units[n].outcome == "fail" for n in dev]
    signals = [every[n] for n in dev]
    kinds = sorted({s.kind for sig in signals for s in sig})
    print(f"dev half: {len(signals)} units, {sum(failed)} failed; m = {PRIOR_UNITS}, min units {MIN_UNITS}")
    for kind in kinds:
        fired = [any(s.kind == kind for s in sig) for sig in signals]
        n, k = sum(fired), sum(f for c, f in zip(fired, failed, strict=True) if c)
        power = f"{causal_power(fired, failed):.2f}" if n >= MIN_UNITS else "keep (too few units)"
        print(f"{kind:24s} flagged {n:3d}, failed {k:3d}: strength {power}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
