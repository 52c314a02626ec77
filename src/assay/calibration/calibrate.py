"""Calibration: run an evaluator on the ground-truth set and measure agreement with the labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field

from assay._store import Store
from assay._store.scores import finish_run, new_run
from assay._store.tables import EvaluatorRow, RunRow
from assay.annotations.model import Criterion
from assay.annotations.scale import ScaleValue
from assay.annotations.store import get_criterion
from assay.calibration.ceiling import HumanCeiling, human_ceiling, human_labels
from assay.calibration.certify import CalibrationPlan, Certification, binary_rates, certify_binary, plan_rates
from assay.calibration.dataset import GroundTruthDataset, GroundTruthItem, build_dataset
from assay.calibration.metrics import Agreement, agreement
from assay.calibration.scales import ScaleMetrics, ScaleReport, position_bias, scale_ceiling, scale_metrics
from assay.calibration.splits import (
    DEFAULT_FRACTIONS,
    CalibrationParams,
    DatasetSplit,
    count_test_uses,
    persist_split,
    split_dataset,
)
from assay.calibration.stats import MIN_PER_CLASS, N_BOOT, CalibrationMetrics, metrics_with_ci
from assay.calibration.threshold import ThresholdChoice, choose_threshold
from assay.evaluators import (
    Evaluation,
    EvaluationResult,
    EvaluatorDef,
    content_version,
    evaluate_many,
    evaluate_pairs,
)
from assay.evaluators.lineage import effective_judge, judge_model_of, lineage_for, write_results
from assay.evaluators.runner import judge_settings_for
from assay.exceptions import RuntimeFailure, UsageError
from assay.models import JudgeClient, JudgeIdentity, judge_identity
from assay.settings import CalibrationSettings, JudgeSettings
from assay.settings.run_kinds import RunKind


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

    On a non-binary scale the pass/fail numbers above, and so the certification's bounds, compare
    verdicts at the evaluator's ``pass_score`` (a human value passes when its score on the scale reaches
    it; see :mod:`assay.calibration.certify`), and
    ``scale_metrics`` reports agreement on the scale itself (:mod:`assay.calibration.scales`): items
    are units, or pairs of units on a pairwise scale, where the judge is also asked with the two
    outputs swapped. A numeric score against binary labels gets ``threshold_choice``
    (:mod:`assay.calibration.threshold`).

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
    scale: str = Field(default="binary", description="the criterion's scale: binary, ordinal, categorical, pairwise")
    scale_metrics: ScaleReport | None = Field(
        default=None, description="non-binary scales: agreement on the scale (test, all items, human ceiling) and, "
                                  "for pairwise, the position-bias check")
    threshold_choice: ThresholdChoice | None = Field(
        default=None, description="numeric scores against binary labels: the pass_score chosen on train + dev "
                                  "and its test metrics")


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
    reason. The run records that it looked at the test split once the evaluator scored an item. Small sets
    still report: below ``min_per_class`` labels of a class a warning says so. Intervals of the reported
    metrics are percentile bootstraps with ``n_boot`` resamples (Efron 1979).

    An evaluator file written against an older version of its criterion (or other text) is calibrated
    with a warning; one naming a version the criterion never had is refused.

    Raises:
        UsageError: the criterion has no labelled units; the evaluator names a criterion version above the
            store's.
        NotFoundError: unknown criterion.
        RuntimeFailure: the evaluator scored no labelled item (each an error, unscored or not applicable):
            nothing was measured, so the status stays and the test split is not counted as used.
        JudgeUnreachable: the judge cannot be reached, or answers HTTP 404 (``JudgeNotFound``).
    """
    ds = dataset or build_dataset(store, defn.criterion.name)
    crit = _check_criterion_version(store, defn)
    if not ds.items:
        raise UsageError(f"criterion {defn.criterion.name!r} has no labelled units to calibrate on; "
                         "import labels first (assay labels import)")
    cs = certification or CalibrationSettings()
    if ds.scale_kind != defn.scale.kind:
        raise UsageError(f"{defn.name} is written for a {defn.scale.kind} criterion, but {ds.criterion!r} is "
                         f"{ds.scale_kind}: set criterion.scale in the evaluator file to the criterion's scale")
    version = content_version(defn)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    run_id = new_run(store, RunKind.CALIBRATION, CalibrationParams(
        evaluator=defn.name, evaluator_version=version, dataset_version=ds.version, dataset_hash=ds.content_hash,
        split_id=split.split_id))
    labels = {i.key: _pass_fail(defn, i.target) for i in ds.items}
    judge = effective_judge(defn, judge, judge_settings)
    identity = None if judge is None else judge_identity(judge, judge_settings_for(defn, judge_settings))
    results, swapped = _evaluate_items(store, defn, ds.items, judge, judge_settings, progress)
    write_results(store, lineage_for(defn, run_id, RunKind.CALIBRATION, ds.version, judge_model_of(results), judge,
                                     judge_settings), results)
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    if not scored:
        _nothing_scored(store, defn, run_id, results)
    _touch_test(store, run_id)
    test, overall = _split_metrics(scored, labels, split, n_boot, seed, min_per_class)
    decision = certify_binary(test.confusion, defn.threshold, cs, min_kappa)
    notes, meets = list(decision.notes), decision.certified
    ceiling = human_ceiling(store, defn.criterion.name, split.units("test"), seed,
                            project=lambda v: _pass_fail(defn, defn.scale.parse(v)))
    uses = count_test_uses(store, split.split_id)
    test_units = set(split.units("test"))
    if force_reason and not meets and not any(item_key(r) in test_units for r in scored):
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
        agreement=agreement([labels[item_key(r)] for r in scored], [r.verdict for r in scored]),
        threshold=defn.threshold, min_kappa=min_kappa, meets_threshold=meets, notes=tuple(notes),
        status=status, run_id=run_id, override_reason=None if meets else force_reason, split_id=split.split_id,
        split_sizes=split.sizes(), test=test, overall=overall, human_ceiling=ceiling, test_uses=uses,
        warnings=_warnings(test, uses, results) + _criterion_drift(crit, defn),
        n_not_applicable=sum(f.status == "not_applicable" for f in failures),
        certification=decision, split_fractions=fractions, judge=identity, scale=defn.scale.kind,
        plan=None if meets else plan_rates(binary_rates(test.confusion), binary_rates(overall.confusion),
                                           pass_fail_balance(defn, ds), defn.threshold, cs, fractions),
        scale_metrics=_scale_report(store, defn, ds.items, scored, swapped, split, n_boot, seed),
        threshold_choice=_threshold(defn, scored, labels, split, n_boot, seed, min_per_class))
    save_evaluator_record(store, defn, status, report, override_reason=None if meets else force_reason)
    finish_run(store, run_id, report.model_dump(mode="json"))
    return report


