"""Calibration statistics: bootstrap CIs, stratified seeded splits, the human ceiling, test-split activation."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, precision_score, recall_score

from assay._store.store import Store
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.calibration import (
    GroundTruthDataset,
    GroundTruthItem,
    build_dataset,
    calibrate,
    load_split,
    metrics_with_ci,
    split_dataset,
)
from assay.calibration.calibrate import evaluator_record
from assay.evaluators import EvaluationResult, EvaluatorDef, evaluate_many
from assay.exceptions import RuntimeFailure, UsageError
from assay.settings import CalibrationSettings, JudgeSettings
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE

CHECK = EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use",
                     criterion={"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."},  # type: ignore[arg-type]
                     code={"callable": "assay.evaluators.checks:no_tool_errors"})  # type: ignore[arg-type]


def _pairs(n_pass: int, n_fail: int, seed: int = 7, flip: float = 0.15) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    human = ["pass"] * n_pass + ["fail"] * n_fail
    judge = [("fail" if h == "pass" else "pass") if rng.random() < flip else h for h in human]
    return human, judge


# --- metrics with CIs -------------------------------------------------------------------------------
def test_point_estimates_match_sklearn() -> None:
    human, judge = _pairs(120, 60)
    m = metrics_with_ci(human, judge)
    assert m.n == 180 and (m.human_pass, m.human_fail) == (120, 60)
    assert m.agreement.value == pytest.approx(np.mean([h == j for h, j in zip(human, judge, strict=True)]))
    assert m.kappa.value == pytest.approx(cohen_kappa_score(human, judge))
    assert m.balanced_accuracy.value == pytest.approx(balanced_accuracy_score(human, judge))
    assert m.precision_fail.value == pytest.approx(precision_score(human, judge, pos_label="fail"))
    assert m.recall_fail.value == pytest.approx(recall_score(human, judge, pos_label="fail"))
    assert m.tpr.value == pytest.approx(recall_score(human, judge, pos_label="pass"))
    assert m.tnr.value == m.recall_fail.value
    assert m.warnings == ()


def test_bootstrap_interval_matches_a_plain_item_resampling_bootstrap() -> None:
    """Efron's percentile bootstrap done the slow way (resample item indices) gives the same interval."""
    human, judge = _pairs(70, 50)
    m = metrics_with_ci(human, judge, n_boot=4000, seed=3)
    rng = np.random.default_rng(11)
    h, j = np.array(human), np.array(judge)
    idx = rng.integers(0, len(h), size=(4000, len(h)))
    accs = (h[idx] == j[idx]).mean(axis=1)
    kappas = [cohen_kappa_score(h[i], j[i]) for i in idx[:1500]]
    low, high = np.percentile(accs, [2.5, 97.5])
    assert m.agreement.low == pytest.approx(low, abs=0.015) and m.agreement.high == pytest.approx(high, abs=0.015)
    k_low, k_high = np.percentile(kappas, [2.5, 97.5])
    assert m.kappa.low == pytest.approx(k_low, abs=0.03) and m.kappa.high == pytest.approx(k_high, abs=0.03)
    for e in (m.agreement, m.kappa, m.tpr, m.tnr, m.balanced_accuracy, m.precision_fail, m.recall_fail):
        assert e.low is not None and e.high is not None and e.value is not None
        assert e.low <= e.value <= e.high


def test_intervals_are_seeded_and_narrow_with_n() -> None:
    small = metrics_with_ci(*_pairs(20, 20), seed=1)
    assert small == metrics_with_ci(*_pairs(20, 20), seed=1)
    assert small != metrics_with_ci(*_pairs(20, 20), seed=2)
    big = metrics_with_ci(*_pairs(400, 400), seed=1)
    assert small.agreement.low is not None and small.agreement.high is not None
    assert big.agreement.low is not None and big.agreement.high is not None
    assert big.agreement.high - big.agreement.low < (small.agreement.high - small.agreement.low) / 2


def test_small_classes_warn_and_undefined_rates_stay_none() -> None:
    m = metrics_with_ci(*_pairs(50, 12))
    assert len(m.warnings) == 1 and "only 12 human-fail labels (< 30)" in m.warnings[0]
    one_class = metrics_with_ci(["pass"] * 5, ["pass"] * 5)
    assert one_class.kappa.value is None and one_class.tnr.value is None and one_class.precision_fail.value is None
    assert one_class.agreement.value == 1.0 and len(one_class.warnings) == 2
    empty = metrics_with_ci([], [])
    assert empty.n == 0 and empty.agreement.value is None


# --- splits -----------------------------------------------------------------------------------------
def _dataset(n_pass: int, n_fail: int) -> GroundTruthDataset:
    items = [GroundTruthItem(unit_id=f"u{i:04d}", label="pass" if i < n_pass else "fail", annotators=("a",),
                             annotator_kinds=("human",)) for i in range(n_pass + n_fail)]
    return GroundTruthDataset(version=3, content_hash="h" * 64, criterion="c", criterion_version=1,
                              items=tuple(items))


