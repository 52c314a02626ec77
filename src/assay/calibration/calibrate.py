"""Calibration: run an evaluator on the ground-truth set and measure agreement with the labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay._store.scores import finish_run, new_run
from assay._store.tables import EvaluatorRow
from assay.calibration.ceiling import HumanCeiling, human_ceiling
from assay.calibration.certify import CalibrationPlan, Certification, binary_rates, certify_binary, plan_rates
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
from assay.evaluators.lineage import effective_judge, judge_model_of, lineage_for, write_results
from assay.evaluators.runner import judge_settings_for
from assay.exceptions import UsageError
from assay.models import JudgeClient, JudgeIdentity, judge_identity
from assay.settings import CalibrationSettings, JudgeSettings


class CalibrationReport(BaseModel):
    """Agreement of one evaluator version with the ground truth of its criterion.

    Agreement is computed on the scored items only; unscored items (judge reply without a
    verdict) and errors are counted beside it, never counted as pass or fail.

    The decision is taken on the held-out *test* split of a stratified, seeded split of the
    dataset (``split``; persisted with the dataset version): ``certification`` holds it
    (:mod:`assay.calibration.certify`). Under the default policy ``lower_bound``, ``meets_threshold``
    is True when the lower 95% bound of each required rate (TPR and TNR) reaches ``threshold``;
    under ``point`` (the older, weaker rule) when test agreement reaches it and Cohen's kappa is
    above ``min_kappa``. ``agreement`` (no CIs) covers all scored labelled items, for reference.
    ``notes`` says in words why a threshold was not met; ``warnings`` flags small classes (fewer
    than ``min_per_class`` labels); ``plan`` says how many more labels of each class the bounds
    need (None when certified).

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
    certification: Certification | None = Field(
        default=None, description="the decision: policy, each required rate's bound (None: stored before bounds)")
    plan: CalibrationPlan | None = Field(default=None, description="more labels per class for the bounds to clear "
                                                                   "(None when certified)")
    split_fractions: tuple[float, float, float] | None = Field(default=None, description="train, dev, test shares")
    judge: JudgeIdentity | None = Field(default=None, description="the judge the certificate covers: provider, "
                                        "model, base URL, sampling parameters (None: no judge, or stored before)")


def calibrate(store: Store, defn: EvaluatorDef, judge: JudgeClient | None, judge_settings: JudgeSettings,
              progress: Callable[[int], None] | None = None, dataset: GroundTruthDataset | None = None,
              force_reason: str | None = None, min_kappa: float = 0.0,
              fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0, n_boot: int = N_BOOT,
              min_per_class: int = MIN_PER_CLASS,
              certification: CalibrationSettings | None = None) -> CalibrationReport:
    """Calibrate an evaluator against the human labels of its criterion and set its status.

    The dataset is split (stratified by label, seeded: ``fractions`` = train/dev/test
    shares, ``seed``) and the split stored. Every labelled unit is scored; the evaluator
    becomes ``active`` when it is certified on the *test split* (``certification``: by default the
    lower 95% Wilson bounds of TPR and TNR reach its threshold; see :mod:`assay.calibration.certify`),
    else it stays ``draft`` — unless ``force_reason`` is given, which activates it and records the
    reason. The run records that it looked at the test split. Small sets still report: below
    ``min_per_class`` labels of a class a warning says so. Intervals of the reported metrics are
    percentile bootstraps with ``n_boot`` resamples (Efron 1979).

    Raises:
        UsageError: the criterion has no labelled units.
        NotFoundError: unknown criterion.
    """
    ds = dataset or build_dataset(store, defn.criterion.name)
    if not ds.items:
        raise UsageError(f"criterion {defn.criterion.name!r} has no labelled units to calibrate on; "
                         "import labels first (assay labels import)")
    cs = certification or CalibrationSettings()
    version = content_version(defn)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    run_id = new_run(store, "calibration", CalibrationParams(
        evaluator=defn.name, evaluator_version=version, dataset_version=ds.version, split_id=split.split_id,
        test_touched=True))
    labels = {i.unit_id: i.label for i in ds.items}
    judge = effective_judge(defn, judge, judge_settings)
    identity = None if judge is None else judge_identity(judge, judge_settings_for(defn, judge_settings))
    results = list(evaluate_many(defn, store.units(list(labels)), judge, judge_settings, progress=progress,
                                 store=store))
    write_results(store, lineage_for(defn, run_id, "calibration", ds.version, judge_model_of(results), judge,
                                     judge_settings), results)
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    test, overall = _split_metrics(scored, labels, split, n_boot, seed, min_per_class)
    decision = certify_binary(test.confusion, defn.threshold, cs, min_kappa)
    notes, meets = list(decision.notes), decision.certified
    uses = count_test_uses(store, split.split_id)
    test_units = set(split.units("test"))
    if force_reason and not meets and not any(r.unit_id in test_units for r in scored):
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
        agreement=agreement([labels[r.unit_id] for r in scored], [r.verdict for r in scored]),
        threshold=defn.threshold, min_kappa=min_kappa, meets_threshold=meets, notes=tuple(notes),
        status=status, run_id=run_id, override_reason=None if meets else force_reason, split_id=split.split_id,
        split_sizes=split.sizes(), test=test, overall=overall,
        human_ceiling=human_ceiling(store, defn.criterion.name, split.units("test"), seed), test_uses=uses,
        warnings=_warnings(test, uses), n_not_applicable=sum(f.status == "not_applicable" for f in failures),
        certification=decision, split_fractions=fractions, judge=identity,
        plan=None if meets else plan_rates(binary_rates(test.confusion), binary_rates(overall.confusion),
                                           ds.balance, defn.threshold, cs, fractions))
    save_evaluator_record(store, defn, status, report, override_reason=None if meets else force_reason)
    finish_run(store, run_id, report.model_dump(mode="json"))
    return report


def _warnings(test: CalibrationMetrics, uses: int) -> tuple[str, ...]:
    warnings = [f"test split: {w}" for w in test.warnings]
    if uses > 1:
        warnings.append(f"this test split has now been reported on {uses} times: choices made between those "
                        "reports were made on the test data; re-split or label fresh items for an unbiased result")
    return tuple(warnings)


def report_plan(report: CalibrationReport, settings: CalibrationSettings,
                labelled: Mapping[str, int] | None = None) -> CalibrationPlan:
    """The plan of a stored calibration (``assay calibrate NAME --plan``): more labels per class for every bound
    to clear at the rates it measured, counting ``labelled`` (labels per class now; default: the report's
    dataset) as already there. No judge is asked and the test split is not looked at again.

    Raises:
        UsageError: the report was stored before calibrations kept test-split metrics.
    """
    if report.test is None or report.overall is None:
        raise UsageError(f"the stored calibration of {report.evaluator} has no test-split metrics; calibrate again")
    return plan_rates(binary_rates(report.test.confusion), binary_rates(report.overall.confusion),
                      dict(labelled if labelled is not None else report.dataset_balance), report.threshold, settings,
                      report.split_fractions or DEFAULT_FRACTIONS)


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
