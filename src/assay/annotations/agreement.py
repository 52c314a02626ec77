"""Human-human agreement on a criterion, on its scale: Cohen's kappa for every annotator pair, Fleiss' kappa,
Krippendorff's alpha, weighted kappa (ordinal), each with n, the class distribution and a bootstrap 95% CI.

The formulas are :mod:`assay.stats`'s (Cohen 1960, 1968; Fleiss 1971; Krippendorff 2011). Intervals
are percentile bootstraps over items (Efron 1979): ``n_boot`` resamples with replacement, seeded; a
resample on which a statistic is undefined is left out of its interval. Every statistic that cannot
be computed says why in words (``Statistic.note``: one class only, no item labelled twice, ...),
never NaN.

Labels counted: each human annotator's latest label per item under the criterion's current version
(stale ones and adjudications left out). An item is a unit, or on a pairwise criterion a pair of
units in sorted order (labels given in the other order are flipped to it, see
:mod:`assay.annotations.items`). Only items labelled by two or more people say anything about
agreement: the report counts them apart from the items one person labelled. A disagreement is on the
*verdict* (the values differ) or on *severity only* (same value, different severities). Labels made
after seeing another one (``Annotation.blind`` False: blind review was off) are counted, so a report
that rests on them says so (``not_blind_labels``): they inflate agreement.

Stale records (:func:`label_counts`) are every record on the criterion made under an older version:
human and judge labels and adjudications alike, the one count every page shows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.annotations.items import canonical, split_key
from assay.annotations.model import Annotation, Criterion
from assay.annotations.scale import KrippendorffLevel, ScaleKind
from assay.stats import (
    KappaWeights,
    bootstrap_fleiss_kappa,
    bootstrap_krippendorff_alpha,
    bootstrap_tables,
    cohen_kappa,
    contingency_table,
    fleiss_kappa,
    kappa_from_table,
    krippendorff_alpha,
    percentile_interval,
)

Level = KrippendorffLevel
N_BOOT = 1000
"""Bootstrap resamples behind each interval of the agreement report."""

ADJUDICATION_SOURCE = "adjudication"
"""``source`` of the final label an admin records for a disagreement."""

__all__ = ["ADJUDICATION_SOURCE", "Disagreement", "HumanAgreement", "LabelCounts", "PairAgreement", "Statistic",
           "cohen_kappa", "current_labels", "human_agreement", "is_stale", "krippendorff_alpha", "label_counts"]


class Statistic(BaseModel):
    """One agreement statistic with its bootstrap 95% interval.

    ``value`` is None when the statistic is undefined on these labels, and ``note`` says why in words;
    ``low``/``high`` are None when no interval could be drawn (``note`` says why too).
    """

    model_config = ConfigDict(frozen=True)

    value: float | None = Field(description="point estimate; None when undefined")
    low: float | None = Field(None, description="2.5th percentile of the bootstrap draws")
    high: float | None = Field(None, description="97.5th percentile of the bootstrap draws")
    n: int = Field(description="items it was computed on")
    note: str = Field("", description="why it is undefined or has no interval, in words; empty otherwise")


class PairAgreement(BaseModel):
    """Two annotators on the items both labelled: raw agreement, Cohen's kappa and (ordinal) weighted kappa."""

    model_config = ConfigDict(frozen=True)

    first: str
    second: str
    n: int = Field(description="items both labelled")
    agreement: float | None = Field(description="share of those items with the same label; None without items")
    kappa: Statistic = Field(description="Cohen's kappa (1960)")
    weighted_kappa: Statistic | None = Field(None, description="quadratic weighted kappa (Cohen 1968); ordinal only")
    not_blind: int = Field(0, description="of the n items, those where either label was made after seeing another")


