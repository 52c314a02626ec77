"""Calibration: run an evaluator on the ground-truth set and measure agreement with the labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay._store.scores import finish_run, new_run
from assay._store.tables import EvaluatorRow
from assay.calibration.ceiling import HumanCeiling, human_ceiling
from assay.calibration.dataset import GroundTruthDataset, build_dataset
from assay.calibration.metrics import Agreement, agreement
from assay.calibration.splits import (
    DEFAULT_FRACTIONS,
    CalibrationParams,
    DatasetSplit,
    count_test_uses,
    persist_split,
    split_dataset,
)
from assay.calibration.stats import MIN_PER_CLASS, N_BOOT, CalibrationMetrics, metrics_with_ci
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, evaluate_many
from assay.evaluators.lineage import judge_model_of, lineage_for, write_results
from assay.exceptions import UsageError
from assay.models import JudgeClient
from assay.settings import JudgeSettings
from assay.settings.run_kinds import RunKind


class CalibrationReport(BaseModel):
    """Agreement of one evaluator version with the ground truth of its criterion.

    Agreement is computed on the scored items only; unscored items (judge reply without a
    verdict) and errors are counted beside it, never counted as pass or fail.

    The decision is taken on the held-out *test* split of a stratified, seeded split of the
    dataset (``split``; persisted with the dataset version): ``meets_threshold`` is
    ``test.agreement >= threshold`` *and* test Cohen's kappa above ``min_kappa`` (default 0:
    better than chance). High accuracy on imbalanced labels with a kappa at chance level
    (e.g. a judge that always says "pass") is not agreement. ``agreement`` (no CIs) covers
    all scored labelled items, for reference. ``notes`` says in words why a threshold was
    not met; ``warnings`` flags small classes (fewer than ``min_per_class`` labels).

    Stored with the evaluator version it decided (``evaluators.calibration``, JSON) and read back
    with :func:`read_calibration`.
    """

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = Field(default=1, description="schema version of the stored report (reports stored "
                                                      "before it had one read as version 1)")
    evaluator: str
    evaluator_version: str
    judge_model: str | None
    dataset_version: int
    dataset_balance: dict[str, int]
    n_labelled: int
    n_unscored: int
    n_errors: int
    agreement: Agreement
    threshold: float
    min_kappa: float
    meets_threshold: bool
    notes: tuple[str, ...] = ()
    status: str
    run_id: str
    override_reason: str | None = None
    split_id: str | None = Field(default=None, description="the stored train/dev/test split the decision used")
    split_sizes: dict[str, int] = Field(default_factory=dict, description="labelled items per split")
    test: CalibrationMetrics | None = Field(default=None, description="test-split metrics with 95% CIs: the decision")
    overall: CalibrationMetrics | None = Field(default=None, description="all scored items, with 95% CIs")
    human_ceiling: HumanCeiling | None = Field(default=None,
                                               description="human-human agreement on the test items (>= 2 humans)")
    test_uses: int = Field(default=0, description="reports made on this test split so far, this one included")
    warnings: tuple[str, ...] = ()
    n_not_applicable: int = Field(default=0, description="units the judge found the criterion not to apply to")
    decided_on: str = Field(default="test", description="the split activation was decided on")


def calibrate(store: Store, defn: EvaluatorDef, judge: JudgeClient | None, judge_settings: JudgeSettings,
              progress: Callable[[int], None] | None = None, dataset: GroundTruthDataset | None = None,
              force_reason: str | None = None, min_kappa: float = 0.0,
              fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0, n_boot: int = N_BOOT,
              min_per_class: int = MIN_PER_CLASS) -> CalibrationReport:
    """Calibrate an evaluator against the human labels of its criterion and set its status.

    The dataset is split (stratified by label, seeded: ``fractions`` = train/dev/test
    shares, ``seed``) and the split stored. Every labelled unit is scored; the evaluator
    becomes ``active`` when its *test-split* agreement meets its threshold (and kappa is
    above ``min_kappa``), else it stays ``draft`` — unless ``force_reason`` is given, which
    activates it and records the reason. The run records that it looked at the test split.
    Small sets still report: below ``min_per_class`` labels of a class a warning says so.
    Intervals are percentile bootstraps with ``n_boot`` resamples (Efron 1979).

    Raises:
        UsageError: the criterion has no labelled units.
        NotFoundError: unknown criterion.
    """
    ds = dataset or build_dataset(store, defn.criterion.name)
    if not ds.items:
        raise UsageError(f"criterion {defn.criterion.name!r} has no labelled units to calibrate on; "
                         "import labels first (assay labels import)")
    version = content_version(defn)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    run_id = new_run(store, RunKind.CALIBRATION, CalibrationParams(
        evaluator=defn.name, evaluator_version=version, dataset_version=ds.version, dataset_hash=ds.content_hash,
        split_id=split.split_id,
        test_touched=True))
    labels = {i.unit_id: i.label for i in ds.items}
    results = list(evaluate_many(defn, store.units(list(labels)), judge, judge_settings, progress=progress))
    write_results(store, lineage_for(defn, run_id, RunKind.CALIBRATION, ds.version, judge_model_of(results), judge,
                                     judge_settings), results)
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    agree = agreement([labels[r.unit_id] for r in scored], [r.verdict for r in scored])
    test, overall = _split_metrics(scored, labels, split, n_boot, seed, min_per_class)
    notes = _shortfalls(test, defn.threshold, min_kappa)
    meets = not notes
    ceiling = human_ceiling(store, defn.criterion.name, split.units("test"), seed)
    uses = count_test_uses(store, split.split_id)
    warnings = [f"test split: {w}" for w in test.warnings]
    if uses > 1:
        warnings.append(f"this test split has now been reported on {uses} times: choices made between those "
                        "reports were made on the test data; re-split or label fresh items for an unbiased result")
    test_units = set(split.units("test"))
    forceable = any(r.unit_id in test_units for r in scored)
    if force_reason and not meets and not forceable:
        # An override accepts a measured shortfall; it cannot stand in for no measurement at all.
        notes.append("not activated despite --force: it scored no labelled unit of the test split "
                     "(fix the errors above first)")
        force_reason = None
    status = "active" if meets or force_reason else "draft"
    failures = [r for r in results if not isinstance(r, EvaluationResult)]
    report = CalibrationReport(
        evaluator=defn.name, evaluator_version=version, judge_model=judge.model_name if judge else None,
        dataset_version=ds.version, dataset_balance=ds.balance, n_labelled=len(labels),
        n_unscored=sum(f.status == "unscored" for f in failures), n_errors=sum(f.status == "error" for f in failures),
        agreement=agree, threshold=defn.threshold, min_kappa=min_kappa, meets_threshold=meets, notes=tuple(notes),
        status=status, run_id=run_id, override_reason=None if meets else force_reason, split_id=split.split_id,
        split_sizes=split.sizes(), test=test, overall=overall, human_ceiling=ceiling, test_uses=uses,
        warnings=tuple(warnings), n_not_applicable=sum(f.status == "not_applicable" for f in failures))
    save_evaluator_record(store, defn, status, report, override_reason=None if meets else force_reason)
    finish_run(store, run_id, report.model_dump(mode="json"))
    return report


class EvaluatorRecord(BaseModel):
    """What the store keeps of one evaluator version: its status, the calibration report that decided
    it (None when it was never calibrated) and the reason of an override (``--force``)."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    evaluator_version: str
    status: str = Field(description="draft, active, ...")
    calibration: CalibrationReport | None
    override_reason: str | None = None

    @property
    def dataset_version(self) -> int | None:
        """The ground-truth dataset version it was calibrated on (None: never calibrated)."""
        return self.calibration.dataset_version if self.calibration is not None else None