def _nothing_scored(store: Store, defn: EvaluatorDef, run_id: str, results: Sequence[Evaluation]) -> NoReturn:
    """End a calibration whose evaluator scored no labelled item: the run keeps its error scores and says why;
    the test split counts as unseen and the evaluator's status stays.

    Raises:
        RuntimeFailure: always, naming the counts and the first errors (CLI exit 3).
    """
    failures = [r for r in results if not isinstance(r, EvaluationResult)]
    counts = Counter(f.status for f in failures)
    first = "; ".join(dict.fromkeys(f"{f.unit_id}: {f.error}" for f in failures[:3]))
    message = (f"{defn.name} scored none of the {len(results)} labelled items ("
               + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.most_common())
               + f"), so nothing was measured: its status is unchanged and the test split was not used. "
               f"First: {first}")
    finish_run(store, run_id, {"error": message, "n_items": len(results), **{f"n_{k}": n for k, n in counts.items()}})
    raise RuntimeFailure(message)


def _touch_test(store: Store, run_id: str) -> None:
    """Record that the calibration run reports a result on its split's test items (:func:`count_test_uses`)."""
    with store.session() as s:
        row = s.get(RunRow, run_id)
        if row is not None:
            row.params = {**(row.params or {}), "test_touched": True}


def _warnings(test: CalibrationMetrics, uses: int, results: Sequence[Evaluation]) -> tuple[str, ...]:
    warnings = [f"test split: {w}" for w in test.warnings]
    shared = sum(n - 1 for n in Counter(r.unit_id for r in results).values() if n > 1)
    if shared:
        warnings.append(f"{shared} pair result(s) are not stored as scores: their first unit is the first unit of "
                        "another pair too (scores are keyed by unit); the report counts them all")
    if uses > 1:
        warnings.append(f"this test split has now been reported on {uses} times: choices made between those "
                        "reports were made on the test data; re-split or label fresh items for an unbiased result")
    return tuple(warnings)


