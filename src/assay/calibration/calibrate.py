"""Calibration: run an evaluator on the ground-truth set and measure agreement with the labels."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from assay._store import Store
from assay.calibration.dataset import GroundTruthDataset, build_dataset
from assay.calibration.metrics import Agreement, agreement
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version
from assay.exceptions import UsageError
from assay.models import JudgeClient
from assay.settings import JudgeSettings


class CalibrationReport(BaseModel):
    """Agreement of one evaluator version with the ground truth of its criterion.

    ``agreement`` is computed on the scored items only; unscored items (judge reply
    without a verdict) and errors are counted beside it, never counted as pass or fail.
    ``meets_threshold`` is ``agreement.accuracy >= threshold`` *and* Cohen's kappa above
    ``min_kappa`` (default 0: better than chance). High accuracy on imbalanced labels with
    a kappa at chance level (e.g. a judge that always says "pass") is not agreement.
    ``notes`` says in words why a threshold was not met.
    """

    model_config = ConfigDict(frozen=True)

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


def calibrate(store: Store, defn: EvaluatorDef, judge: JudgeClient | None, judge_settings: JudgeSettings,
              progress: Callable[[int], None] | None = None, dataset: GroundTruthDataset | None = None,
              force_reason: str | None = None, min_kappa: float = 0.0) -> CalibrationReport:
    """Calibrate an evaluator against the human labels of its criterion and set its status.

    The evaluator becomes ``active`` when its accuracy on the ground truth meets its
    threshold, else it stays ``draft`` — unless ``force_reason`` is given, which activates
    it and records the reason.

    Raises:
        UsageError: the criterion has no labelled units.
        NotFoundError: unknown criterion.
    """
    from assay.suite.runs import finish_run, new_run, record_scores, save_evaluator_record, score_units

    ds = dataset or build_dataset(store, defn.criterion.name)
    if not ds.items:
        raise UsageError(f"criterion {defn.criterion.name!r} has no labelled units to calibrate on; "
                         "import labels first (assay labels import)")
    version = content_version(defn)
    run_id = new_run(store, "calibration", {"evaluator": defn.name, "evaluator_version": version,
                                             "dataset_version": ds.version})
    labels = {i.unit_id: i.label for i in ds.items}
    results = score_units(store, defn, list(labels), judge, judge_settings, progress)
    record_scores(store, run_id, results, ds.version)
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    agree = agreement([labels[r.unit_id] for r in scored], [r.verdict for r in scored])
    notes = _shortfalls(agree, defn.threshold, min_kappa)
    meets = not notes
    status = "active" if meets or force_reason else "draft"
    failures = [r for r in results if not isinstance(r, EvaluationResult)]
    report = CalibrationReport(
        evaluator=defn.name, evaluator_version=version, judge_model=judge.model_name if judge else None,
        dataset_version=ds.version, dataset_balance=ds.balance, n_labelled=len(labels),
        n_unscored=sum(f.status == "unscored" for f in failures), n_errors=sum(f.status == "error" for f in failures),
        agreement=agree, threshold=defn.threshold, min_kappa=min_kappa, meets_threshold=meets, notes=tuple(notes),
        status=status, run_id=run_id, override_reason=None if meets else force_reason)
    save_evaluator_record(store, defn, status, report.model_dump(mode="json"),
                          override_reason=None if meets else force_reason)
    finish_run(store, run_id, report.model_dump(mode="json"))
    return report


def _shortfalls(agree: Agreement, threshold: float, min_kappa: float) -> list[str]:
    notes = []
    if agree.accuracy is None:
        notes.append("no labelled unit could be scored")
        return notes
    if agree.accuracy < threshold:
        notes.append(f"agreement {agree.accuracy:.3f} is below the threshold {threshold:.2f}")
    if agree.kappa is None:
        notes.append("Cohen's kappa is undefined (one class only): agreement cannot be told from chance")
    elif agree.kappa <= min_kappa:
        notes.append(f"Cohen's kappa {agree.kappa:.3f} is at or below {min_kappa:.2f}: no better than chance")
    return notes
