"""Agreement on every scale against independent oracles, on real multi-rater data and degenerate cases.

Oracles: scikit-learn's ``cohen_kappa_score`` (unweighted and ``weights="quadratic"``), the
``krippendorff`` package (nominal, ordinal, interval), and :func:`_fleiss_reference` below, a plain
loop over Fleiss (1971)'s formulas checked against his published example first.

Real data: LLMBar (Zeng et al., ICLR 2024) gives five raters on 885 pairwise items (the gold label and
the GPT-4 and ChatGPT judges, each in both output orders; LLMEval^2 has missing verdicts); DevAI
(Zhuge et al., 2024) gives a human and a judge on 1,098 binary requirement verdicts; Krippendorff's
(2011) own worked example gives four coders on 12 units of an ordinal 1..5 scale with missing values.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay.annotations import (
    Annotation,
    BinaryScale,
    Criterion,
    OrdinalLevel,
    OrdinalScale,
    PairwiseScale,
    Scale,
    add_annotations,
    add_criterion,
)
from assay.annotations.agreement import HumanAgreement, human_agreement
from assay.stats import fleiss_kappa
from assay.traces import Message, Span, Unit

from .conftest import DATA

LLMBAR = DATA / "llmbar" / "Dataset"
SETS = sorted(p.parent for p in LLMBAR.glob("**/dataset.json"))
DEVAI = DATA / "devai-agent-as-a-judge" / "benchmark" / "judgment"
PREFERENCE = {1: "first", 2: "second", "1": "first", "2": "second"}
LEVELS = OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=f"level {v}") for v in range(1, 6)))


def _fleiss_reference(items: Sequence[Sequence[str]]) -> float:
    """Fleiss (1971) written out as loops; items with fewer than two ratings are left out, and the
    per-item agreement is averaged unweighted (what assay documents for unequal numbers of raters)."""
    rated = [list(ratings) for ratings in items if len(ratings) >= 2]
    categories = sorted({r for ratings in rated for r in ratings})
    total = sum(len(ratings) for ratings in rated)
    p_bar = 0.0
    for ratings in rated:
        n = len(ratings)
        p_bar += (sum(ratings.count(c) ** 2 for c in categories) - n) / (n * (n - 1))
    p_bar /= len(rated)
    p_e = sum((sum(ratings.count(c) for ratings in rated) / total) ** 2 for c in categories)
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_reference_and_assay_give_the_published_example() -> None:
    # Fleiss (1971), table 1 as reproduced in many texts: 10 subjects, 14 raters, 5 categories; kappa 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(c) for c, k in enumerate(row) for _ in range(k)] for row in counts]
    assert _fleiss_reference(items) == pytest.approx(0.20993, abs=5e-5)
    assert fleiss_kappa(np.array(counts)) == pytest.approx(_fleiss_reference(items), rel=1e-12)


def _criterion(scale: Scale, name: str = "c") -> Criterion:
    return Criterion(id=1, name=name, text="t", version=1, scale=scale)


def _annotations(raters: dict[str, list[object]], pairwise: bool = False) -> list[Annotation]:
    """One annotation per rater and item (None: the rater gave no label); items ``i-000`` ... (pairwise:
    ``i-000a vs i-000b``)."""
    out = []
    for rater, values in raters.items():
        for i, value in enumerate(values):
            if value is None:
                continue
            second = f"i-{i:03d}b" if pairwise else None
            out.append(Annotation(unit_id=f"i-{i:03d}" + ("a" if pairwise else ""), second_unit_id=second,
                                  annotator=rater, value=value, criterion="c", criterion_version=1))  # type: ignore[arg-type]
    return out


def _check_against_oracles(report: HumanAgreement, raters: dict[str, list[object]], ranks: dict[object, float],
                           levels: Sequence[str], weighted: bool = False) -> None:
    names = sorted(raters)
    for pair in report.pairs:
        both = [(x, y) for x, y in zip(raters[pair.first], raters[pair.second], strict=True)
                if x is not None and y is not None]
        assert pair.n == len(both)
        a, b = [x for x, _ in both], [y for _, y in both]
        assert pair.kappa.value == pytest.approx(cohen_kappa_score(a, b))
        assert pair.kappa.low is not None and pair.kappa.high is not None
        assert pair.kappa.low <= pair.kappa.value <= pair.kappa.high
        if weighted:
            assert pair.weighted_kappa is not None
            oracle = cohen_kappa_score(a, b, weights="quadratic", labels=sorted(set(ranks), key=ranks.__getitem__))
            assert pair.weighted_kappa.value == pytest.approx(oracle)
    assert [(p.first, p.second) for p in report.pairs] == list(combinations(names, 2))
    matrix = np.array([[np.nan if v is None else ranks[v] for v in raters[name]] for name in names])
    for level in levels:
        assert report.alpha[level].value == pytest.approx(
            krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                               value_domain=sorted(set(ranks.values()))), abs=1e-9), level
    items = [[str(raters[name][i]) for name in names if raters[name][i] is not None] for i in range(matrix.shape[1])]
    assert report.fleiss_kappa is not None
    assert report.fleiss_kappa.value == pytest.approx(_fleiss_reference(items), abs=1e-12)
    assert "NaN" not in report.model_dump_json()


@pytest.mark.parametrize("folder", SETS, ids=[str(p.relative_to(LLMBAR)) for p in SETS])
def test_llmbar_five_raters_pairwise_matches_the_oracles(folder: Path) -> None:
    gold = [PREFERENCE[i["label"]] for i in json.loads((folder / "dataset.json").read_text())]
    raters: dict[str, list[object]] = {"gold": list(gold)}
    for judge in ("GPT-4", "ChatGPT"):
        items = json.loads((folder / "evaluators" / judge / "Vanilla_NoRules" / "result.json").read_text())
        assert [PREFERENCE[i["label"]] for i in items] == gold
        for swap in ("False", "True"):
            raters[f"{judge} swap={swap}"] = [PREFERENCE.get(i["results"][0][f"swap = {swap}"]["winner"])
                                              for i in items]
    report = human_agreement(_annotations(raters, pairwise=True), _criterion(PairwiseScale()), n_boot=300)
    assert report.scale == "pairwise" and len(report.annotators) == 5 and len(report.pairs) == 10
    assert report.kappa is None  # Cohen's kappa of "the two annotators": there are five, see the matrix
    labelled = [sum(values[i] is not None for values in raters.values()) for i in range(len(gold))]
    assert report.n_units == sum(n >= 2 for n in labelled) and report.distribution["tie"] == 0
    _check_against_oracles(report, raters, {"second": 0.0, "tie": 1.0, "first": 2.0}, ["nominal", "ordinal"])


@pytest.mark.parametrize("agent", ["OpenHands", "MetaGPT", "GPT-Pilot"])
def test_devai_human_and_judge_binary_matches_the_oracles(agent: str) -> None:
    def verdicts(folder: Path) -> list[object]:
        return ["pass" if req["satisfied"] else "fail" for f in sorted(folder.glob("*.json"))
                for req in json.loads(f.read_text())["requirements"]]

    raters = {"human": verdicts(DEVAI / agent / "human_as_a_judge"),
              "judge": verdicts(DEVAI / agent / "agent_as_a_judge" / "gray_box")}
    report = human_agreement(_annotations(raters), _criterion(BinaryScale()), n_boot=300)
    published = {"OpenHands": 0.80, "MetaGPT": 0.78, "GPT-Pilot": 0.73}[agent]
    assert report.kappa == pytest.approx(published, abs=0.005)  # the SOURCE.md figures
    assert report.pairs[0].kappa.value == report.kappa
    assert report.pass_count == report.distribution["pass"] and sum(report.distribution.values()) == 2 * 366
    _check_against_oracles(report, raters, {"fail": 0.0, "pass": 1.0}, ["nominal"])


def test_krippendorff_2011_ordinal_example_on_an_ordinal_scale() -> None:
    observers = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
                 [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    raters: dict[str, list[object]] = {f"obs{k}": list(values) for k, values in enumerate(observers)}
    report = human_agreement(_annotations(raters), _criterion(LEVELS), n_boot=300)
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}  # Krippendorff (2011), section C
    for level, value in published.items():
        assert report.alpha[level].value == pytest.approx(value, abs=5e-4)
    assert report.n_units == 11  # unit 12 has one value: not pairable
    _check_against_oracles(report, raters, {v: float(v) for v in range(1, 6)}, list(published), weighted=True)


def test_degenerate_cases_are_explained_never_nan() -> None:
    one_class = human_agreement(_annotations({"a": ["pass"] * 4, "b": ["pass"] * 4}), _criterion(BinaryScale()))
    assert one_class.kappa is None and one_class.pairs[0].agreement == 1.0
    for stat in (one_class.pairs[0].kappa, one_class.fleiss_kappa, one_class.alpha["nominal"]):
        assert stat is not None and stat.value is None and "every label is 'pass'" in stat.note
    one_item = human_agreement(_annotations({"a": [2], "b": [4]}), _criterion(LEVELS))
    assert one_item.pairs[0].kappa.value == 0.0 and one_item.pairs[0].kappa.note == "1 item: too few for an interval"
    assert one_item.notes == ["only one item has labels from two annotators: too few for an interval"]
    apart = human_agreement(_annotations({"a": ["pass", "fail", None], "b": [None, None, "pass"],
                                          "c": ["fail", "fail", None]}), _criterion(BinaryScale()))
    pair_ab = next(p for p in apart.pairs if (p.first, p.second) == ("a", "b"))
    assert pair_ab.n == 0 and pair_ab.kappa.note == "no item labelled by both a and b"
    alone = human_agreement(_annotations({"a": ["pass", "fail"]}), _criterion(BinaryScale()))
    assert alone.pairs == [] and alone.notes[0].startswith("only one annotator (a)")
    assert alone.fleiss_kappa is not None and alone.fleiss_kappa.note == "no item has labels from two annotators"
    empty = human_agreement([], _criterion(PairwiseScale()))
    assert empty.notes == ["no current human label on this criterion yet"] and empty.n_units == 0
    for report in (one_class, one_item, apart, alone, empty):
        text = report.model_dump_json()
        assert "NaN" not in text and "nan" not in text.replace("nominal", "")
        assert not any(isinstance(v, float) and math.isnan(v) for v in report.model_dump().values())


def _unit(uid: str) -> Unit:
    span = Span(trace_id=f"{abs(hash(uid)):032x}"[:32], span_id=f"{abs(hash(uid)):016x}"[:16], name="chat", kind="llm",
                start_ns=1, end_ns=2, input_messages=(Message(role="user", content="Q"),),
                output_messages=(Message(role="assistant", content=f"A {uid}"),))
    return Unit(unit_id=uid, kind="trace", source="test", spans=(span,))


def test_assay_agreement_prints_the_matrix_for_three_annotators(tmp_path: Path) -> None:
    (tmp_path / ".assay").mkdir()
    store = Store(f"sqlite:///{tmp_path / '.assay' / 'assay.db'}")
    store.add_units([_unit(f"u{i}") for i in range(6)])
    add_criterion(store, "How helpful is the answer?", name="helpful", scale=LEVELS)
    levels = {"ann": [1, 2, 3, 4, 5, 3], "bob": [1, 2, 3, 5, 5, 2], "cy": [2, 2, 3, 4, 4, 3]}
    add_annotations(store, [Annotation(unit_id=f"u{i}", annotator=who, value=v, criterion="helpful")
                            for who, values in levels.items() for i, v in enumerate(values)])
    store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["--workspace", str(tmp_path), "agreement", "helpful"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "3 annotator(s), 6 item(s)" in out and "Cohen's kappa per annotator pair" in out
    assert "quadratic weighted kappa per annotator pair" in out and "Krippendorff's alpha (interval)" in out
    assert "n/a" not in out
    expected = cohen_kappa_score(levels["ann"], levels["bob"])
    assert f"{expected:.3f}" in out
    data = json.loads(runner.invoke(app, ["--workspace", str(tmp_path), "agreement", "helpful", "--json"]).stdout)
    pair = next(p for p in data["pairs"] if (p["first"], p["second"]) == ("ann", "bob"))
    assert pair["kappa"]["value"] == pytest.approx(expected)
    assert pair["weighted_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(levels["ann"], levels["bob"], weights="quadratic", labels=[1, 2, 3, 4, 5]))
    counted = Counter(v for values in levels.values() for v in values)
    assert data["distribution"] == {str(v): counted[v] for v in range(1, 6)} == {"1": 2, "2": 5, "3": 5, "4": 3, "5": 3}
    assert runner.invoke(app, ["--workspace", str(tmp_path), "agreement", "nope"]).exit_code == 2
    listed = json.loads(runner.invoke(app, ["--workspace", str(tmp_path), "agreement", "--json"]).stdout)
    assert [r["criterion"] for r in listed] == ["helpful"]
