"""Ground-truth datasets: versioned, content-addressed sets of (unit, criterion version, label)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from assay._store import Store
from assay._store.tables import DatasetRow
from assay.annotations.items import canonical, consensus
from assay.annotations.model import Annotation, AnnotatorKind, Criterion, Label
from assay.annotations.scale import BinaryScale, Scale, ScaleValue
from assay.annotations.store import get_criterion, list_annotations


class GroundTruthItem(BaseModel):
    """One labelled item (a unit, or a pair of units on a pairwise criterion): the consolidated label
    and who gave it.

    ``value`` is the label on the criterion's scale; ``label`` equals it on a binary criterion and is
    None on the others. A pairwise item is the pair ``(unit_id, second_unit_id)`` in sorted order.
    """

    model_config = ConfigDict(frozen=True)

    unit_id: str
    label: Label | None
    annotators: tuple[str, ...]
    annotator_kinds: tuple[AnnotatorKind, ...]
    value: ScaleValue | None = None
    second_unit_id: str | None = None

    @property
    def key(self) -> str:
        """The item's id: the unit id, or ``"A vs B"`` for a pair (what splits assign)."""
        return self.unit_id if self.second_unit_id is None else f"{self.unit_id} vs {self.second_unit_id}"

    @property
    def target(self) -> ScaleValue:
        """The label on the scale (``value``; ``label`` for items stored before values existed)."""
        value = self.value if self.value is not None else self.label
        assert value is not None
        return value


class GroundTruthDataset(BaseModel):
    """A ground-truth dataset version for one criterion.

    ``version`` is monotonic per store; ``content_hash`` (sha256 hex) identifies the
    content, so rebuilding from unchanged labels returns the same version.
    ``ties`` counts items left out because their annotators split evenly; ``stale``
    counts labels made under an older criterion version (left out). ``scale_kind`` is the
    criterion's scale (binary, ordinal, categorical, pairwise).
    """

    model_config = ConfigDict(frozen=True)

    version: int
    content_hash: str
    criterion: str
    criterion_version: int
    items: tuple[GroundTruthItem, ...]
    ties: int = 0
    stale: int = 0
    scale_kind: str = "binary"

    @property
    def balance(self) -> dict[str, int]:
        """Count of items per label (value on the scale, as text)."""
        return dict(Counter(str(i.target) for i in self.items))


def dataset_hash(criterion: str, version: int, items: list[GroundTruthItem], binary: bool = True) -> str:
    """The content hash of a dataset (SHA-256 hex of criterion name, criterion version and the items:
    unit id and label on a binary criterion, as before scales existed, so their versions stay; item key
    and value on the others): what identifies a version across stores."""
    pairs = [[i.unit_id, i.label] if binary else [i.key, i.target] for i in items]
    payload = json.dumps([criterion, version, pairs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def build_dataset(store: Store, criterion: str,
                  annotator_kinds: tuple[AnnotatorKind, ...] = ("human", "code")) -> GroundTruthDataset:
    """Build (or find) the ground-truth dataset of a criterion from its annotations.

    The latest label of each annotator counts (corrections are later records); labels
    made under an older criterion version are stale and left out; an item's label is the
    consensus of its annotators (:func:`~assay.annotations.items.consensus`: the majority, the
    median level on an ordinal scale), items whose annotators split evenly left out. Versions are
    a sequence in the store (the next is the largest so far plus one), never a time; content seen
    before (its hash) keeps its version, also one imported with
    :func:`assay.calibration.import_dataset_file`.

    Raises:
        NotFoundError: unknown criterion.
    """
    crit = get_criterion(store, criterion)
    items, ties, stale = consolidate(store, crit, annotator_kinds)
    digest = dataset_hash(crit.name, crit.version, items, crit.scale.kind == "binary")
    with store.session() as s:
        row = s.scalar(select(DatasetRow).where(DatasetRow.content_hash == digest))
        if row is None:
            version = int(s.scalar(select(func.max(DatasetRow.version))) or 0) + 1
            row = DatasetRow(version=version, content_hash=digest, criterion_id=crit.id,
                             items=[i.model_dump(mode="json") for i in items])
            s.add(row)
        version = row.version
    return GroundTruthDataset(version=version, content_hash=digest, criterion=crit.name,
                              criterion_version=crit.version, items=tuple(items), ties=ties, stale=stale,
                              scale_kind=crit.scale.kind)


def consolidate(store: Store, crit: Criterion, annotator_kinds: tuple[AnnotatorKind, ...] = ("human", "code")
                ) -> tuple[list[GroundTruthItem], int, int]:
    """The items a dataset of ``crit`` would hold now, without storing a version: ``(items, ties, stale)``
    (see :func:`build_dataset` for the rules; :func:`consolidate_annotations` on the store's labels)."""
    return consolidate_annotations(list_annotations(store, crit.name), crit.version, crit.scale, annotator_kinds)


def consolidate_annotations(annotations: Iterable[Annotation], criterion_version: int, scale: Scale | None = None,
                            annotator_kinds: tuple[AnnotatorKind, ...] = ("human", "code")
                            ) -> tuple[list[GroundTruthItem], int, int]:
    """The ground-truth items of one criterion's annotations (in the order they were made) on its
    ``scale`` (None: binary): ``(items sorted by item key, ties left out, stale labels left out)``; the
    rules of :func:`build_dataset`."""
    scale = scale or BinaryScale()
    latest: dict[tuple[str, str], Annotation] = {}
    stale = 0
    for a in annotations:
        if a.annotator_kind not in annotator_kinds:
            continue
        if a.criterion_version is not None and a.criterion_version != criterion_version:
            stale += 1
            continue
        a = canonical(a)
        latest[(a.item, a.annotator)] = a
    per_item: dict[str, list[Annotation]] = defaultdict(list)
    for (key, _annotator), a in latest.items():
        per_item[key].append(a)
    items: list[GroundTruthItem] = []
    ties = 0
    binary = scale.kind == "binary"
    for key in sorted(per_item):
        votes = per_item[key]
        value = consensus([a.value for a in votes if a.value is not None], scale)
        if value is None:
            ties += 1
            continue
        items.append(GroundTruthItem(
            unit_id=votes[0].unit_id, second_unit_id=votes[0].second_unit_id, value=value,
            label=value if binary else None,
            annotators=tuple(sorted(a.annotator for a in votes)),
            annotator_kinds=tuple(sorted({a.annotator_kind for a in votes})),
        ))
    return items, ties, stale


def export_dataset(dataset: GroundTruthDataset, path: Path | str) -> Path:
    """Write a dataset as JSONL (a header line, then one item per line) for review in git."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = {"dataset_version": dataset.version, "content_hash": dataset.content_hash,
              "criterion": dataset.criterion, "criterion_version": dataset.criterion_version}
    lines = [json.dumps(header)] + [json.dumps(i.model_dump(mode="json")) for i in dataset.items]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
