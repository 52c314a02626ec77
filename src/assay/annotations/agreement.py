"""Human-human agreement: Krippendorff's alpha, and per-criterion agreement of the experts.

Krippendorff's alpha follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability"
(Annenberg School for Communication, departmental paper 43): from the coincidence matrix
``o_ck`` (pairable values only, each unit weighted by ``1 / (m_u - 1)``) with marginals
``n_c`` and total ``n``::

    alpha = 1 - (n - 1) * sum_ck o_ck * d2_ck / sum_ck n_c * n_k * d2_ck

with ``d2_ck = [c != k]`` (nominal) or ``(sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2``
(ordinal, over the ranks of the values that occur). Alpha is undefined (``None``, never NaN)
when fewer than two pairable values exist or when all pairable values are the same.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import combinations, permutations
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.annotations.model import Annotation, Criterion
from assay.stats import cohen_kappa

Level = Literal["nominal", "ordinal"]

ADJUDICATION_SOURCE = "adjudication"
"""``source`` of the final label an admin records for a disagreement."""


def _coincidences(units: Sequence[Sequence[Hashable | None]]) -> dict[tuple[Hashable, Hashable], float]:
    """Coincidence matrix ``{(c, k): o_ck}`` of the pairable values (units with >= 2 values)."""
    o: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for c, k in permutations(values, 2):
            o[(c, k)] += 1.0 / (m - 1)
    return o


def krippendorff_alpha(units: Sequence[Sequence[Hashable | None]], level: Level = "nominal") -> float | None:
    """Krippendorff's alpha over reliability data, any number of coders, missing values allowed.

    Args:
        units: one sequence per unit (item) of the values the coders gave it; ``None`` is a
            missing value. Coders need not be aligned across units.
        level: ``"nominal"`` (categories) or ``"ordinal"`` (values are sortable ranks,
            e.g. severity 1..4).

    Returns:
        alpha in (-1, 1] (1 = perfect agreement, 0 = chance), or None when undefined: fewer
        than two pairable values, or only one distinct value among them (no expected disagreement).
    """
    o = _coincidences(units)
    n_c: dict[Hashable, float] = defaultdict(float)
    for (c, _k), w in o.items():
        n_c[c] += w
    n = sum(n_c.values())
    if n < 2 or len(n_c) < 2:
        return None
    d2 = _nominal_d2 if level == "nominal" else _ordinal_d2(n_c)
    observed = sum(w * d2(c, k) for (c, k), w in o.items())
    expected = sum(n_c[c] * n_c[k] * d2(c, k) for c in n_c for k in n_c)
    if expected <= 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def _nominal_d2(c: Hashable, k: Hashable) -> float:
    return 0.0 if c == k else 1.0


def _ordinal_d2(n_c: Mapping[Hashable, float]) -> Callable[[Hashable, Hashable], float]:
    """The ordinal metric over the values that occur, sorted."""
    ranks: list[Hashable] = sorted(n_c)  # type: ignore[type-var]
    pos = {v: i for i, v in enumerate(ranks)}

    def d2(c: Hashable, k: Hashable) -> float:
        lo, hi = sorted((pos[c], pos[k]))
        between = sum(n_c[ranks[g]] for g in range(lo, hi + 1))
        return float((between - (n_c[c] + n_c[k]) / 2.0) ** 2)

    return d2


class Disagreement(BaseModel):
    """One unit on which the current (non-stale) human labels differ."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    labels: dict[str, str] = Field(description="{annotator: pass|fail}, latest label of each")
    severities: dict[str, int | None] = Field(description="{annotator: severity 1..4 or None}")
    adjudicated: Annotation | None = Field(None, description="the latest adjudication, if any")


