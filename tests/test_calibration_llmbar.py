"""assay's agreement on the 16 LLMBar judge runs equals the authors' own statistics.json (no model calls).

LLMBar (Zeng et al., ICLR 2024) pairs: gold ``label`` 1 or 2 says which output is better; each judge
run picks a ``winner`` with the outputs in the original order (swap = False) and swapped (swap = True).
Mapped to assay's labels: output 1 better = "pass", output 2 better = "fail"; a ``None`` winner is an
unscored reply, excluded from assay's rates and counted beside them. LLMBar's figures count over all
items, so an unscored reply is a miss in ``correct_*``, and two unscored replies count as ``equal``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from assay.calibration import agreement

from .conftest import DATA

ROOT = DATA / "llmbar" / "Dataset"
RUNS = sorted(ROOT.glob("**/evaluators/*/Vanilla_NoRules/result.json"))
LABEL = {"1": "pass", "2": "fail", 1: "pass", 2: "fail"}


def _published(path: Path) -> dict[str, tuple[int, int]]:
    stats = json.loads((path.parent / "statistics.json").read_text())
    out = {}
    for key in ("correct_False", "correct_True", "correct_both", "equal"):
        match = re.match(r"(\d+) / (\d+) = ", stats[key])
        assert match, stats[key]
        out[key] = (int(match.group(1)), int(match.group(2)))
    return out


def _correct(gold: list[str], verdicts: list[str | None]) -> tuple[int, int]:
    """(items where the judge matches gold, all items) from assay's agreement on the scored items."""
    scored = [(g, v) for g, v in zip(gold, verdicts, strict=True) if v is not None]
    a = agreement([g for g, _ in scored], [v for _, v in scored])
    if a.kappa is not None:
        assert a.kappa == pytest.approx(cohen_kappa_score([g for g, _ in scored], [v for _, v in scored]))
    assert a.n + (len(gold) - len(scored)) == len(gold)  # unscored counted beside the rates
    return a.confusion.tp + a.confusion.tn, len(gold)


def test_all_sixteen_runs_are_here() -> None:
    assert len(RUNS) == 16


@pytest.mark.parametrize("result", RUNS, ids=[str(p.relative_to(ROOT).parent.parent) for p in RUNS])
def test_agreement_equals_published_statistics(result: Path) -> None:
    items = json.loads(result.read_text())
    gold = [LABEL[i["label"]] for i in items]
    runs = {swap: [LABEL.get(i["results"][0][f"swap = {swap}"]["winner"]) for i in items]
            for swap in ("False", "True")}
    published = _published(result)
    assert _correct(gold, runs["False"]) == published["correct_False"]
    assert _correct(gold, runs["True"]) == published["correct_True"]
    # both orders right: the consistent verdicts only (an inconsistent pair is right in one order at most)
    both = [f if f == t else None for f, t in zip(runs["False"], runs["True"], strict=True)]
    assert _correct(gold, both) == published["correct_both"]
    # positional consistency: assay's agreement between the two orders, on items both orders scored
    pairs = [(f, t) for f, t in zip(runs["False"], runs["True"], strict=True) if f is not None and t is not None]
    consistency = agreement([f for f, _ in pairs], [t for _, t in pairs])
    both_unscored = sum(f is None and t is None for f, t in zip(runs["False"], runs["True"], strict=True))
    same = consistency.confusion.tp + consistency.confusion.tn
    assert (same + both_unscored, len(items)) == published["equal"]