def test_split_is_stratified_seeded_disjoint_and_complete() -> None:
    ds = _dataset(140, 60)
    split = split_dataset(ds, (0.5, 0.2, 0.3), seed=0)
    assert split == split_dataset(ds, (0.5, 0.2, 0.3), seed=0)
    assert split.units("test") != split_dataset(ds, (0.5, 0.2, 0.3), seed=1).units("test")
    assert sorted(split.assignment) == sorted(i.unit_id for i in ds.items)
    assert split.sizes() == {"train": 100, "dev": 40, "test": 60}
    labels = {i.unit_id: i.label for i in ds.items}
    for name, share in (("train", 0.5), ("dev", 0.2), ("test", 0.3)):
        fails = sum(labels[u] == "fail" for u in split.units(name))
        assert fails == round(60 * share)  # stratified: each split keeps the 30% fail share
    assert split.split_id.startswith("split-v3-")


def test_small_sets_still_get_both_classes_in_test() -> None:
    split = split_dataset(_dataset(5, 2), (0.5, 0.2, 0.3))
    ds = _dataset(5, 2)
    labels = {i.unit_id: i.label for i in ds.items}
    assert {labels[u] for u in split.units("test")} == {"pass", "fail"}
    for bad in ((0.5, 0.5, 0.0), (0.6, 0.3, 0.3), (-0.1, 0.6, 0.5)):
        with pytest.raises(ValidationError):
            split_dataset(ds, bad)


# --- calibrate: test-split decision, persisted split, test uses, human ceiling ------------------------
@pytest.fixture(scope="module")
def airline() -> list[Unit]:
    return read_file(AIRLINE).units


@pytest.fixture(scope="module")
def check_verdicts(airline: list[Unit]) -> dict[str, str]:
    out = evaluate_many(CHECK, airline)
    return {r.unit_id: r.verdict for r in out if isinstance(r, EvaluationResult)}


def _store(tmp_path: Path, airline: list[Unit], verdicts: dict[str, str], flipped: set[str]) -> Store:
    """Three human annotators: ann-1 and ann-2 give the check's verdict except on ``flipped``; ann-3 never flips."""
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")
    store.add_units(airline)
    add_criterion(store, "Every tool call succeeds.", name="tool-ok")
    flip = {"pass": "fail", "fail": "pass"}
    notes = [Annotation(unit_id=u, annotator=who, label=flip[v] if (u in flipped and who != "ann-3") else v,
                        criterion="tool-ok")  # type: ignore[arg-type]
             for u, v in verdicts.items() for who in ("ann-1", "ann-2", "ann-3")]
    add_annotations(store, notes)
    return store


def test_activation_is_decided_on_the_test_split(tmp_path: Path, airline: list[Unit],
                                                 check_verdicts: dict[str, str]) -> None:
    flipped = set(random.Random(5).sample(sorted(check_verdicts), 30))
    store = _store(tmp_path, airline, check_verdicts, flipped)
    settings = JudgeSettings()
    first = calibrate(store, CHECK.model_copy(update={"threshold": 0.0}), None, settings, n_boot=500)
    assert first.test is not None and first.overall is not None and first.split_id is not None
    assert first.split_sizes == {"train": 100, "dev": 40, "test": 60}
    assert first.n_labelled == 200 and first.agreement.n == 200 and first.agreement.accuracy == pytest.approx(0.85)
    test_ids = set(load_split(store, first.split_id).units("test"))  # type: ignore[union-attr]
    expected_test_acc = 1 - len(flipped & test_ids) / 60
    assert first.test.n == 60 and first.test.agreement.value == pytest.approx(expected_test_acc)
    assert expected_test_acc != pytest.approx(0.85)
    # a threshold between the all-items and the test agreement: the test split decides
    between = (0.85 + expected_test_acc) / 2
    second = calibrate(store, CHECK.model_copy(update={"threshold": between}), None, settings, n_boot=500,
                       certification=CalibrationSettings(policy="point"))  # the rule this pins: agreement
    assert second.split_id == first.split_id and second.test_uses == 2 and first.test_uses == 1
    assert second.status == ("active" if expected_test_acc > 0.85 else "draft")
    assert any("reported on 2 times" in w for w in second.warnings)
    # the human ceiling: pairs (1,2) always agree, (1,3) and (2,3) disagree on flipped test items
    ceiling = first.human_ceiling
    assert ceiling is not None and ceiling.n_items == 60 and ceiling.n_pairs == 180
    assert ceiling.annotators == ("ann-1", "ann-2", "ann-3")
    assert ceiling.metrics.agreement.value == pytest.approx(1 - 2 * len(flipped & test_ids) / 180)


