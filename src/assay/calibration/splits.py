"""Stratified, seeded train / dev / test splits of a ground-truth dataset, persisted with its version.

Few-shot examples come from *train*, prompt and example choices are compared on *dev*, and
an evaluator is activated on *test*. Every reported test result is recorded (one calibration
run per look), so how often a test split has been looked at is always known.

A split is stored as a run record of kind ``split`` whose id is derived from the dataset
version, the item ids, the seed and the fractions: the same inputs give the same split,
and the store keeps which unit went where.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from assay._store import Store
from assay._store.scores import RunParams, read_params
from assay._store.tables import RunRow
from assay.calibration.dataset import GroundTruthDataset
from assay.settings.run_kinds import RunKind

SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.5, 0.2, 0.3)
"""train / dev / test shares; 100 labelled units give a test split of about 30."""


class DatasetSplit(BaseModel):
    """Which split each item of one dataset version belongs to.

    Attributes:
        split_id: ``split-v<dataset version>-<12 hex>``; a stable function of the inputs.
        dataset_version: the ground-truth dataset version split.
        seed: seed of the shuffle within each label.
        fractions: (train, dev, test) shares, summing to 1.
        assignment: unit id -> split name.
    """

    model_config = ConfigDict(frozen=True)

    split_id: str
    dataset_version: int
    seed: int
    fractions: tuple[float, float, float]
    assignment: dict[str, SplitName]

    def units(self, name: SplitName) -> list[str]:
        """Item keys in one split (unit ids; ``"A vs B"`` for pairs), sorted."""
        return sorted(u for u, s in self.assignment.items() if s == name)

    def sizes(self) -> dict[str, int]:
        """Items per split."""
        counts = Counter(self.assignment.values())
        return {s: counts[s] for s in SPLITS}


class SplitParams(RunParams):
    """The parameters of a stored split (a run of kind ``split``; the assignment is its summary)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dataset_version: int
    seed: int
    fractions: tuple[float, float, float] = Field(description="train, dev, test shares")


class CalibrationParams(RunParams):
    """What a calibration run (kind ``calibration``) records: the evaluator version, the dataset version and
    split it was measured on, and whether the decision looked at the split's test items."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    evaluator: str
    evaluator_version: str
    dataset_version: int
    dataset_hash: str | None = Field(default=None, description="the dataset version's content hash: the same "
                                     "version number means the same items in every store it was imported into")
    split_id: str | None = None
    test_touched: bool = Field(default=False, description="the run reported a result on the test items")


class SplitFractions(BaseModel):
    """Validated (train, dev, test) shares: each in [0, 1], test > 0, sum 1."""

    train: float = Field(ge=0, le=1)
    dev: float = Field(ge=0, le=1)
    test: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + dev + test must be 1, got {total:g}")
        return self


def allocate(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Items of one class per split: rounded shares, test first to get at least one item."""
    n_test = round(n * fractions[2])
    if n >= 1 and n_test == 0:
        n_test = 1
    n_dev = min(round(n * fractions[1]), n - n_test)
    return n - n_test - n_dev, n_dev, n_test


def split_dataset(dataset: GroundTruthDataset, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> DatasetSplit:
    """Split a dataset into train / dev / test, stratified by label, reproducibly.

    Within each label (value on the criterion's scale) the item keys (unit ids; ``"A vs B"`` for a
    pair) are sorted, shuffled with ``random.Random(seed)`` and cut by the fractions (rounded; each
    class with at least one item puts at least one in test). Nothing is stored (see :func:`persist_split`).

    Raises:
        pydantic.ValidationError: fractions outside [0, 1], test 0, or a sum other than 1.
    """
    SplitFractions(train=fractions[0], dev=fractions[1], test=fractions[2])
    assignment: dict[str, SplitName] = {}
    for label in sorted({str(i.target) for i in dataset.items}):
        ids = sorted(i.key for i in dataset.items if str(i.target) == label)
        random.Random(f"{seed}:{label}").shuffle(ids)
        n_train, n_dev, _ = allocate(len(ids), fractions)
        for k, unit in enumerate(ids):
            assignment[unit] = "train" if k < n_train else "dev" if k < n_train + n_dev else "test"
    payload = json.dumps([dataset.content_hash, sorted(assignment), seed, list(fractions)])
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return DatasetSplit(split_id=f"split-v{dataset.version}-{digest}", dataset_version=dataset.version, seed=seed,
                        fractions=fractions, assignment=dict(sorted(assignment.items())))


def persist_split(store: Store, split: DatasetSplit) -> DatasetSplit:
    """Store a split with its dataset version (once; an identical split is already there)."""
    with store.session() as s:
        if s.get(RunRow, split.split_id) is None:
            params = SplitParams(dataset_version=split.dataset_version, seed=split.seed, fractions=split.fractions)
            s.add(RunRow(run_id=split.split_id, kind=RunKind.SPLIT.value, params=params.model_dump(mode="json"),
                         summary={"assignment": split.assignment, "sizes": split.sizes()}))
    return split


def load_split(store: Store, split_id: str) -> DatasetSplit | None:
    """A stored split, or None."""
    with store.session() as s:
        row = s.get(RunRow, split_id)
    if row is None or row.kind != RunKind.SPLIT:
        return None
    params = read_params(row, SplitParams)
    return DatasetSplit(split_id=row.run_id, dataset_version=params.dataset_version, seed=params.seed,
                        fractions=params.fractions, assignment=row.summary["assignment"])


def count_test_uses(store: Store, split_id: str) -> int:
    """How many calibration runs have reported a result on this split's test items."""
    with store.session() as s:
        rows = s.scalars(select(RunRow).where(RunRow.kind == RunKind.CALIBRATION.value))
        runs = [read_params(r, CalibrationParams) for r in rows]
    return sum(1 for p in runs if p.split_id == split_id and p.test_touched)

