"""Human-human agreement on the items a judge was measured on: the ceiling for judge-human agreement.

A judge cannot be expected to agree with "the humans" more than they agree with each
other. On every item labelled by two or more human annotators, each unordered pair of
annotators (names sorted) gives one (first, second) label pair; agreement and Cohen's
kappa (1960) of the pooled pairs, with bootstrap CIs, are the ceiling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from itertools import combinations

from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay.annotations.items import canonical
from assay.annotations.store import get_criterion, list_annotations
from assay.calibration.stats import CalibrationMetrics, metrics_with_ci


class HumanCeiling(BaseModel):
    """Human-human agreement on the items of one split that have >= 2 human labels."""

    model_config = ConfigDict(frozen=True)

    n_items: int = Field(description="items with at least two human annotators")
    n_pairs: int = Field(description="annotator pairs compared (pooled over items)")
    annotators: tuple[str, ...]
    metrics: CalibrationMetrics = Field(description="first annotator of a pair as 'human', second as 'judge'")


def human_labels(store: Store, criterion: str) -> dict[str, dict[str, str]]:
    """item key -> {human annotator -> latest value, as text} under the criterion's current version
    (pairs in sorted order, :func:`~assay.annotations.items.canonical`)."""
    crit = get_criterion(store, criterion)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for a in list_annotations(store, crit.name):
        if a.annotator_kind == "human" and (a.criterion_version in (None, crit.version)):
            a = canonical(a)
            out[a.item][a.annotator] = str(a.value)
    return dict(out)


def human_ceiling(store: Store, criterion: str, unit_ids: Collection[str], seed: int = 0,
                  project: Callable[[str], str] | None = None) -> HumanCeiling | None:
    """Human-human agreement on ``unit_ids`` (item keys); None when no item has two human annotators.

    ``project`` turns a value (as text) into pass/fail, for a non-binary scale (None: the values are
    pass/fail already).
    """
    labels = human_labels(store, criterion)
    if project is not None:
        labels = {k: {who: project(v) for who, v in by.items()} for k, by in labels.items()}
    first: list[str] = []
    second: list[str] = []
    items = 0
    names: set[str] = set()
    for unit in sorted(set(unit_ids)):
        by = labels.get(unit, {})
        if len(by) < 2:
            continue
        items += 1
        names.update(by)
        for a, b in combinations(sorted(by), 2):
            first.append(by[a])
            second.append(by[b])
    if not items:
        return None
    return HumanCeiling(n_items=items, n_pairs=len(first), annotators=tuple(sorted(names)),
                        metrics=metrics_with_ci(first, second, seed=seed))