def test_small_dataset_reports_with_min_n_warning(tmp_path: Path, airline: list[Unit],
                                                  check_verdicts: dict[str, str]) -> None:
    store = _store(tmp_path, airline, check_verdicts, set())
    ds = build_dataset(store, "tool-ok")
    small = ds.model_copy(update={"items": ds.items[:100]})
    report = calibrate(store, CHECK, None, JudgeSettings(), dataset=small, n_boot=300)
    assert report.test is not None and 28 <= report.test.n <= 32 and report.test.agreement.value == 1.0
    # a perfect check, but too few human fails on test for the TNR bound: draft, and the plan says what to label
    assert report.test.human_fail < 16 and report.status == "draft" and report.plan is not None
    assert report.plan.more["fail"] and report.plan.more["pass"] == 0
    point = calibrate(store, CHECK, None, JudgeSettings(), dataset=small, n_boot=300,
                      certification=CalibrationSettings(policy="point"))
    assert point.status == "active"  # the older point rule activates it
    assert any(w.startswith("test split: only") and "(< 30)" in w for w in report.warnings)
    assert report.human_ceiling is not None and report.human_ceiling.metrics.agreement.value == 1.0
    assert load_split(store, report.split_id or "") is not None


def test_an_evaluator_written_against_another_criterion_version_is_warned(
        tmp_path: Path, airline: list[Unit], check_verdicts: dict[str, str]) -> None:
    from assay.annotations.criteria import edit_criterion

    store = _store(tmp_path, airline, check_verdicts, set())
    same = calibrate(store, CHECK, None, JudgeSettings(), n_boot=200)
    assert not any("criterion" in w for w in same.warnings)
    reworded = CHECK.model_copy(update={"criterion": CHECK.criterion.model_copy(update={"text": "Tools work."})})
    text = calibrate(store, reworded, None, JudgeSettings(), n_boot=200)
    assert any("criterion text differs from the store's criterion 'tool-ok' (version 1)" in w for w in text.warnings)
    edit_criterion(store, "tool-ok", "Every tool call succeeds, and a failed call is retried correctly.")
    ahead = CHECK.model_copy(update={"criterion": CHECK.criterion.model_copy(update={"version": 7})})
    with pytest.raises(UsageError, match="version 7"):  # named before "no labelled units" (none at version 2 yet)
        calibrate(store, ahead, None, JudgeSettings(), n_boot=200)
    add_annotations(store, [Annotation(unit_id=u, annotator="ann-1", label=v, criterion="tool-ok")  # type: ignore[arg-type]
                            for u, v in check_verdicts.items()])  # labelled again under version 2
    stale = calibrate(store, CHECK, None, JudgeSettings(), n_boot=200)
    assert any("written against criterion 'tool-ok' version 1, but the store's criterion is version 2" in w
               for w in stale.warnings)
    with pytest.raises(UsageError, match="names criterion 'tool-ok' version 7, but the store's criterion is at "
                                         "version 2"):
        calibrate(store, ahead, None, JudgeSettings(), n_boot=200)


def test_public_api_is_pinned() -> None:
    import assay.calibration as calibration

    assert sorted(calibration.__all__) == [
        "Agreement", "CalibrationMetrics", "CalibrationReport", "Confusion", "DatasetImport", "DatasetManifest",
        "DatasetSplit", "Estimate", "GroundTruthDataset", "GroundTruthItem", "HumanCeiling", "PassRateEstimates",
        "agreement", "build_dataset", "calibrate", "cohen_kappa", "export_dataset", "export_dataset_file",
        "human_ceiling", "import_dataset_file", "load_split", "metrics_with_ci", "pass_rate_estimates",
        "persist_split", "ppi_mean", "read_dataset_file", "rogan_gladen", "split_dataset",
    ]


def test_force_accepts_a_shortfall_but_not_an_evaluator_that_scored_nothing(
        tmp_path: Path, airline: list[Unit], check_verdicts: dict[str, str]) -> None:
    store = _store(tmp_path, airline, check_verdicts, set(random.Random(5).sample(sorted(check_verdicts), 60)))
    strict = CHECK.model_copy(update={"threshold": 0.99})
    forced = calibrate(store, strict, None, JudgeSettings(), force_reason="known gap", n_boot=200)
    assert not forced.meets_threshold and forced.status == "active" and forced.override_reason == "known gap"
    # a code check that raises on every unit: nothing measured, so --force cannot activate it
    broken = CHECK.model_copy(update={"name": "broken", "code": CHECK.code.model_copy(  # type: ignore[union-attr]
        update={"callable": "json:loads"})})
    with pytest.raises(RuntimeFailure, match="broken scored none of the .* labelled items"):
        calibrate(store, broken, None, JudgeSettings(), force_reason="ship it", n_boot=200)
    assert evaluator_record(store, broken) is None  # no status set, forced or not
