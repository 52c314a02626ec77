"""Agreement statistics against published numbers and an independent implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from assay.calibration.metrics import agreement
from assay.stats import cohen_kappa

from .conftest import DATA

DEVAI = DATA / "devai-agent-as-a-judge" / "benchmark" / "judgment"


def _verdicts(folder: Path) -> dict[tuple[str, int], bool]:
    out = {}
    for f in sorted(folder.glob("*.json")):
        doc = json.loads(f.read_text())
        # requirement ids repeat within some tasks: pair by position in the list
        for i, req in enumerate(doc["requirements"]):
            out[(f.stem, i)] = bool(req["satisfied"])
    return out


@pytest.mark.parametrize(("agent", "kappa", "acc"), [
    ("OpenHands", 0.80, 0.902), ("MetaGPT", 0.78, 0.921), ("GPT-Pilot", 0.73, 0.866)])
def test_devai_judge_vs_human_matches_published(agent: str, kappa: float, acc: float) -> None:
    human = _verdicts(DEVAI / agent / "human_as_a_judge")
    judge = _verdicts(DEVAI / agent / "agent_as_a_judge" / "gray_box")
    keys = sorted(human.keys() & judge.keys())
    assert len(keys) >= 365
    h = ["pass" if human[k] else "fail" for k in keys]
    j = ["pass" if judge[k] else "fail" for k in keys]
    result = agreement(h, j)
    assert result.n == len(keys)
    assert result.kappa == pytest.approx(kappa, abs=0.005)
    assert result.accuracy == pytest.approx(acc, abs=0.0015)
    assert result.kappa == pytest.approx(cohen_kappa_score(h, j))


def test_kappa_undefined_when_one_class_everywhere() -> None:
    assert cohen_kappa(["pass"] * 5, ["pass"] * 5) is None
    r = agreement(["pass"] * 5, ["pass"] * 5)
    assert r.kappa is None and r.accuracy == 1.0 and r.tnr is None and r.tpr == 1.0


def test_confusion_and_rates() -> None:
    human = ["pass", "pass", "pass", "fail", "fail"]
    judge = ["pass", "fail", "pass", "fail", "pass"]
    r = agreement(human, judge)
    assert (r.confusion.tp, r.confusion.fn, r.confusion.fp, r.confusion.tn) == (2, 1, 1, 1)
    assert r.tpr == pytest.approx(2 / 3) and r.tnr == pytest.approx(1 / 2)
    assert r.kappa == pytest.approx(cohen_kappa_score(human, judge))


def test_bad_labels_rejected() -> None:
    with pytest.raises(ValueError, match="pass"):
        agreement(["pass"], ["maybe"])
    with pytest.raises(ValueError, match="length"):
        agreement(["pass"], [])