def _check_criterion_version(store: Store, defn: EvaluatorDef) -> Criterion:
    """Refuse an evaluator file that names a version of its criterion the store has never had."""
    crit = get_criterion(store, defn.criterion.name)
    if defn.criterion.version > crit.version:
        raise UsageError(f"{defn.name} names criterion {crit.name!r} version {defn.criterion.version}, but the store's "
                         f"criterion is at version {crit.version}: fix criterion.version in the evaluator file (a "
                         "criterion gets a new version when its text or scale is edited: assay criteria edit)")
    return crit


def _criterion_drift(crit: Criterion, defn: EvaluatorDef) -> tuple[str, ...]:
    """A warning when the evaluator file was written against another version (or text) of its criterion
    than the store holds: it is then calibrated on labels made under the store's version."""
    if defn.criterion.version != crit.version:
        return (f"{defn.name} is written against criterion {crit.name!r} version {defn.criterion.version}, but the "
                f"store's criterion is version {crit.version}: the labels measured here are those current under "
                f"version {crit.version}; set criterion.version (and its text) in the evaluator file to match, "
                "or check that the evaluator still scores what the criterion now says",)
    if defn.criterion.text.strip() != crit.text.strip():
        return (f"{defn.name}'s criterion text differs from the store's criterion {crit.name!r} "
                f"(version {crit.version}): the labels were made against the store's text",)
    return ()


def pass_fail_balance(defn: EvaluatorDef, dataset: GroundTruthDataset) -> dict[str, int]:
    """``{"pass": n, "fail": m}``: the dataset's labels as the certification counts them (a value on a
    non-binary scale passes when its score on the scale reaches the evaluator's ``pass_score``)."""
    counts = Counter(_pass_fail(defn, i.target) for i in dataset.items)
    return {"pass": counts["pass"], "fail": counts["fail"]}


def report_plan(report: CalibrationReport, settings: CalibrationSettings,
                labelled: Mapping[str, int] | None = None) -> CalibrationPlan:
    """The plan of a stored calibration (``assay calibrate NAME --plan``): more labels per class for every bound
    to clear at the rates it measured, counting ``labelled`` (pass / fail labels now, see
    :func:`pass_fail_balance`; default: the report's dataset balance on a binary scale, else the labelled items of
    its overall confusion matrix) as already there. No judge is asked and the test split is not looked at again.

    Raises:
        UsageError: the report was stored before calibrations kept test-split metrics.
    """
    if report.test is None or report.overall is None:
        raise UsageError(f"the stored calibration of {report.evaluator} has no test-split metrics; calibrate again")
    if labelled is None:
        c = report.overall.confusion
        labelled = report.dataset_balance if report.scale == "binary" else {"pass": c.tp + c.fn, "fail": c.tn + c.fp}
    return plan_rates(binary_rates(report.test.confusion), binary_rates(report.overall.confusion), dict(labelled),
                      report.threshold, settings, report.split_fractions or DEFAULT_FRACTIONS)


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


def item_key(result: Evaluation) -> str:
    """The ground-truth item a result is about: its unit id, or ``"A vs B"`` for a pairwise comparison."""
    return result.unit_id if result.second_unit_id is None else f"{result.unit_id} vs {result.second_unit_id}"


def _pass_fail(defn: EvaluatorDef, value: ScaleValue) -> str:
    """A human value as pass/fail: itself on a binary scale, else its score on the scale against ``pass_score``."""
    if defn.scale.kind == "binary":
        return str(value)
    return "pass" if defn.scale.score(value) >= defn.pass_score else "fail"


