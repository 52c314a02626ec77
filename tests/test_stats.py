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
