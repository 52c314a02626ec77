"""Krippendorff's alpha against the published worked examples, and human agreement per criterion."""

from __future__ import annotations

import pytest

from assay.annotations import Annotation, Criterion
from assay.annotations.agreement import human_agreement, krippendorff_alpha

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1..5, missing data (None). Published: nominal .743, ordinal .815.
_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
_UNITS = [list(col) for col in zip(*_OBSERVERS, strict=True)]


def test_alpha_nominal_matches_krippendorff_2011() -> None:
    assert krippendorff_alpha(_UNITS, "nominal") == pytest.approx(0.743, abs=5e-4)


def test_alpha_ordinal_matches_krippendorff_2011() -> None:
    assert krippendorff_alpha(_UNITS, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_alpha_binary_two_observers_matches_krippendorff_2011() -> None:
    # Section A: two observers, ten units, binary data; published alpha = 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha(list(zip(a, b, strict=True))) == pytest.approx(0.095, abs=5e-4)


def test_alpha_undefined_is_none_not_nan() -> None:
    assert krippendorff_alpha([["pass", "pass"], ["pass", "pass"]]) is None
    assert krippendorff_alpha([["pass"], [None, "fail"]]) is None
    assert krippendorff_alpha([[1, 1], [2, 2]], "ordinal") == 1.0


def _a(unit: str, who: str, label: str, version: int = 1, severity: int | None = None,
       source: str = "") -> Annotation:
    return Annotation(unit_id=unit, annotator=who, label=label, severity=severity,  # type: ignore[arg-type]
                      criterion="c", criterion_version=version, source=source)


def test_human_agreement_undefined_kappa_reports_raw_agreement() -> None:
    crit = Criterion(id=1, name="c", text="t", version=2)
    labels = [_a(u, who, "fail", 2) for u in ("u1", "u2", "u3") for who in ("ann", "bob")]
    labels.append(_a("u1", "ann", "pass", 1))  # stale: made under version 1
    agreement = human_agreement(labels, crit)
    assert agreement.kappa is None and agreement.alpha_label is None
    assert agreement.raw_agreement == 1.0
    assert (agreement.n_units, agreement.stale_labels, agreement.fail_count) == (3, 1, 6)
    assert agreement.disagreements == []


def test_human_agreement_latest_label_wins_and_disagreements_listed() -> None:
    crit = Criterion(id=1, name="c", text="t", version=1)
    labels = [_a("u1", "ann", "pass"), _a("u1", "bob", "pass"), _a("u2", "ann", "pass"),
              _a("u2", "bob", "fail"), _a("u1", "bob", "fail"),  # bob corrects u1 to fail
              _a("u3", "ann", "fail"), _a("u3", "bob", "fail")]
    agreement = human_agreement(labels, crit)
    assert [d.unit_id for d in agreement.disagreements] == ["u1", "u2"]
    assert agreement.raw_agreement == pytest.approx(1 / 3)
    assert agreement.kappa == pytest.approx(0.0)