def _evaluate_items(store: Store, defn: EvaluatorDef, items: Sequence[GroundTruthItem], judge: JudgeClient | None,
                    settings: JudgeSettings, progress: Callable[[int], None] | None
                    ) -> tuple[list[Evaluation], list[Evaluation] | None]:
    """Score every item: units, or pairs of units (then also with the two swapped, for position bias)."""
    if defn.scale.kind != "pairwise":
        return evaluate_many(defn, store.units([i.unit_id for i in items]), judge, settings, progress=progress,
                             store=store), None
    ids = sorted({u for i in items for u in (i.unit_id, i.second_unit_id) if u is not None})
    units = {u.unit_id: u for u in store.units(ids)}
    pairs = [(units[i.unit_id], units[i.second_unit_id or ""]) for i in items]
    return (evaluate_pairs(defn, pairs, judge, settings, progress=progress),
            evaluate_pairs(defn, pairs, judge, settings, progress=progress, swapped=True))


def _scale_report(store: Store, defn: EvaluatorDef, items: Sequence[GroundTruthItem], scored: list[EvaluationResult],
                  swapped: list[Evaluation] | None, split: DatasetSplit, n_boot: int, seed: int) -> ScaleReport | None:
    """Agreement on a non-binary scale: test, all items, the human ceiling and (pairwise) position bias."""
    if defn.scale.kind == "binary":
        return None
    truth = {i.key: i.target for i in items}
    test_ids = set(split.units("test"))

    def on(keys: set[str] | None) -> ScaleMetrics:
        chosen = [r for r in scored if r.value is not None and (keys is None or item_key(r) in keys)]
        values: list[ScaleValue] = [r.value for r in chosen if r.value is not None]
        return scale_metrics(defn.scale, [truth[item_key(r)] for r in chosen], values, n_boot, seed)

    bias = bias_all = None
    if swapped is not None:
        first = {item_key(r): r.value for r in scored}
        again = {item_key(r): r.value for r in swapped if isinstance(r, EvaluationResult)}
        keys = [i.key for i in items]
        on_test = [k for k in keys if k in test_ids]
        bias_all = position_bias([first.get(k) for k in keys], [again.get(k) for k in keys])
        bias = position_bias([first.get(k) for k in on_test], [again.get(k) for k in on_test])
    ceiling = scale_ceiling(defn.scale, human_labels(store, defn.criterion.name), test_ids, n_boot, seed)
    return ScaleReport(kind=defn.scale.kind, test=on(test_ids), overall=on(None), human_ceiling=ceiling,
                       position_bias=bias, position_bias_overall=bias_all,
                       decision=f"certification bounds TPR and TNR of pass/fail at pass_score {defn.pass_score:g} "
                                f"(a value passes when its score on the scale reaches it); the {defn.scale.kind} "
                                "agreement is reported beside it")


def _threshold(defn: EvaluatorDef, scored: list[EvaluationResult], labels: Mapping[str, str], split: DatasetSplit,
               n_boot: int, seed: int, min_per_class: int) -> ThresholdChoice | None:
    """A numeric score against binary labels: the pass_score chosen on train + dev, measured on test."""
    if defn.scale.kind != "binary":
        return None
    fit_ids, test_ids = set(split.units("train")) | set(split.units("dev")), set(split.units("test"))
    fit = [(labels[item_key(r)], r.score) for r in scored if item_key(r) in fit_ids]
    test = [(labels[item_key(r)], r.score) for r in scored if item_key(r) in test_ids]
    return choose_threshold(fit, test, defn.pass_score, n_boot, seed, min_per_class)


def _split_metrics(scored: list[EvaluationResult], labels: Mapping[str, str], split: DatasetSplit, n_boot: int,
                   seed: int, min_per_class: int) -> tuple[CalibrationMetrics, CalibrationMetrics]:
    """(test-split metrics, all-items metrics) of the scored results, with CIs."""
    test_ids = set(split.units("test"))
    on_test = [r for r in scored if item_key(r) in test_ids]
    test = metrics_with_ci([labels[item_key(r)] for r in on_test], [r.verdict for r in on_test], n_boot, seed,
                           min_per_class)
    overall = metrics_with_ci([labels[item_key(r)] for r in scored], [r.verdict for r in scored], n_boot, seed,
                              min_per_class)
    return test, overall
