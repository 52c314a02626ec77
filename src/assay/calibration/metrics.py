"""Agreement statistics between an evaluator (judge) and human labels.

Conventions: labels are ``"pass"``/``"fail"``; *pass* is the positive class, so
TPR = P(judge pass | human pass) and TNR = P(judge fail | human fail), as used for
judge-error correction (Rogan & Gladen 1978). Cohen's kappa follows Cohen (1960):
``kappa = (p_o - p_e) / (1 - p_e)``; it is undefined (``None``) when ``p_e == 1``
(both raters used a single, identical class), never NaN (:func:`assay.stats.cohen_kappa`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from assay.stats import cohen_kappa


class Confusion(BaseModel):
    """Confusion matrix of judge vs human (pass = positive)."""

    model_config = ConfigDict(frozen=True)

    tp: int  # human pass, judge pass
    fn: int  # human pass, judge fail
    fp: int  # human fail, judge pass
    tn: int  # human fail, judge fail


class Agreement(BaseModel):
    """Judge-human agreement on n items.

    ``accuracy`` in [0, 1]; ``kappa`` in [-1, 1] or None when undefined; ``tpr``/``tnr``
    None when the human labels have no item of that class.
    """

    model_config = ConfigDict(frozen=True)

    n: int
    accuracy: float | None
    kappa: float | None
    tpr: float | None
    tnr: float | None
    confusion: Confusion
    human_pass: int
    human_fail: int


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def agreement(human: Sequence[str], judge: Sequence[str]) -> Agreement:
    """Agreement statistics of judge verdicts against human labels (``"pass"``/``"fail"``).

    Raises:
        ValueError: lengths differ or a label is not pass/fail.
    """
    if len(human) != len(judge):
        raise ValueError(f"label lists differ in length: {len(human)} vs {len(judge)}")
    bad = {x for x in (*human, *judge) if x not in ("pass", "fail")}
    if bad:
        raise ValueError(f"labels must be 'pass' or 'fail', got {sorted(bad)}")
    pairs = list(zip(human, judge, strict=True))
    c = Confusion(tp=pairs.count(("pass", "pass")), fn=pairs.count(("pass", "fail")),
                  fp=pairs.count(("fail", "pass")), tn=pairs.count(("fail", "fail")))
    n = len(pairs)
    return Agreement(n=n, accuracy=_ratio(c.tp + c.tn, n), kappa=cohen_kappa(human, judge),
                     tpr=_ratio(c.tp, c.tp + c.fn), tnr=_ratio(c.tn, c.tn + c.fp), confusion=c,
                     human_pass=c.tp + c.fn, human_fail=c.fp + c.tn)
