"""When to stop reviewing: the Good-Turing estimate (N1/N) of the chance that the next reviewed failure shows
a mode no criterion covers, its 95% interval (Esty 1983) checked by simulation against the true missing
mass, and the estimate over a real store's human labels (the CLI and the app: tests/test_signatures_incremental.py,
tests/test_web_ui.py)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from assay._store import Store
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.annotations.scale import OrdinalLevel, OrdinalScale
from assay.signatures.unseen import good_turing, unseen_modes
from tests.ui_fixtures import make_unit


def test_the_estimate_is_the_share_of_singletons_with_esty_s_interval() -> None:
    got = good_turing(Counter({"refunds": 3, "dates": 2, "tone": 1, "cancel": 1}))
    assert (got.labelled_failures, got.singletons, got.doubletons, got.criteria) == (7, 2, 1, 4)
    assert got.estimate == pytest.approx(2 / 7)
    half = 1.959964 * math.sqrt(2 + 2 * 1 - 2 * 2 / 7) / 7
    assert (got.low, got.high) == pytest.approx((max(0.0, 2 / 7 - half), 2 / 7 + half), abs=1e-6)  # clipped at 0
    assert list(got.per_criterion) == ["refunds", "dates", "cancel", "tone"]
    assert "29% (95% CI 0%-80%" in got.text and "2 of 7 labelled failures" in got.text


def test_edges_give_no_interval() -> None:
    assert good_turing(Counter()).estimate is None and "unknown" in good_turing(Counter()).text
    none_single = good_turing(Counter({"a": 4, "b": 2}))
    assert none_single.estimate == 0.0 and none_single.low is None  # Esty's law needs 0 < N1 < N
    all_single = good_turing(Counter({"a": 1, "b": 1}))
    assert all_single.estimate == 1.0 and all_single.low is None
    uncovered = good_turing(Counter({"a": 2}), uncovered=2)  # failures without a criterion: modes seen once
    assert (uncovered.labelled_failures, uncovered.singletons, uncovered.estimate) == (4, 2, 0.5)


@pytest.mark.parametrize(("modes", "n", "skew"), [(50, 100, 1.0), (100, 60, 0.8)])
def test_the_interval_covers_the_true_missing_mass(modes: int, n: int, skew: float) -> None:
    """Reviews drawn at random from a Zipf-like population of failure modes: the interval covers the true
    probability of the modes not yet seen in about 95% of 400 runs, and the estimate is nearly unbiased."""
    rng = np.random.default_rng(0)
    p = 1 / np.arange(1, modes + 1) ** skew
    p /= p.sum()
    covered = tested = 0
    errors = []
    for _ in range(400):
        seen = Counter(str(i) for i in rng.choice(modes, size=n, p=p))
        truth = float(p[[i for i in range(modes) if str(i) not in seen]].sum())
        est = good_turing(seen)
        assert est.estimate is not None
        errors.append(est.estimate - truth)
        if est.low is not None and est.high is not None:
            tested += 1
            covered += est.low <= truth <= est.high
    assert tested >= 390 and 0.90 <= covered / tested <= 0.99
    assert abs(float(np.mean(errors))) < 0.02


def test_human_fail_labels_by_criterion(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_units([make_unit(f"u{i}") for i in range(8)])
    for name in ("refunds", "dates", "tone"):
        add_criterion(store, f"The agent gets {name} right.", name=name)
    labels = [("u0", "refunds", "fail"), ("u1", "refunds", "fail"), ("u2", "refunds", "fail"),
              ("u3", "dates", "fail"), ("u4", "dates", "fail"), ("u5", "tone", "fail"),
              ("u6", None, "fail"),  # no criterion covers it: a mode of its own
              ("u7", "tone", "fail"), ("u7", "tone", "pass")]  # corrected: no failure
    add_annotations(store, [Annotation(unit_id=u, annotator="li", label=label, criterion=c) for u, c, label in labels])
    add_annotations(store, [Annotation(unit_id="u7", annotator="judge", annotator_kind="llm", label="fail",
                                       criterion="dates")])  # a judge's label is not a review
    add_annotations(store, [Annotation(unit_id="u6", annotator="li", label="fail", criterion="dates")])
    got = unseen_modes(store)
    # u6 now names dates: refunds 3, dates 3, tone 1 -> N 7, N1 1 (tone)
    assert got.per_criterion == {"dates": 3, "refunds": 3, "tone": 1}
    assert (got.labelled_failures, got.singletons, got.uncovered) == (7, 1, 0)
    assert got.estimate == pytest.approx(1 / 7)
    add_annotations(store, [Annotation(unit_id="u7", annotator="li", label="fail")])
    assert unseen_modes(store).uncovered == 1 and unseen_modes(store).singletons == 2
    # a level on an ordinal criterion is no pass or fail: the tone criterion turned ordinal, u5 relabelled 2
    add_criterion(store, "How well does the agent keep its tone?", name="tone",
                  scale=OrdinalScale(levels=(OrdinalLevel(value=1, anchor="rude"), OrdinalLevel(value=2, anchor="ok"))))
    add_annotations(store, [Annotation(unit_id="u5", annotator="li", value=2, criterion="tone")])
    after = unseen_modes(store)
    assert "tone" not in after.per_criterion and (after.labelled_failures, after.singletons) == (7, 1)
    store.close()
