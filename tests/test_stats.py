"""``assay.stats`` sits at the bottom of the package graph, and its helpers give the textbook values."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from assay import stats

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"


def _assay_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    return {n for n in names if n == "assay" or n.startswith("assay.")}


def test_stats_imports_nothing_from_assay_but_the_exceptions() -> None:
    assert _assay_imports(SRC / "stats.py") <= {"assay.exceptions"}


def test_wilson_and_z_match_hand_formulas() -> None:
    z = 1.959963984540054
    assert stats.z_critical(0.95) == pytest.approx(z, rel=1e-12)
    k, n = 7, 20
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n
                                                                                              + z * z / (4 * n * n))
    assert stats.wilson_interval(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    with pytest.raises(ValueError):
        stats.z_critical(1.0)


def test_bootstrap_helpers() -> None:
    rates = stats.confusion_rates(*(np.array(float(x)) for x in (40, 10, 5, 45)))
    assert float(rates["agreement"]) == 0.85 and float(rates["tpr"]) == 0.8 and float(rates["tnr"]) == 0.9
    assert float(rates["kappa"]) == pytest.approx(stats.cohen_kappa(["p"] * 40 + ["p"] * 10 + ["f"] * 5 + ["f"] * 45,
                                                                    ["p"] * 40 + ["f"] * 10 + ["p"] * 5 + ["f"] * 45))
    draws = stats.bootstrap_confusion_rates(40, 10, 5, 45, n_boot=500, seed=3)
    again = stats.bootstrap_confusion_rates(40, 10, 5, 45, n_boot=500, seed=3)
    assert draws["agreement"].shape == (500,) and np.array_equal(draws["kappa"], again["kappa"])
    low, high = stats.percentile_interval(draws["agreement"]) or (None, None)
    assert low is not None and high is not None and low < 0.85 < high
    assert stats.percentile_interval(np.array([np.nan, np.nan])) is None
    with pytest.raises(ValueError):
        stats.bootstrap_confusion_rates(0, 0, 0, 0, n_boot=10)


def test_table_statistics_equal_scipy_and_sklearn() -> None:
    from scipy import stats as sps
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(7)
    for _ in range(5):
        a = rng.integers(0, 5, 60)
        b = np.clip(a + rng.integers(-2, 3, 60), 0, 4)
        table = stats.contingency_table(list(a), list(b), list(range(5)))
        assert float(stats.spearman_from_table(table)) == pytest.approx(sps.spearmanr(a, b).statistic)
        assert float(stats.kendall_tau_b_from_table(table)) == pytest.approx(sps.kendalltau(a, b).statistic)
        for weights in (None, "linear", "quadratic"):
            assert float(stats.kappa_from_table(table, weights)) == pytest.approx(  # type: ignore[arg-type]
                cohen_kappa_score(a, b, weights=weights, labels=list(range(5))))
    one_class = stats.contingency_table(["x"] * 3, ["x"] * 3, ["x", "y"])
    assert np.isnan(stats.kappa_from_table(one_class)) and np.isnan(stats.spearman_from_table(one_class))
    with pytest.raises(ValueError, match="not one of the categories"):
        stats.contingency_table(["x"], ["z"], ["x", "y"])


def test_bootstraps_are_seeded_and_shaped() -> None:
    table = np.array([[10.0, 2.0], [3.0, 5.0]])
    draws = stats.bootstrap_tables(table, 400, seed=1)
    assert draws.shape == (400, 2, 2) and np.all(draws.sum(axis=(1, 2)) == 20)
    assert np.array_equal(draws, stats.bootstrap_tables(table, 400, seed=1))
    weights = stats.bootstrap_weights(7, 50, seed=2)
    assert weights.shape == (50, 7) and np.all(weights.sum(axis=1) == 7)
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b", "a"]]
    alpha = stats.krippendorff_alpha(units)
    assert alpha is not None
    boot = stats.bootstrap_krippendorff_alpha(units, "nominal", 300, seed=0)
    assert boot.shape == (300,) and stats.percentile_interval(boot) is not None
    assert stats.bootstrap_krippendorff_alpha([["a"], [None]], "nominal", 10).size == 0
    counts = np.array([[2, 0], [1, 1], [0, 3], [1, 0]])  # the last item has one rating: left out
    assert stats.fleiss_kappa(counts) == pytest.approx(stats.fleiss_kappa(counts[:3]))
    assert stats.fleiss_kappa(np.array([[2, 0], [3, 0]])) is None  # one category only
    assert stats.bootstrap_fleiss_kappa(counts, 100).shape == (100,)
    with pytest.raises(ValueError):
        stats.bootstrap_tables(np.zeros((2, 2)), 10)