class HumanAgreement(BaseModel):
    """Human-human agreement on one criterion, from the labels made under its current version.

    ``kappa`` (Cohen) is given when exactly two annotators labelled; ``alpha_*``
    (Krippendorff) always; each is None when undefined, and then ``raw_agreement``
    (share of agreeing annotator pairs on units with >= 2 labels) says what happened.
    """

    model_config = ConfigDict(frozen=True)

    criterion: str
    criterion_version: int
    annotators: list[str]
    n_units: int = Field(description="units with labels from at least two annotators")
    n_labels: int = Field(description="current labels counted (one per annotator and unit)")
    stale_labels: int = Field(description="labels made under an older criterion version, left out")
    pass_count: int
    fail_count: int
    kappa: float | None
    alpha_label: float | None = Field(description="Krippendorff's alpha, nominal, on pass/fail")
    alpha_severity: float | None = Field(description="Krippendorff's alpha, ordinal, on severity 1..4")
    raw_agreement: float | None = Field(description="agreeing pairs / pairs, 0..1; None without pairs")
    disagreements: list[Disagreement]


def is_stale(annotation: Annotation, criterion: Criterion) -> bool:
    """True when the label was made under an older version of its criterion."""
    return annotation.criterion_version is not None and annotation.criterion_version < criterion.version


def current_labels(annotations: Sequence[Annotation], criterion: Criterion) -> dict[str, dict[str, Annotation]]:
    """``{unit_id: {annotator: latest human label}}`` under the criterion's current version.

    Adjudications and non-human annotations are left out; a later record by the same
    annotator on the same unit (a correction) replaces the earlier one.
    """
    out: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for a in annotations:
        if (a.criterion == criterion.name and a.annotator_kind == "human" and a.source != ADJUDICATION_SOURCE
                and not is_stale(a, criterion)):
            out[a.unit_id][a.annotator] = a
    return dict(out)


def _raw_agreement(by_unit: Mapping[str, Mapping[str, Annotation]]) -> float | None:
    pairs = agree = 0
    for labels in by_unit.values():
        for x, y in combinations(labels.values(), 2):
            pairs += 1
            agree += x.label == y.label
    return agree / pairs if pairs else None


def _kappa(by_unit: Mapping[str, Mapping[str, Annotation]], annotators: list[str]) -> float | None:
    if len(annotators) != 2:
        return None
    a, b = annotators
    both = [u for u in by_unit.values() if a in u and b in u]
    return cohen_kappa([u[a].label for u in both], [u[b].label for u in both])


def human_agreement(annotations: Sequence[Annotation], criterion: Criterion) -> HumanAgreement:
    """Agreement of the human annotators on one criterion (see :class:`HumanAgreement`).

    Args:
        annotations: any annotations (e.g. ``list_annotations(store, criterion.name)``);
            only current human labels against ``criterion`` count.
        criterion: the criterion, at its current version.
    """
    by_unit = current_labels(annotations, criterion)
    multi = {u: labels for u, labels in by_unit.items() if len(labels) >= 2}
    annotators = sorted({name for labels in by_unit.values() for name in labels})
    ours = [a for a in annotations if a.criterion == criterion.name and a.source != ADJUDICATION_SOURCE]
    adjudications = {a.unit_id: a for a in annotations
                     if a.criterion == criterion.name and a.source == ADJUDICATION_SOURCE}
    flat = [a for labels in by_unit.values() for a in labels.values()]
    disagreements = [
        Disagreement(unit_id=u, labels={n: a.label for n, a in labels.items()},
                     severities={n: a.severity for n, a in labels.items()}, adjudicated=adjudications.get(u))
        for u, labels in sorted(multi.items())
        if len({a.label for a in labels.values()}) > 1 or len({a.severity for a in labels.values()}) > 1]
    return HumanAgreement(
        criterion=criterion.name, criterion_version=criterion.version, annotators=annotators,
        n_units=len(multi), n_labels=len(flat), stale_labels=sum(is_stale(a, criterion) for a in ours),
        pass_count=sum(a.label == "pass" for a in flat), fail_count=sum(a.label == "fail" for a in flat),
        kappa=_kappa(multi, annotators),
        alpha_label=krippendorff_alpha([[a.label for a in labels.values()] for labels in multi.values()]),
        alpha_severity=krippendorff_alpha([[a.severity for a in labels.values()] for labels in multi.values()],
                                          "ordinal"),
        raw_agreement=_raw_agreement(multi), disagreements=disagreements)
