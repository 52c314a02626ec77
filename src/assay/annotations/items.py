"""What was judged: items (a unit, or a pair of units on a pairwise criterion) and the consensus of their labels.

A pairwise judgment of ``(A, B)`` and one of ``(B, A)`` judge the same item: :func:`canonical` turns
every pairwise annotation to the pair's sorted order (``unit_id < second_unit_id``), flipping its value
(first <-> second) and its shown order when it swaps them, so labels of one item compare directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import median_low

from assay.annotations.model import Annotation
from assay.annotations.scale import Scale, ScaleValue, flip


def canonical(annotation: Annotation) -> Annotation:
    """A pairwise annotation in its pair's sorted order (others unchanged); see the module docstring."""
    second = annotation.second_unit_id
    if second is None or annotation.unit_id <= second:
        return annotation
    order = {"first-second": "second-first", "second-first": "first-second"}.get(annotation.shown_order or "")
    return annotation.model_copy(update={"unit_id": second, "second_unit_id": annotation.unit_id,
                                         "value": flip(annotation.value) if annotation.value is not None else None,
                                         "shown_order": order})


def item_key(annotation: Annotation) -> str:
    """The item an annotation judged: its unit id, or ``"A vs B"`` (sorted) for a pairwise judgment."""
    return canonical(annotation).item


def split_key(key: str) -> tuple[str, str | None]:
    """``(unit id, second unit id or None)`` of an item key."""
    first, sep, second = key.partition(" vs ")
    return (first, second) if sep else (key, None)


def consensus(values: Sequence[ScaleValue], scale: Scale) -> ScaleValue | None:
    """The label of an item from its annotators' values; None when they split evenly.

    Ordinal: the median level (with an even number of values, the two middle levels must agree, else
    None). Other scales: the value more annotators gave than any other (a tie for the most is None).
    """
    if not values:
        return None
    if scale.kind == "ordinal":
        ranked = sorted(int(v) for v in values)
        mid = len(ranked) // 2
        if len(ranked) % 2 == 0 and ranked[mid - 1] != ranked[mid]:
            return None
        return median_low(ranked)
    (top, n), *rest = Counter(values).most_common()
    return None if rest and rest[0][1] == n else top
