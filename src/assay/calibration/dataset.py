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
from assay.annotations.model import Annotation, AnnotatorKind, Label
from assay.annotations.store import get_criterion, list_annotations


class GroundTruthItem(BaseModel):
    """One labelled unit: the consolidated label and who gave it."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    label: Label
    annotators: tuple[str, ...]
    annotator_kinds: tuple[AnnotatorKind, ...]


class GroundTruthDataset(BaseModel):
    """A ground-truth dataset version for one criterion.

    ``version`` is monotonic per store; ``content_hash`` (sha256 hex) identifies the
    content, so rebuilding from unchanged labels returns the same version.
    ``ties`` counts units left out because their annotators split evenly; ``stale``
    counts labels made under an older criterion version (left out).
    """

    model_config = ConfigDict(frozen=True)

    version: int
    content_hash: str
    criterion: str
    criterion_version: int
    items: tuple[GroundTruthItem, ...]
    ties: int = 0
    stale: int = 0

    @property
    def balance(self) -> dict[str, int]:
        """Count of items per label."""
        return dict(Counter(i.label for i in self.items))


def dataset_hash(criterion: str, version: int, items: list[GroundTruthItem]) -> str:
    """The content hash of a dataset (SHA-256 hex of criterion name, criterion version and the items'
    unit ids and labels): what identifies a version across stores."""
    payload = json.dumps([criterion, version, [[i.unit_id, i.label] for i in items]], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def build_dataset(store: Store, criterion: str,
                  annotator_kinds: tuple[AnnotatorKind, ...] = ("human", "code")) -> GroundTruthDataset:
    """Build (or find) the ground-truth dataset of a criterion from its annotations.

    The latest label of each annotator counts (corrections are later records); labels
    made under an older criterion version are stale and left out; a unit's label is
    the majority of its annotators, ties left out. Versions are a sequence in the store
    (the next is the largest so far plus one), never a time; content seen before (its
    hash) keeps its version, also one imported with :func:`assay.calibration.import_dataset_file`.

    Raises:
        NotFoundError: unknown criterion.
    """
    crit = get_criterion(store, criterion)
    items, ties, stale = consolidate(list_annotations(store, crit.name), crit.version, annotator_kinds)
    digest = dataset_hash(crit.name, crit.version, items)
    with store.session() as s:
        row = s.scalar(select(DatasetRow).where(DatasetRow.content_hash == digest))
        if row is None:
            version = int(s.scalar(select(func.max(DatasetRow.version))) or 0) + 1
            row = DatasetRow(version=version, content_hash=digest, criterion_id=crit.id,
                             items=[i.model_dump(mode="json") for i in items])
            s.add(row)
        version = row.version
    return GroundTruthDataset(version=version, content_hash=digest, criterion=crit.name,
                              criterion_version=crit.version, items=tuple(items), ties=ties, stale=stale)


def consolidate(annotations: Iterable[Annotation], criterion_version: int,
                annotator_kinds: tuple[AnnotatorKind, ...] = ("human", "code")
                ) -> tuple[list[GroundTruthItem], int, int]:
    """The ground-truth items of one criterion's annotations (in the order they were made):
    ``(items sorted by unit id, ties left out, stale labels left out)``; the rules of :func:`build_dataset`."""
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    stale = 0
    for a in annotations:
        if a.annotator_kind not in annotator_kinds:
            continue
        if a.criterion_version is not None and a.criterion_version != criterion_version:
            stale += 1
            continue
        latest[(a.unit_id, a.annotator)] = (a.label, a.annotator_kind)
    per_unit: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for (unit, annotator), (label, kind) in latest.items():
        per_unit[unit].append((annotator, label, kind))
    items: list[GroundTruthItem] = []
    ties = 0
    for unit in sorted(per_unit):
        votes = Counter(label for _, label, _ in per_unit[unit])
        if votes["pass"] == votes["fail"]:
            ties += 1
            continue
        items.append(GroundTruthItem(
            unit_id=unit, label="pass" if votes["pass"] > votes["fail"] else "fail",
            annotators=tuple(sorted(a for a, _, _ in per_unit[unit])),
            annotator_kinds=tuple(sorted({k for _, _, k in per_unit[unit]})),
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
