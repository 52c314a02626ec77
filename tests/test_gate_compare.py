"""Gate statistics against published values and independent hand computations; pairing and repeats."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from assay._store.store import Store
from assay.evaluators import EvaluationResult, EvaluatorFailure
from assay.exceptions import UsageError
from assay.stats import mcnemar_exact, newcombe_independent_ci, newcombe_paired_ci, wilson_interval
from assay.suite.compare import (
    bootstrap_mean_difference,
    compare_independent_verdicts,
    compare_paired_verdicts,
    correlations,
    redundant_pairs,
)
from assay.suite.gate import UnitKey, combine_repeats, pair_units, unit_keys
from assay.traces import Span, Unit


# --- published values -----------------------------------------------------------------------
@pytest.mark.parametrize(("k1", "n1", "k2", "n2", "low", "high"), [
    # Newcombe (1998), Stat Med 17:873-890, Table II, method 10
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    # Fagerland, Lydersen & Laake (2017), ch. 4: Perondi et al. (2004), 7/34 vs 1/34
    (7, 34, 1, 34, 0.0189, 0.3404),
])
def test_newcombe_independent_matches_published(k1: int, n1: int, k2: int, n2: int, low: float, high: float) -> None:
    got = newcombe_independent_ci(k1, n1, k2, n2)
    assert got == pytest.approx((low, high), abs=6e-5)


def test_newcombe_paired_matches_published() -> None:
    # Fagerland et al. (2017), ch. 8: Cavo et al. (2012), table [[59, 6], [16, 80]]: -0.0621 (-0.1186 to -0.0046)
    low, high = newcombe_paired_ci(59, 6, 16, 80)
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=6e-5)
    cmp = compare_paired_verdicts([(True, True)] * 59 + [(True, False)] * 6 + [(False, True)] * 16
                                  + [(False, False)] * 80)
    assert cmp.diff == pytest.approx(-10 / 161) and round(cmp.diff, 4) == -0.0621
    assert (cmp.ci_low, cmp.ci_high) == (low, high)
    assert (cmp.candidate_only_pass, cmp.baseline_only_pass, cmp.n_pairs) == (6, 16, 161)


def test_mcnemar_exact_is_the_binomial_tail_by_hand() -> None:
    # 6 vs 16 discordant pairs: p = 2 * P(X <= 6), X ~ Bin(22, 1/2)
    by_hand = 2 * sum(math.comb(22, k) for k in range(7)) / 2 ** 22
    assert mcnemar_exact(6, 16) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_exact(16, 6) == pytest.approx(by_hand, rel=1e-12)
    assert round(by_hand, 4) == 0.0525
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 8) == pytest.approx(2 / 2 ** 8)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_wilson_interval_by_hand() -> None:
    z = stats.norm.ppf(0.975)
    for k, n in [(3, 10), (0, 10), (45, 50), (1, 1)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_fisher_p_value_by_hand() -> None:
    cand = [True] * 89 + [False] * 27
    base = [True] * 75 + [False] * 9
    cmp = compare_independent_verdicts(cand, base)
    # two-sided Fisher: sum of hypergeometric probabilities no larger than the observed table's
    rows, col = (116, 84), 164

    def prob(a: int) -> float:
        return math.comb(rows[0], a) * math.comb(rows[1], col - a) / math.comb(200, col)

    observed = prob(89)
    by_hand = sum(prob(a) for a in range(col - rows[1], rows[0] + 1) if prob(a) <= observed * (1 + 1e-7))
    assert cmp.p_value == pytest.approx(by_hand, rel=1e-9)
    assert cmp.method == "fisher-exact" and not cmp.paired
    assert cmp.diff == pytest.approx(89 / 116 - 75 / 84)
    assert (cmp.ci_low, cmp.ci_high) == newcombe_independent_ci(89, 116, 75, 84)
    assert cmp.ci_low < cmp.diff < cmp.ci_high < 0


def test_comparisons_reject_empty_input() -> None:
    with pytest.raises(ValueError):
        compare_paired_verdicts([])
    with pytest.raises(ValueError):
        compare_independent_verdicts([True], [])
    with pytest.raises(ValueError):
        bootstrap_mean_difference([0.1], [0.2, 0.3], paired=True)


# --- bootstrap ------------------------------------------------------------------------------
def test_paired_bootstrap_agrees_with_scipy_and_t_test() -> None:
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 1, 150)
    cand = np.clip(base - 0.05 + rng.normal(0, 0.1, 150), 0, 1)
    ours = bootstrap_mean_difference(cand, base, paired=True, n_resamples=5000, seed=1)
    ref = stats.bootstrap((cand, base), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                          method="percentile", n_resamples=5000, rng=np.random.default_rng(2))
    assert ours.diff == pytest.approx(float(np.mean(cand - base)))
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.004)
    t_p = stats.ttest_rel(cand, base).pvalue
    assert ours.p_value < 0.001 and t_p < 0.001
    again = bootstrap_mean_difference(cand, base, paired=True, n_resamples=5000, seed=1)
    assert again == ours  # reproducible from its seed


def test_bootstrap_p_values_under_null_and_degenerate_data() -> None:
    same = [0.2, 0.9, 0.4, 1.0, 0.0] * 10
    assert bootstrap_mean_difference(same, same, paired=True).p_value == 1.0
    dropped = [x - 0.1 for x in [0.5] * 30]
    shifted = bootstrap_mean_difference(dropped, [0.5] * 30, paired=True, n_resamples=999)
    assert shifted.diff == pytest.approx(-0.1) and shifted.p_value == pytest.approx(1 / 1000)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, 200), rng.uniform(0, 1, 180)
    ours = bootstrap_mean_difference(x, y, paired=False, n_resamples=4000, seed=5)
    welch = stats.ttest_ind(x, y, equal_var=False).pvalue
    assert ours.method == "bootstrap" and abs(ours.p_value - welch) < 0.05
    assert ours.ci_low < ours.diff < ours.ci_high


# --- redundancy -----------------------------------------------------------------------------
def test_redundant_pairs_flags_strong_correlations_only() -> None:
    rng = np.random.default_rng(11)
    units = [f"u{i}" for i in range(40)]
    a = rng.uniform(0, 1, 40)
    scores = {
        "tone": dict(zip(units, a, strict=True)),
        "tone-copy": dict(zip(units, np.clip(a + rng.normal(0, 0.03, 40), 0, 1), strict=True)),
        "inverse": dict(zip(units, 1 - a, strict=True)),
        "unrelated": dict(zip(units, rng.uniform(0, 1, 40), strict=True)),
        "constant": dict.fromkeys(units, 1.0),
        "few-units": {u: float(rng.uniform()) for u in units[:5]},
    }
    flagged = redundant_pairs(scores)
    names = {(p.evaluator_a, p.evaluator_b) for p in flagged}
    assert names == {("inverse", "tone"), ("inverse", "tone-copy"), ("tone", "tone-copy")}
    for p in flagged:
        common = sorted(set(scores[p.evaluator_a]) & set(scores[p.evaluator_b]))
        expected = np.corrcoef([scores[p.evaluator_a][u] for u in common], [scores[p.evaluator_b][u] for u in common])
        assert p.r == pytest.approx(expected[0, 1]) and p.n_units == 40
    all_pairs = correlations(scores)
    assert not any("constant" in (p.evaluator_a, p.evaluator_b) for p in all_pairs)
    assert not any("few-units" in (p.evaluator_a, p.evaluator_b) for p in all_pairs)
    assert len(all_pairs) == 6 and abs(all_pairs[0].r) >= abs(all_pairs[-1].r)
    assert redundant_pairs(scores, threshold=0.999) == [p for p in flagged if abs(p.r) > 0.999]


# --- pairing and repeats ---------------------------------------------------------------------
def _key(uid: str, content: str = "", **attrs: object) -> UnitKey:
    return UnitKey(uid, content, attrs)


def test_pairing_prefers_unit_id_then_content_then_item() -> None:
    base = [_key("a/1", "h1", task_id=1), _key("a/2", "h2", task_id=2), _key("a/3", "h3", task_id=3)]
    assert pair_units(base[:2], base).key == "unit"
    copies = [_key("b/1", "h1", task_id=1), _key("b/2", "h2", task_id=2)]
    assert pair_units(copies, base).pairs == {"b/1": "a/1", "b/2": "a/2"}
    assert pair_units(copies, base).key == "content"
    replay = [_key("c/1", "x1", task_id=1), _key("c/2", "x2", task_id=2), _key("c/3", "x3", task_id=3)]
    p = pair_units(replay, base)
    assert (p.key, p.attribute, p.n_pairs) == ("item", "task_id", 3)
    assert pair_units(replay, base, "none").key == "none"
    # a key seen twice on one side is no pair; under half matched -> independent samples
    twice = [_key("d/1", "y1", task_id=1), _key("d/1b", "y2", task_id=1), _key("d/4", "y3", task_id=4)]
    assert pair_units(twice, base).key == "none"
    with pytest.raises(UsageError):
        pair_units(twice, [_key("z", "q")], "item")
    with pytest.raises(UsageError):
        pair_units(replay, base, "bogus")  # type: ignore[arg-type]


def _ok(uid: str, score: float) -> EvaluationResult:
    return EvaluationResult(evaluator="e", evaluator_version="v", unit_id=uid, score=score,
                            verdict="pass" if score >= 0.5 else "fail")


def _bad(uid: str, status: str = "error") -> EvaluatorFailure:
    return EvaluatorFailure.model_validate({"evaluator": "e", "evaluator_version": "v", "unit_id": uid,
                                            "status": status, "error": "boom"})


def test_repeats_majority_tie_is_fail_and_flaky_units_are_listed() -> None:
    repeats: list[list[EvaluationResult | EvaluatorFailure]] = [
               [_ok("u1", 1.0), _ok("u2", 1.0), _ok("u3", 0.0), _bad("u4", "unscored"), _ok("u5", 1.0)],
               [_ok("u1", 1.0), _ok("u2", 0.0), _ok("u3", 0.0), _bad("u4", "error"), _ok("u5", 1.0)],
               [_ok("u1", 1.0), _ok("u2", 1.0), _ok("u3", 1.0), _bad("u4", "unscored"), _bad("u5")]]
    decided, flaky = combine_repeats(repeats)
    verdicts = [r.verdict if isinstance(r, EvaluationResult) else r.status for r in decided]
    assert verdicts == ["pass", "pass", "fail", "error", "pass"]
    assert decided[1].score == pytest.approx(2 / 3)  # type: ignore[union-attr]
    assert {f.unit_id: f.outcomes for f in flaky} == {
        "u2": ("pass", "fail", "pass"), "u3": ("fail", "fail", "pass"), "u4": ("unscored", "error", "unscored"),
        "u5": ("pass", "pass", "error")}
    tie, tie_flaky = combine_repeats([[_ok("u", 1.0)], [_ok("u", 0.0)]])
    assert tie[0].verdict == "fail" and tie_flaky[0].verdict == "fail"  # type: ignore[union-attr]
    single, none_flaky = combine_repeats([[_ok("u", 1.0)]])
    assert single[0] == _ok("u", 1.0) and none_flaky == []


def test_item_key_comes_from_the_root_span_when_the_unit_has_none(tmp_path: Path) -> None:
    """OTLP units carry the dataset item on their root span; replays pair by it through a real store."""
    store = Store(f"sqlite:///{tmp_path / 'assay.db'}")

    def unit(run: str, item: int) -> Unit:
        trace = hashlib.sha256(f"{run}/{item}".encode()).hexdigest()[:32]
        root = Span(trace_id=trace, span_id="a" * 16, name="agent", attributes={"dataset_item_id": f"q{item}"})
        child = Span(trace_id=trace, span_id="b" * 16, parent_span_id="a" * 16, name="llm",
                     attributes={"dataset_item_id": "not-the-root"})
        return Unit(unit_id=trace, kind="trace", source=f"otlp:{run}", spans=(root, child))

    store.add_units([unit(run, i) for run in ("main", "pr") for i in range(3)])
    main, pr = store.select_unit_ids("source:main"), store.select_unit_ids("source:pr")
    keys = {k.unit_id: k for k in unit_keys(store, main + pr)}
    assert {keys[u].attributes["dataset_item_id"] for u in pr} == {"q0", "q1", "q2"}
    pairing = pair_units([keys[u] for u in pr], [keys[u] for u in main])
    store.close()
    assert (pairing.key, pairing.attribute, pairing.n_pairs) == ("item", "dataset_item_id", 3)
    assert all(keys[c].attributes == keys[b].attributes for c, b in pairing.pairs.items())
