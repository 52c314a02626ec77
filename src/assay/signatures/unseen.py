"""When to stop reviewing: the chance that the next reviewed failure shows a failure mode no criterion
covers yet, by the Good-Turing estimate of the missing mass.

**Observations.** Every unit a person labelled ``fail`` (its latest human label on some criterion, or on
none, is ``fail``) is one reviewed failure; its **mode** is the criterion of its latest such ``fail`` label
that names one. A unit whose ``fail`` labels name no criterion is a failure no criterion covers: it counts
as a mode of its own, seen once. Only ``fail`` on a binary criterion (or on none) counts: a level, a class or
a pairwise preference on another scale (:mod:`assay.annotations.scale`) says no pass or fail, and when it is
the latest label of a unit on its criterion, an earlier ``fail`` there no longer counts.

**Estimate** (Good 1953, "The population frequencies of species and the estimation of population
parameters", *Biometrika* 40:237-264, crediting Turing): with ``N`` reviewed failures, ``N1`` modes seen
exactly once and ``N2`` seen exactly twice, the probability that the next failure, drawn like these, belongs
to a mode not seen yet is estimated by ``N1 / N``. Its 95% interval is Esty's normal approximation (Esty
1983, "A normal limit law for a nonparametric estimator of the coverage of a random sample", *Annals of
Statistics* 11:905-912): ``N1/N ± 1.96 * sqrt(N1 + 2*N2 - N1**2/N) / N``, clipped to [0, 1], given only
when ``0 < N1 < N`` (the limit law needs both).

**Caveats.** (1) The estimate holds for a failure drawn the way the reviewed ones were: reviewing in
assay's order (one of each signature in turn) meets new modes early on purpose, so the singletons run
ahead and the estimate leans high (on the safe side: it says "keep reviewing" for longer); reviewing one
signature's whole queue leans low. (2) A mode is a criterion: a criterion written broadly enough to cover
two failure modes hides one, and failures labelled without a criterion count as new modes. (3) It says
nothing of modes that never reach review (units no signal marks failed). (4) Esty's interval is
asymptotic; with a few dozen labelled failures read it as rough.
"""

from __future__ import annotations

import math
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import AnnotationRow, CriterionRow
from assay.stats import z_critical

UNCOVERED = ""
"""The mode of a failure labelled without a criterion (each such failure is a mode of its own)."""


class UnseenModes(BaseModel):
    """The Good-Turing estimate of the chance that the next reviewed failure shows a mode no criterion
    covers yet (see module docstring)."""

    model_config = ConfigDict(frozen=True)

    labelled_failures: int = Field(ge=0, description="N: units a person labelled fail")
    criteria: int = Field(ge=0, description="distinct criteria among their modes")
    uncovered: int = Field(ge=0, description="failures labelled without a criterion (each a mode seen once)")
    singletons: int = Field(ge=0, description="N1: modes seen exactly once (uncovered failures included)")
    doubletons: int = Field(ge=0, description="N2: modes seen exactly twice")
    estimate: float | None = Field(description="N1 / N in [0, 1]; None before any failure is labelled")
    low: float | None = Field(default=None, description="95% interval (Esty 1983), when 0 < N1 < N")
    high: float | None = None
    per_criterion: dict[str, int] = Field(default_factory=dict, description="criterion -> labelled failures, "
                                          "most first")

    @property
    def text(self) -> str:
        """One line, e.g. ``chance the next reviewed failure shows a mode no criterion covers yet: 12% (95% CI
        3%-21%; Good-Turing, 3 of 25 labelled failures the only one of their mode)``."""
        if self.estimate is None:
            return "chance the next reviewed failure shows a mode no criterion covers yet: unknown (no failure " \
                   "labelled by a person yet)"
        ci = f"95% CI {self.low:.0%}-{self.high:.0%}; " if self.low is not None and self.high is not None else ""
        return (f"chance the next reviewed failure shows a mode no criterion covers yet: {self.estimate:.0%} ({ci}"
                f"Good-Turing, {self.singletons} of {self.labelled_failures} labelled failures the only one of "
                f"their mode; {self.criteria} criteria)")


def good_turing(counts: Counter[str], uncovered: int = 0) -> UnseenModes:
    """The estimate from failures per mode (criterion name -> count) and failures without a criterion."""
    n = sum(counts.values()) + uncovered
    per = Counter(counts.values())
    n1, n2 = per[1] + uncovered, per[2]
    estimate = n1 / n if n else None
    low = high = None
    if n and 0 < n1 < n:
        half = z_critical() * math.sqrt(max(0.0, n1 + 2 * n2 - n1 * n1 / n)) / n
        low, high = max(0.0, n1 / n - half), min(1.0, n1 / n + half)
    return UnseenModes(labelled_failures=n, criteria=len(counts), uncovered=uncovered, singletons=n1, doubletons=n2,
                       estimate=estimate, low=low, high=high,
                       per_criterion=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))


def unseen_modes(store: Store) -> UnseenModes:
    """The estimate over the store's human labels (see module docstring). Per unit and criterion (or none)
    the latest human label counts, so a ``fail`` corrected to ``pass`` is no failure."""
    q = (select(AnnotationRow.unit_id, CriterionRow.name, AnnotationRow.label)
         .outerjoin(CriterionRow, CriterionRow.id == AnnotationRow.criterion_id)
         .where(AnnotationRow.annotator_kind == "human").order_by(AnnotationRow.created_at, AnnotationRow.id))
    latest: dict[tuple[str, str], tuple[str | None, int]] = {}
    with store.session() as s:
        for n, (unit_id, criterion, label) in enumerate(s.execute(q)):
            latest[(unit_id, criterion or UNCOVERED)] = (label, n)
    named: dict[str, tuple[int, str]] = {}
    bare: set[str] = set()
    for (unit_id, criterion), (label, n) in latest.items():
        if label != "fail":
            continue
        if criterion == UNCOVERED:
            bare.add(unit_id)
        elif unit_id not in named or n > named[unit_id][0]:
            named[unit_id] = (n, criterion)
    modes = Counter(criterion for _, criterion in named.values())
    return good_turing(modes, uncovered=len(bare - set(named)))