def read_calibration(stored: Mapping[str, Any] | None) -> CalibrationReport | None:
    """A stored calibration report (``evaluators.calibration``): the one reader of that JSON.

    Returns:
        the report (one stored before reports had a ``version`` reads as version 1), or None when
        none is stored (``{}``).

    Raises:
        pydantic.ValidationError: the stored JSON is not a calibration report.
    """
    return CalibrationReport.model_validate(stored) if stored else None


def _record(row: EvaluatorRow) -> EvaluatorRecord:
    return EvaluatorRecord(evaluator=row.name, evaluator_version=row.version, status=row.status,
                           calibration=read_calibration(row.calibration), override_reason=row.override_reason)


def evaluator_record(store: Store, defn: EvaluatorDef) -> EvaluatorRecord | None:
    """The stored record (status, calibration) of this exact evaluator version, if any."""
    with store.session() as s:
        row = s.get(EvaluatorRow, (defn.name, content_version(defn)))
        return _record(row) if row is not None else None


def save_evaluator_record(store: Store, defn: EvaluatorDef, status: str, calibration: CalibrationReport | None,
                          override_reason: str | None = None) -> None:
    """Create or update the record of this evaluator version: its status, the report that decided it
    (None: activated or left without calibration) and an override reason."""
    version = content_version(defn)
    with store.session() as s:
        row = s.get(EvaluatorRow, (defn.name, version))
        if row is None:
            row = EvaluatorRow(name=defn.name, version=version, kind=defn.kind, definition=defn.model_dump(mode="json"))
            s.add(row)
        row.status, row.override_reason = status, override_reason
        row.calibration = calibration.model_dump(mode="json") if calibration is not None else {}


def _split_metrics(scored: list[EvaluationResult], labels: Mapping[str, str], split: DatasetSplit, n_boot: int,
                   seed: int, min_per_class: int) -> tuple[CalibrationMetrics, CalibrationMetrics]:
    """(test-split metrics, all-items metrics) of the scored results, with CIs."""
    test_ids = set(split.units("test"))
    on_test = [r for r in scored if r.unit_id in test_ids]
    test = metrics_with_ci([labels[r.unit_id] for r in on_test], [r.verdict for r in on_test], n_boot, seed,
                           min_per_class)
    overall = metrics_with_ci([labels[r.unit_id] for r in scored], [r.verdict for r in scored], n_boot, seed,
                              min_per_class)
    return test, overall


def _shortfalls(m: CalibrationMetrics, threshold: float, min_kappa: float) -> list[str]:
    notes = []
    acc, kappa = m.agreement.value, m.kappa.value
    if acc is None:
        notes.append("no labelled unit of the test split could be scored")
        return notes
    if acc < threshold:
        notes.append(f"test agreement {acc:.3f} is below the threshold {threshold:.2f}")
    if kappa is None:
        notes.append("Cohen's kappa is undefined (one class only): agreement cannot be told from chance")
    elif kappa <= min_kappa:
        notes.append(f"Cohen's kappa {kappa:.3f} is at or below {min_kappa:.2f}: no better than chance")
    return notes