class Disagreement(BaseModel):
    """One item on which the current (non-stale) human labels differ."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    second_unit_id: str | None = Field(None, description="pairwise: the pair's second unit (pairs in sorted order)")
    kind: Literal["verdict", "severity"] = Field(
        "verdict", description="verdict: the values differ; severity: same value, only the severities differ")
    labels: dict[str, str] = Field(description="{annotator: value}, latest label of each (as text)")
    severities: dict[str, int | None] = Field(description="{annotator: severity 1..4 or None}")
    adjudicated: Annotation | None = Field(None, description="the latest adjudication, if any")


class HumanAgreement(BaseModel):
    """Human-human agreement on one criterion, from the labels made under its current version.

    Every statistic is on the criterion's scale (``scale``): ``pairs`` holds Cohen's kappa of every
    annotator pair (and quadratic weighted kappa on an ordinal scale), ``fleiss_kappa`` all annotators
    at once, ``alpha`` Krippendorff's alpha at each level of measurement the scale fits (nominal;
    ordinal and interval for ordinal levels; ordinal for pairwise, a tie between the preferences).
    ``kappa``, ``alpha_label`` and ``alpha_severity`` are kept from the binary-only report: Cohen's
    kappa when exactly one pair of annotators labelled items in common (other annotators, e.g. an
    imported rater who overlaps with nobody, do not hide it), alpha nominal on the labels, alpha
    ordinal on severity.
    ``raw_agreement`` (share of agreeing annotator pairs on items with >= 2 labels) says what happened
    when kappa is undefined.
    """

    model_config = ConfigDict(frozen=True)

    criterion: str
    criterion_version: int
    scale: ScaleKind = "binary"
    annotators: list[str]
    n_units: int = Field(description="items (units, or pairs) with labels from at least two annotators")
    n_labels: int = Field(description="current labels counted (one per annotator and item)")
    stale_labels: int = Field(description="records made under an older criterion version, left out (label_counts)")
    distribution: dict[str, int] = Field(default_factory=dict, description="current labels per value, scale order")
    overlap_distribution: dict[str, int] = Field(
        default_factory=dict, description="current labels per value on the n_units items only (what agreement is on)")
    single_items: int = Field(0, description="items labelled by one annotator only: no agreement to measure")
    not_blind_labels: int = Field(0, description="labels on the n_units items made after seeing another label")
    pass_count: int
    fail_count: int
    kappa: float | None = Field(description="Cohen's kappa of the one pair of annotators who overlap; None unless "
                                            "exactly one pair does")
    pairs: list[PairAgreement] = Field(default_factory=list, description="Cohen's kappa for every annotator pair")
    fleiss_kappa: Statistic | None = Field(None, description="Fleiss' kappa (1971) over all annotators")
    alpha: dict[str, Statistic] = Field(default_factory=dict, description="Krippendorff's alpha per level")
    alpha_label: float | None = Field(description="Krippendorff's alpha, nominal, on the labels")
    alpha_severity: float | None = Field(description="Krippendorff's alpha, ordinal, on severity 1..4")
    raw_agreement: float | None = Field(description="agreeing pairs / pairs, 0..1; None without pairs")
    disagreements: list[Disagreement]
    n_boot: int = Field(N_BOOT, description="bootstrap resamples behind each interval")
    notes: list[str] = Field(default_factory=list, description="what limits the report, in words")


def is_stale(annotation: Annotation, criterion: Criterion) -> bool:
    """True when the label was made under an older version of its criterion."""
    return annotation.criterion_version is not None and annotation.criterion_version < criterion.version


class LabelCounts(BaseModel):
    """Records on one criterion by annotator: current, and stale (made under an older version)."""

    model_config = ConfigDict(frozen=True)

    current: dict[str, int] = Field(description="{annotator: records under the current version}, most first")
    stale: dict[str, int] = Field(description="{annotator: records under an older version}, most first")

    @property
    def n_current(self) -> int:
        return sum(self.current.values())

    @property
    def n_stale(self) -> int:
        return sum(self.stale.values())


def _most_first(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def label_counts(annotations: Sequence[Annotation], criterion: Criterion) -> LabelCounts:
    """Every record against ``criterion`` (human and judge labels, adjudications), current or stale, by
    annotator: the one count of stale labels the app and the CLI show."""
    ours = [a for a in annotations if a.criterion == criterion.name]
    return LabelCounts(current=_most_first(Counter(a.annotator for a in ours if not is_stale(a, criterion))),
                       stale=_most_first(Counter(a.annotator for a in ours if is_stale(a, criterion))))


def current_labels(annotations: Sequence[Annotation], criterion: Criterion) -> dict[str, dict[str, Annotation]]:
    """``{item key: {annotator: latest human label}}`` under the criterion's current version.

    The item key is the unit id (``"A vs B"`` for a pair, labels turned to the pair's sorted order).
    Adjudications and non-human annotations are left out; a later record by the same annotator on
    the same item (a correction) replaces the earlier one.
    """
    out: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for a in annotations:
        if (a.criterion == criterion.name and a.annotator_kind == "human" and a.source != ADJUDICATION_SOURCE
                and not is_stale(a, criterion)):
            a = canonical(a)
            out[a.item][a.annotator] = a
    return dict(out)


def _raw_agreement(by_item: Mapping[str, Mapping[str, Annotation]]) -> float | None:
    pairs = agree = 0
    for labels in by_item.values():
        for x, y in combinations(labels.values(), 2):
            pairs += 1
            agree += x.value == y.value
    return agree / pairs if pairs else None


def _statistic(point: float, draws: np.ndarray, n: int, undefined: str) -> Statistic:
    """A :class:`Statistic` from a point value (NaN: undefined, ``undefined`` says why) and bootstrap draws."""
    if np.isnan(point):
        return Statistic(value=None, n=n, note=undefined)
    if n < 2:
        return Statistic(value=float(point), n=n, note=f"{n} item: too few for an interval")
    bounds = percentile_interval(draws)
    if bounds is None:
        return Statistic(value=float(point), n=n, note="every bootstrap resample was undefined: no interval")
    return Statistic(value=float(point), low=bounds[0], high=bounds[1], n=n)


def _one_class(values: Sequence[Hashable]) -> str:
    """Why a chance-corrected statistic is undefined on ``values`` (all pairable labels)."""
    distinct = sorted({str(v) for v in values})
    if not values:
        return "no item has labels from two annotators"
    if len(distinct) == 1:
        return (f"every label is {distinct[0]!r}: with one class, chance agreement is 1 and agreement cannot be "
                "told from chance, so the statistic is undefined")
    return "no disagreement is expected by chance on these labels, so the statistic is undefined"


def _pair(first: str, second: str, by_item: Mapping[str, Mapping[str, Annotation]], categories: Sequence[Hashable],
          ordinal: bool, n_boot: int, seed: int) -> PairAgreement:
    """Agreement of two annotators on the items both labelled."""
    both = [labels for labels in by_item.values() if first in labels and second in labels]
    a = [labels[first].value for labels in both]
    b = [labels[second].value for labels in both]
    n = len(both)
    not_blind = sum(labels[first].blind is False or labels[second].blind is False for labels in both)
    if not n:
        none = Statistic(value=None, n=0, note=f"no item labelled by both {first} and {second}")
        return PairAgreement(first=first, second=second, n=0, agreement=None, kappa=none,
                             weighted_kappa=none if ordinal else None)
    table = contingency_table(a, b, categories)
    draws = bootstrap_tables(table, n_boot, seed)
    why = _one_class([*a, *b])

    def kappa(weights: KappaWeights | None) -> Statistic:
        return _statistic(float(kappa_from_table(table, weights)), kappa_from_table(draws, weights), n, why)

    return PairAgreement(first=first, second=second, n=n, agreement=float(np.trace(table)) / n, kappa=kappa(None),
                         weighted_kappa=kappa("quadratic") if ordinal else None, not_blind=not_blind)


def _fleiss(by_item: Mapping[str, Mapping[str, Annotation]], categories: Sequence[Hashable], n_boot: int,
            seed: int) -> Statistic:
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros((len(by_item), len(categories)))
    for row, labels in enumerate(by_item.values()):
        for a in labels.values():
            counts[row, index[a.value]] += 1
    values = [a.value for labels in by_item.values() for a in labels.values()]
    if not len(counts):
        return Statistic(value=None, n=0, note=_one_class(values))
    draws = bootstrap_fleiss_kappa(counts, n_boot, seed)
    point = fleiss_kappa(counts)
    return _statistic(float("nan") if point is None else point, draws, len(counts), _one_class(values))


def _alpha(by_item: Mapping[str, Mapping[str, Annotation]], criterion: Criterion, level: Level, n_boot: int,
           seed: int) -> Statistic:
    scale = criterion.scale
    units = [[a.value if level == "nominal" else scale.rank(a.value) for a in labels.values()]  # type: ignore[arg-type]
             for labels in by_item.values()]
    point = krippendorff_alpha(units, level)
    why = _one_class([a.value for labels in by_item.values() for a in labels.values()])
    return _statistic(float("nan") if point is None else point,
                      bootstrap_krippendorff_alpha(units, level, n_boot, seed), len(units), why)


def _disagreements(multi: Mapping[str, Mapping[str, Annotation]],
                   adjudications: Mapping[str, Annotation]) -> list[Disagreement]:
    out = []
    for key, labels in sorted(multi.items()):
        verdict = len({a.value for a in labels.values()}) > 1
        if verdict or len({a.severity for a in labels.values()}) > 1:
            unit, second = split_key(key)
            out.append(Disagreement(unit_id=unit, second_unit_id=second, kind="verdict" if verdict else "severity",
                                    labels={n: str(a.value) for n, a in labels.items()},
                                    severities={n: a.severity for n, a in labels.items()},
                                    adjudicated=adjudications.get(key)))
    return out


def _notes(annotators: list[str], multi: Mapping[str, object], n_items: int) -> list[str]:
    if not annotators:
        return ["no current human label on this criterion yet"]
    if len(annotators) == 1:
        return [f"only one annotator ({annotators[0]}): agreement needs a second one on the same items"]
    if not multi:
        return [f"{n_items} item(s) labelled, none by two annotators: agreement needs overlapping items"]
    if len(multi) == 1:
        return ["only one item has labels from two annotators: too few for an interval"]
    return []


def human_agreement(annotations: Sequence[Annotation], criterion: Criterion, n_boot: int = N_BOOT,
                    seed: int = 0) -> HumanAgreement:
    """Agreement of the human annotators on one criterion, on its scale (see :class:`HumanAgreement`).

    Args:
        annotations: any annotations (e.g. ``list_annotations(store, criterion.name)``);
            only current human labels against ``criterion`` count.
        criterion: the criterion, at its current version.
        n_boot: bootstrap resamples per interval (>= 1).
        seed: seed of the resampling (same labels and seed, same intervals).
    """
    by_item = current_labels(annotations, criterion)
    multi = {u: labels for u, labels in by_item.items() if len(labels) >= 2}
    annotators = sorted({name for labels in by_item.values() for name in labels})
    adjudications = {canonical(a).item: canonical(a) for a in annotations
                     if a.criterion == criterion.name and a.source == ADJUDICATION_SOURCE}
    flat = [a for labels in by_item.values() for a in labels.values()]
    shared = [a for labels in multi.values() for a in labels.values()]
    categories = criterion.scale.choices()
    counted, counted_shared = Counter(a.value for a in flat), Counter(a.value for a in shared)
    ordinal = criterion.scale.kind == "ordinal"
    pairs = [_pair(a, b, multi, categories, ordinal, n_boot, seed) for a, b in combinations(annotators, 2)]
    overlapping = [p for p in pairs if p.n]
    return HumanAgreement(
        criterion=criterion.name, criterion_version=criterion.version, scale=criterion.scale.kind,
        annotators=annotators, n_units=len(multi), n_labels=len(flat),
        stale_labels=label_counts(annotations, criterion).n_stale,
        distribution={str(c): counted[c] for c in categories},
        overlap_distribution={str(c): counted_shared[c] for c in categories},
        single_items=len(by_item) - len(multi), not_blind_labels=sum(a.blind is False for a in shared),
        pass_count=counted["pass"], fail_count=counted["fail"],
        kappa=overlapping[0].kappa.value if len(overlapping) == 1 else None, pairs=pairs,
        fleiss_kappa=_fleiss(multi, categories, n_boot, seed),
        alpha={level: _alpha(multi, criterion, level, n_boot, seed) for level in criterion.scale.alpha_levels()},
        alpha_label=krippendorff_alpha([[a.value for a in labels.values()] for labels in multi.values()]),
        alpha_severity=krippendorff_alpha([[a.severity for a in labels.values()] for labels in multi.values()],
                                          "ordinal"),
        raw_agreement=_raw_agreement(multi), disagreements=_disagreements(multi, adjudications),
        n_boot=n_boot, notes=_notes(annotators, multi, len(by_item)))
