"""The CI gate: run the active evaluators on the candidate's units and compare with a baseline.

Per evaluator the gate fails for one of three reasons (:attr:`GateItem.failures`):

- ``"threshold"``: the candidate's pass rate is below the evaluator's ``min_pass_rate``;
- ``"regression"``: the pass rate is *significantly* below the baseline's -- p-value below
  ``alpha`` (default 0.05) and a drop larger than ``gate_margin`` (default 0.05, the drop
  the team tolerates) -- by McNemar's exact test on paired units, else Fisher's exact test
  (see :mod:`assay.suite.compare`); reported with the difference and its 95% CI;
- ``"errors"``: the share of units the evaluator could not score (unscored + errors, out of
  all candidate units) is above ``max_unscored`` (default 0.1): the gate cannot tell.

Beside the evaluators, optional checks fail the gate on a cost or latency regression against the
baseline (``max_cost_increase``, ``max_latency_increase``; :mod:`assay.suite.gate_cost`).

Exit codes (:data:`EXIT_CODES`): 0 pass; 1 a regression or threshold miss; 2 usage or
configuration error (raised as :class:`~assay.exceptions.UsageError`); 3 too many evaluator
errors (takes precedence over 1: the measurement itself is not trustworthy).

**Pairing.** Candidate and baseline are *paired* when they scored the same inputs. The pairing
key is, in this order under ``pair_by="auto"``: the unit id (the same units scored twice, e.g.
a new evaluator or judge version), the unit's content hash (the same trace ingested twice),
or the dataset item -- the first of the attributes :data:`ITEM_ATTRIBUTES` of the unit, or of its
root span (a replayed dataset: the candidate's run of task 7 pairs with the baseline's run of task 7). A key is used
when it matches at least half of the candidate's units; a key value found more than once on a
side is left out (not one pair). Unmatched units are left out of a paired test. Otherwise the
sides are compared as independent samples.

**Repeats.** With ``repeat=K`` every unit is scored K times; for an ``llm_judge`` each repeat
is its own judge call (the repeat index is part of the judge-cache key, so repeat 2 never
reads repeat 1's cached reply, while re-running the same gate reproduces its replies). A
unit's verdict is the **majority** of its scored repeats, a tie counting as **fail** (a gate
should not pass on a coin flip); its score is the mean of its scored repeats; a unit with no
scored repeat keeps its failure (error before unscored). A unit whose repeat outcomes
(pass / fail / unscored / error) disagree is **flaky** and listed in every output.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.scores import Lineage, NewScore, RunParams, add_scores, finish_run, get_run, new_run
from assay._store.selection import UnitSelection
from assay._store.store import IN_CHUNK
from assay._store.tables import ScoreRow, SpanRow, UnitRow
from assay.calibration.calibrate import evaluator_record
from assay.calibration.certified import judge_changes, refuse_judge_changes
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    content_version,
    evaluate_many,
    load_evaluators,
)
from assay.evaluators.lineage import effective_judge, judge_model_of, lineage_for, new_score
from assay.evaluators.runner import shared_steps
from assay.exceptions import NotFoundError, UsageError
from assay.models import CachedJudge, HasParameters, JudgeClient, JudgeReply
from assay.models.base import ChatMessage
from assay.settings import Settings
from assay.settings.run_kinds import RunKind
from assay.suite.compare import (
    RateComparison,
    RedundantPair,
    ScoreComparison,
    bootstrap_mean_difference,
    compare_independent_verdicts,
    compare_paired_verdicts,
    correlations,
)
from assay.suite.gate_cost import Metric, UsageCheck, check_limits, check_usage
from assay.traces.model import Unit

EXIT_CODES = {0: "pass", 1: "regression or threshold miss", 2: "usage or configuration error",
              3: "too many evaluator errors (unscored + errors above the tolerance), or a cost or latency check "
                 "that cannot tell"}
ITEM_ATTRIBUTES = ("dataset_item_id", "item_id", "task_id")
"""Unit attributes naming the dataset item a unit ran (first found wins), for pairing replays."""
REDUNDANCY_THRESHOLD = 0.8
CHUNK = 200
"""Units loaded, scored and written at a time by the gate (local executor)."""

PairBy = Literal["auto", "unit", "content", "item", "none"]
Failure = Literal["threshold", "regression", "errors"]
Result = EvaluationResult | EvaluatorFailure


class GateParams(RunParams):
    """What a gate run (kind ``gate``) or its baseline run (kind ``gate-baseline``) was asked, stored on the run."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["candidate", "baseline"] = "candidate"
    units: str = Field(description="the unit selection scored")
    baseline: str | None = Field(default=None, description="the baseline asked for: a run id or a unit selection")
    baseline_run: str | None = Field(default=None, description="the run holding the baseline's scores")
    repeat: int = 1
    alpha: float | None = None
    pair_by: str | None = None
    evaluators: dict[str, str] = Field(default_factory=dict, description="evaluator name -> version")
    judge_changes: dict[str, str] = Field(default_factory=dict, description="evaluator -> how its judge differed "
                                          "from the certified one (run with --allow-judge-change)")


class UnitKey(NamedTuple):
    """What pairing looks at in a unit."""

    unit_id: str
    content_hash: str
    attributes: Mapping[str, Any]


class Pairing(BaseModel):
    """How the candidate's units were matched with the baseline's.

    Attributes:
        key: ``"unit"``, ``"content"``, ``"item"`` or ``"none"`` (independent samples).
        attribute: the unit attribute used when ``key == "item"``.
        n_pairs: matched units; ``n_candidate``, ``n_baseline``: units on each side.
        pairs: candidate unit id -> baseline unit id.
    """

    model_config = ConfigDict(frozen=True)

    key: Literal["unit", "content", "item", "none"]
    attribute: str | None = None
    n_pairs: int
    n_candidate: int
    n_baseline: int
    pairs: dict[str, str]


class FlakyUnit(BaseModel):
    """A unit whose repeated scoring disagreed: ``outcomes`` per repeat, ``verdict`` as decided."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    unit_id: str
    outcomes: tuple[str, ...]
    verdict: str


class GateItem(BaseModel):
    """One evaluator's outcome in a gate run. Rates are in [0, 1] over scored units.

    Lineage: ``evaluator_version``, ``judge_model``, ``dataset_version`` (the ground-truth
    version it was calibrated on), and the same for the baseline's scores.
    """

    model_config = ConfigDict(frozen=True)

    evaluator: str
    evaluator_version: str
    judge_model: str | None
    dataset_version: int | None
    n: int
    n_unscored: int
    n_errors: int
    pass_rate: float | None
    min_pass_rate: float
    baseline_pass_rate: float | None
    passed: bool
    reasons: tuple[str, ...]
    n_units: int = 0
    n_not_applicable: int = 0
    mean_score: float | None = None
    error_share: float = 0.0
    failures: tuple[Failure, ...] = ()
    notes: tuple[str, ...] = ()
    comparison: RateComparison | None = None
    score_comparison: ScoreComparison | None = None
    baseline_evaluator_version: str | None = None
    baseline_judge_model: str | None = None
    baseline_dataset_version: int | None = None
    flaky_units: tuple[FlakyUnit, ...] = ()


class GateReport(BaseModel):
    """All evaluators' outcomes; see :data:`EXIT_CODES` for ``exit_code``."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    units: int
    baseline_run: str | None
    items: tuple[GateItem, ...]
    candidate: str = "all"
    baseline: str | None = None
    baseline_kind: Literal["run", "selection"] | None = None
    pairing: Pairing | None = None
    repeat: int = 1
    alpha: float = 0.05
    margin: float = 0.05
    max_unscored: float = 0.1
    correlations: tuple[RedundantPair, ...] = ()
    redundant: tuple[RedundantPair, ...] = ()
    redundancy_note: str | None = None
    usage_checks: tuple[UsageCheck, ...] = ()
    """The optional cost and latency checks (:mod:`assay.suite.gate_cost`)."""

    @property
    def passed(self) -> bool:
        return all(i.passed for i in self.items) and all(c.passed for c in self.usage_checks)

    @property
    def exit_code(self) -> int:
        if any("errors" in i.failures for i in self.items) or any(c.failure == "unknown" for c in self.usage_checks):
            return 3
        return 0 if self.passed else 1

    @property
    def flaky_units(self) -> tuple[FlakyUnit, ...]:
        return tuple(f for i in self.items for f in i.flaky_units)


class _Outcome(NamedTuple):
    status: str  # pass, fail, unscored, error, not_applicable
    score: float | None
    error: str = ""  # what went wrong, for unscored and error


class _Side(NamedTuple):
    """One side's decided outcomes per evaluator name, and the lineage of its scores."""

    outcomes: dict[str, dict[str, _Outcome]]
    lineage: dict[str, tuple[str, str | None, int | None]]  # evaluator -> (version, judge model, dataset version)
    unit_ids: list[str]


def active_evaluators(store: Store, folder: Path) -> list[tuple[EvaluatorDef, int | None]]:
    """Evaluators in ``folder`` whose exact version is active in the store, with the
    ground-truth dataset version each was calibrated on."""
    out: list[tuple[EvaluatorDef, int | None]] = []
    for defn in load_evaluators(folder) if folder.exists() else []:
        rec = evaluator_record(store, defn)
        if rec is not None and rec.status == "active":
            out.append((defn, rec.dataset_version))
    return out


# --- repeats ------------------------------------------------------------------------------
class _RepeatJudge:
    """A judge whose parameters carry the repeat index, so each repeat has its own cache key."""

    def __init__(self, inner: JudgeClient, repeat: int, base: Mapping[str, Any] | None = None) -> None:
        self.inner = inner
        self.repeat = repeat
        self.model_name = inner.model_name
        self.base = dict(base or {})

    @property
    def parameters(self) -> Mapping[str, Any]:
        base = self.inner.parameters if isinstance(self.inner, HasParameters) else self.base
        return {**base, "assay.gate.repeat": self.repeat}

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        return self.inner.complete(messages, json_schema)


def judge_for_repeat(judge: JudgeClient | None, repeat: int) -> JudgeClient | None:
    """The judge for repeat ``repeat`` (0-based): repeat 0 is ``judge`` itself; later repeats of a
    :class:`~assay.models.CachedJudge` get the repeat index in their cache key (a fresh model call,
    never the earlier repeat's reply). An uncached judge calls the model every time anyway."""
    if repeat == 0 or not isinstance(judge, CachedJudge):
        return judge
    return CachedJudge(_RepeatJudge(judge.inner, repeat, judge.defaults), judge.store, judge.defaults, judge.refresh)


def _outcome(r: Result) -> str:
    return r.verdict if isinstance(r, EvaluationResult) else r.status


def combine_repeats(repeats: Sequence[Sequence[Result]]) -> tuple[list[Result], list[FlakyUnit]]:
    """Decide each unit from its K repeated results (see the module docstring: majority, tie = fail).

    Args:
        repeats: K lists of results, each in the same unit order.

    Returns:
        one decided result per unit, and the flaky units (outcomes that disagree across repeats).
    """
    if len(repeats) == 1:  # one repeat decides itself: nothing to combine, nothing flaky
        return list(repeats[0]), []
    decided: list[Result] = []
    flaky: list[FlakyUnit] = []
    for results in zip(*repeats, strict=True):
        scored = [r for r in results if isinstance(r, EvaluationResult)]
        outcomes = tuple(_outcome(r) for r in results)
        if scored:
            passes = sum(r.verdict == "pass" for r in scored)
            verdict: Literal["pass", "fail"] = "pass" if passes * 2 > len(scored) else "fail"
            note = f" (repeats: {', '.join(outcomes)}; majority {verdict})" if len(results) > 1 else ""
            one: Result = scored[0].model_copy(update={
                "score": sum(r.score for r in scored) / len(scored), "verdict": verdict,
                "reason": scored[0].reason + note})
        else:
            one = next((r for r in results if _outcome(r) == "error"), results[0])
        decided.append(one)
        if len(set(outcomes)) > 1:
            flaky.append(FlakyUnit(evaluator=results[0].evaluator, unit_id=results[0].unit_id,
                                   outcomes=outcomes, verdict=_outcome(one)))
    return decided, flaky


def _score_chunk(store: Store, defn: EvaluatorDef, units: Sequence[Unit], judge: JudgeClient | None,
                 settings: Settings, repeat: int,
                 progress: Callable[[int], None] | None) -> tuple[list[Result], list[FlakyUnit]]:
    """Score loaded units ``repeat`` times (each repeat with its own judge cache key) and decide each unit;
    ``store`` serves the kinds that read it (an external evaluator's imported verdicts)."""
    runs = [evaluate_many(defn, units, judge_for_repeat(judge, r) if defn.uses_judge else None, settings.judge,
                          progress=progress, store=store) for r in range(repeat)]
    return combine_repeats(runs)


def _score_on_executor(store: Store, settings: Settings, defn: EvaluatorDef, unit_ids: list[str], repeat: int,
                       progress: Callable[[int], None] | None,
                       executor: tuple[str, str | None]) -> tuple[list[Result], list[FlakyUnit]]:
    """Score on Ray (each worker reads its batches from the store and builds its own judge from settings);
    repeats after the first bypass the judge cache."""
    from assay.suite.executor import score_with_executor

    def advance(done: int, _failed: int) -> None:
        if progress is not None:
            progress(done)

    kind, address = executor
    runs = [list(score_with_executor(store, defn, unit_ids, settings.judge, executor=kind, ray_address=address,
                                     progress=advance, record=False, use_cache=(r == 0)).results)
            for r in range(repeat)]
    return combine_repeats(runs)


# --- pairing ------------------------------------------------------------------------------
def unit_keys(store: Store, unit_ids: Sequence[str]) -> list[UnitKey]:
    """Pairing keys of stored units (unknown ids are skipped), read :data:`IN_CHUNK` units per query.

    A unit without an :data:`ITEM_ATTRIBUTES` attribute of its own takes it from its root span's
    attributes (OTLP traces carry it there, e.g. ``dataset_item_id`` set by the app; the earliest
    root span that has one).
    """
    ids = list(dict.fromkeys(unit_ids))
    out: list[UnitKey] = []
    with store.session() as s:
        for i in range(0, len(ids), IN_CHUNK):
            out.extend(_chunk_keys(s, ids[i:i + IN_CHUNK]))
    return out


def _chunk_keys(s: OrmSession, unit_ids: list[str]) -> list[UnitKey]:
    rows = list(s.execute(select(UnitRow.unit_id, UnitRow.content_hash, UnitRow.attributes)
                          .where(UnitRow.unit_id.in_(unit_ids)).order_by(UnitRow.unit_id)))
    bare = [r[0] for r in rows if not any(a in (r[2] or {}) for a in ITEM_ATTRIBUTES)]
    from_spans: dict[str, dict[str, Any]] = {}
    if bare:
        roots = s.execute(select(SpanRow.unit_id, SpanRow.data).where(
            SpanRow.unit_id.in_(bare), SpanRow.parent_span_id.is_(None)).order_by(SpanRow.unit_id, SpanRow.start_ns))
        for uid, data in roots:
            attrs = (data or {}).get("attributes") or {}
            if uid not in from_spans and any(a in attrs for a in ITEM_ATTRIBUTES):
                from_spans[uid] = {a: attrs[a] for a in ITEM_ATTRIBUTES if a in attrs}
    return [UnitKey(r[0], r[1] or "", {**from_spans.get(r[0], {}), **(r[2] or {})}) for r in rows]


def _item_attribute(units: Sequence[UnitKey]) -> str | None:
    for attr in ITEM_ATTRIBUTES:
        if units and all(u.attributes.get(attr) is not None for u in units):
            return attr
    return None


def _match(candidate: Sequence[UnitKey], baseline: Sequence[UnitKey],
           key: Callable[[UnitKey], str | None]) -> dict[str, str]:
    def unique(units: Sequence[UnitKey]) -> dict[str, str]:
        seen: dict[str, list[str]] = {}
        for u in units:
            k = key(u)
            if k:
                seen.setdefault(k, []).append(u.unit_id)
        return {k: ids[0] for k, ids in seen.items() if len(ids) == 1}

    cand, base = unique(candidate), unique(baseline)
    return {cand[k]: base[k] for k in cand.keys() & base.keys()}


def pair_units(candidate: Sequence[UnitKey], baseline: Sequence[UnitKey], pair_by: PairBy = "auto") -> Pairing:
    """Match candidate units with baseline units (see the module docstring for the keys).

    Raises:
        UsageError: an explicit ``pair_by`` that matches no unit, or an unknown ``pair_by``.
    """
    attr = _item_attribute(candidate) if pair_by in ("auto", "item") else None
    keys: dict[str, Callable[[UnitKey], str | None]] = {
        "unit": lambda u: u.unit_id, "content": lambda u: u.content_hash or None,
        "item": lambda u: None if attr is None or u.attributes.get(attr) is None else str(u.attributes[attr])}
    if pair_by not in (*keys, "auto", "none"):
        raise UsageError(f"unknown pairing {pair_by!r}: use auto, unit, content, item or none")
    sizes = {"n_candidate": len(candidate), "n_baseline": len(baseline)}
    tried = list(keys) if pair_by == "auto" else [pair_by] if pair_by != "none" else []
    for name in tried:
        pairs = _match(candidate, baseline, keys[name])
        if pair_by != "auto" and not pairs:
            raise UsageError(f"--pair-by {name} matched no candidate unit with a baseline unit")
        if pairs and (pair_by != "auto" or len(pairs) * 2 >= len(candidate)):
            return Pairing(key=name, attribute=attr if name == "item" else None,
                           n_pairs=len(pairs), pairs=pairs, **sizes)
    return Pairing(key="none", n_pairs=0, pairs={}, **sizes)


# --- sides --------------------------------------------------------------------------------
class _Recorder:
    """One side's decided results, written a chunk at a time (every evaluator's score rows of a chunk in one
    transaction, through the one writer) and kept only as each unit's outcome.

    The lineage's judge model is the first one a result named (None while only code decided, as a
    hybrid's code part may for a whole chunk), so every chunk records the same lineage as one write would.
    """

    def __init__(self, store: Store, settings: Settings, judges: _Judges, run: tuple[str, str],
                 suite: list[tuple[EvaluatorDef, int | None]], unit_ids: list[str]) -> None:
        self.store, self.settings, self.judges, self.run = store, settings, judges, run
        self.side = _Side({d.name: {} for d, _ in suite}, {}, unit_ids)
        self.flaky: dict[str, list[FlakyUnit]] = {d.name: [] for d, _ in suite}
        self._models: dict[str, str | None] = {}
        self._pending: list[tuple[Lineage, list[NewScore]]] = []

    def add(self, defn: EvaluatorDef, dataset_version: int | None, results: Sequence[Result],
            flaky: Sequence[FlakyUnit]) -> None:
        model = self._models[defn.name] = self._models.get(defn.name) or judge_model_of(results)
        lineage = lineage_for(defn, *self.run, dataset_version, model, self.judges.clients.get(defn.name),
                              self.settings.judge, judge_change=self.judges.changes.get(defn.name))
        self._pending.append((lineage, [new_score(r) for r in results]))
        self.side.outcomes[defn.name].update(
            {r.unit_id: _Outcome(_outcome(r), r.score, "") if isinstance(r, EvaluationResult)
             else _Outcome(r.status, None, r.error) for r in results})
        self.side.lineage[defn.name] = (lineage.evaluator_version, lineage.judge_model, dataset_version)
        self.flaky[defn.name].extend(flaky)

    def flush(self) -> None:
        with self.store.session() as s:
            for lineage, rows in self._pending:
                add_scores(s, lineage, rows)
        self._pending = []


def _run_side(store: Store, settings: Settings, judges: _Judges, run: tuple[str, str],
              suite: list[tuple[EvaluatorDef, int | None]], unit_ids: list[str], repeat: int,
              progress: Callable[[int], None] | None,
              executor: tuple[str, str | None] = ("local", None)) -> tuple[_Side, dict[str, list[FlakyUnit]]]:
    """Score the suite on ``unit_ids`` into ``run`` (id, kind); the decided results are the score rows.

    Locally the units are loaded :data:`CHUNK` at a time, every evaluator scores the loaded chunk, and the
    chunk's score rows are written before the next is loaded, so memory does not grow with the units.
    """
    rec = _Recorder(store, settings, judges, run, suite, unit_ids)
    if executor[0] != "local":
        for defn, ds_version in suite:
            results, flaky = _score_on_executor(store, settings, defn, unit_ids, repeat, progress, executor)
            for i in range(0, len(results), CHUNK):
                rec.add(defn, ds_version, results[i:i + CHUNK], flaky if i == 0 else ())
                rec.flush()
        return rec.side, rec.flaky
    with _cyclic_gc_paused():
        for i in range(0, len(unit_ids), CHUNK):
            units = store.units(unit_ids[i:i + CHUNK])
            with shared_steps():  # the evaluators read each unit's step timeline once
                for defn, ds_version in suite:
                    rec.add(defn, ds_version, *_score_chunk(store, defn, units, judges.clients.get(defn.name),
                                                            settings, repeat, progress))
            rec.flush()
    return rec.side, rec.flaky


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the gate scores locally; reference counting still frees
    every object as its last reference goes, and the previous state is restored on exit.

    Scoring allocates many objects that live for one chunk (spans, steps, results); the collector's
    passes over them, and over every imported module's objects, took about half of the gate's CPU time
    (2,000 stored units, two code evaluators: 2.5 s with it, 1.3 s without, the same peak RSS), while a
    whole gate run leaves only about 200 objects in reference cycles, collected once it is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stored_side(store: Store, run_id: str) -> _Side:
    """A previous run's scores, by evaluator name (one query on the run's scores).

    Raises:
        UsageError: the run holds no scores.
    """
    q = select(ScoreRow.unit_id, ScoreRow.evaluator_name, ScoreRow.evaluator_version, ScoreRow.judge_model,
               ScoreRow.dataset_version, ScoreRow.status, ScoreRow.score, ScoreRow.verdict, ScoreRow.reason
               ).where(ScoreRow.run_id == run_id).order_by(ScoreRow.id)
    with store.session() as s:
        rows = s.execute(q).all()  # columns only: no ORM object per score
    if not rows:
        raise UsageError(f"baseline run {run_id} holds no scores")
    side = _Side({}, {}, sorted({r.unit_id for r in rows}))
    for r in rows:
        status = r.verdict if r.status == "scored" and r.verdict else r.status
        side.outcomes.setdefault(r.evaluator_name, {})[r.unit_id] = _Outcome(status, r.score, r.reason or "")
        side.lineage[r.evaluator_name] = (r.evaluator_version, r.judge_model, r.dataset_version)
    return side


# --- per evaluator ------------------------------------------------------------------------
class _Policy(NamedTuple):
    alpha: float
    margin: float
    max_unscored: float


def _compare(cand: Mapping[str, _Outcome], base: Mapping[str, _Outcome],
             pairing: Pairing) -> tuple[RateComparison | None, ScoreComparison | None]:
    def scored(o: _Outcome | None) -> bool:
        return o is not None and o.status in ("pass", "fail")

    if pairing.key != "none":
        pairs = [(cand[c], base[b]) for c, b in sorted(pairing.pairs.items())
                 if scored(cand.get(c)) and scored(base.get(b))]
        if not pairs:
            return None, None
        rate = compare_paired_verdicts([(c.status == "pass", b.status == "pass") for c, b in pairs])
        return rate, bootstrap_mean_difference([c.score or 0.0 for c, _ in pairs],
                                               [b.score or 0.0 for _, b in pairs], paired=True)
    cs = [o for o in cand.values() if scored(o)]
    bs = [o for o in base.values() if scored(o)]
    if not cs or not bs:
        return None, None
    rate = compare_independent_verdicts([o.status == "pass" for o in cs], [o.status == "pass" for o in bs])
    return rate, bootstrap_mean_difference([o.score or 0.0 for o in cs], [o.score or 0.0 for o in bs], paired=False)


def _fmt_ci(c: RateComparison) -> str:
    return f"{c.diff:+.3f} (95% CI {c.ci_low:+.3f} to {c.ci_high:+.3f}; {c.method} p={c.p_value:.3g})"


def _judge_item(defn: EvaluatorDef, lineage: tuple[str, str | None, int | None], outcomes: Mapping[str, _Outcome],
                base: _Side | None, pairing: Pairing | None, policy: _Policy, flaky: Sequence[FlakyUnit],
                judge_change: str | None = None) -> GateItem:
    """Decide one evaluator: error share, threshold, and the comparison with the baseline."""
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in ("pass", "fail", "unscored", "error",
                                                                           "not_applicable")}
    n = counts["pass"] + counts["fail"]
    rate = counts["pass"] / n if n else None
    scores = [o.score for o in outcomes.values() if o.score is not None and o.status in ("pass", "fail")]
    share = (counts["unscored"] + counts["error"]) / len(outcomes) if outcomes else 0.0
    failures: list[Failure] = []
    reasons: list[str] = []
    notes: list[str] = []
    if rate is None or share > policy.max_unscored:
        failures.append("errors")
        lead = "no unit could be scored" if rate is None else "too many units not scored"
        ordered = sorted(outcomes.items())  # an error (the judge crashed, timed out) says more than an unscored
        example = (next(((u, o) for u, o in ordered if o.status == "error"), None)
                   or next(((u, o) for u, o in ordered if o.status == "unscored"), None))
        reasons.append(f"{lead}: {counts['unscored']} unscored + {counts['error']} errors of {len(outcomes)} "
                       f"({share:.1%}; tolerance {policy.max_unscored:.1%})"
                       + (f", e.g. {example[0]}: {example[1].error[:700]}" if example else ""))
    if rate is not None and rate < defn.min_pass_rate:
        failures.append("threshold")
        reasons.append(f"threshold miss: pass rate {rate:.3f} below threshold {defn.min_pass_rate:.3f}")
    comparison = score_cmp = None
    base_lineage: tuple[str | None, str | None, int | None] = (None, None, None)
    if base is not None and pairing is not None:
        base_out = base.outcomes.get(defn.name, {})
        base_lineage = base.lineage.get(defn.name, (None, None, None))
        comparison, score_cmp = _compare(outcomes, base_out, pairing)
        if comparison is None:
            scored = any(o.status in ("pass", "fail") for o in outcomes.values())
            notes.append("no baseline scores to compare with" if scored else
                         "no candidate unit was scored, so nothing to compare with the baseline")
        elif comparison.p_value < policy.alpha and comparison.diff < -policy.margin:
            failures.append("regression")
            reasons.append(f"significant regression: pass rate {comparison.candidate_rate:.3f} vs baseline "
                           f"{comparison.baseline_rate:.3f}, difference {_fmt_ci(comparison)}: p < alpha "
                           f"{policy.alpha:g} and a drop beyond the allowed {policy.margin:.3f}")
        elif comparison.diff < 0:
            notes.append(f"pass rate {comparison.candidate_rate:.3f} vs baseline {comparison.baseline_rate:.3f}: "
                         f"difference {_fmt_ci(comparison)}; not a regression (needs p < {policy.alpha:g} and a "
                         f"drop beyond {policy.margin:.3f})")
    if flaky:
        notes.append(f"{len(flaky)} flaky units (verdicts disagree across repeats)")
    if judge_change:
        notes.append(f"judge not the certified one (allowed by --allow-judge-change): {judge_change}")
    return GateItem(evaluator=defn.name, evaluator_version=lineage[0], judge_model=lineage[1],
                    dataset_version=lineage[2], n=n, n_unscored=counts["unscored"], n_errors=counts["error"],
                    pass_rate=rate, min_pass_rate=defn.min_pass_rate,
                    baseline_pass_rate=comparison.baseline_rate if comparison else None, passed=not failures,
                    reasons=tuple(reasons), n_units=len(outcomes), n_not_applicable=counts["not_applicable"],
                    mean_score=sum(scores) / len(scores) if scores else None, error_share=share,
                    failures=tuple(failures), notes=tuple(notes), comparison=comparison, score_comparison=score_cmp,
                    baseline_evaluator_version=base_lineage[0], baseline_judge_model=base_lineage[1],
                    baseline_dataset_version=base_lineage[2], flaky_units=tuple(flaky))


def _redundancy(side: _Side) -> tuple[tuple[RedundantPair, ...], tuple[RedundantPair, ...], str | None]:
    scores = {name: {u: o.score for u, o in outs.items() if o.score is not None and o.status in ("pass", "fail")}
              for name, outs in side.outcomes.items()}
    if len(scores) < 2:
        return (), (), "needs at least 2 active evaluators"
    pairs = correlations(scores)
    if not pairs:
        return (), (), "no pair of evaluators has enough common scored units with varying scores"
    return tuple(pairs), tuple(p for p in pairs if abs(p.r) > REDUNDANCY_THRESHOLD), None


# --- the gate -----------------------------------------------------------------------------
def _check_options(repeat: int, alpha: float, max_unscored: float, pair_by: str) -> None:
    if pair_by not in ("auto", "unit", "content", "item", "none"):
        raise UsageError(f"unknown --pair-by {pair_by!r}: use auto, unit, content, item or none")
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1 (exclusive), got {alpha}")
    if not 0 <= max_unscored <= 1:
        raise UsageError(f"--max-unscored must be between 0 and 1, got {max_unscored}")


class _Judges(NamedTuple):
    """The judge each evaluator of the suite scores with, and how it differs from the certified one (allowed)."""

    clients: dict[str, JudgeClient | None]
    changes: dict[str, str]


def _suite_judges(store: Store, settings: Settings, judge: JudgeClient | None,
                  suite: list[tuple[EvaluatorDef, int | None]], allow_change: bool) -> _Judges:
    """Each evaluator's effective judge, checked against its certificate (see :mod:`assay.calibration.certified`).

    Raises:
        JudgeChanged: a judge differs from the certified one and ``allow_change`` is False.
    """
    clients = {d.name: effective_judge(d, judge, settings.judge) for d, _ in suite}
    changes = judge_changes(store, [d for d, _ in suite], clients, settings.judge)
    return _Judges(clients, refuse_judge_changes(changes, allow_change))


def _baseline_side(store: Store, settings: Settings, judges: _Judges, baseline: str,
                   suite: list[tuple[EvaluatorDef, int | None]], repeat: int,
                   progress: Callable[[int], None] | None,
                   executor: tuple[str, str | None] = ("local", None)
                   ) -> tuple[_Side, str, Literal["run", "selection"]]:
    """The baseline: a stored run's scores, or the suite run now on a unit selection (a run of its own)."""
    try:
        get_run(store, baseline)
        return _stored_side(store, baseline), baseline, "run"
    except NotFoundError:
        pass
    try:
        selection = UnitSelection.parse(baseline)
    except UsageError as exc:
        raise UsageError(f"--baseline {baseline!r} is neither a run id nor a unit selection ({exc})") from exc
    ids = store.select_unit_ids(selection)
    if not ids:
        raise UsageError(f"baseline selection {baseline!r} matches no unit")
    run_id = new_run(store, RunKind.GATE_BASELINE, GateParams(role="baseline", units=str(selection), repeat=repeat,
                                                        evaluators={d.name: content_version(d) for d, _ in suite}))
    side, _ = _run_side(store, settings, judges, (run_id, RunKind.GATE_BASELINE), suite, ids, repeat, progress,
                        executor)
    finish_run(store, run_id, {"role": "baseline", "units": len(ids)})
    return side, run_id, "selection"


def run_gate(store: Store, settings: Settings, judge: JudgeClient | None,
             candidate: str | UnitSelection | None = None, baseline: str | None = None,
             progress: Callable[[int], None] | None = None, *, units: str | UnitSelection | None = None,
             repeat: int = 1, alpha: float | None = None, max_unscored: float | None = None,
             pair_by: PairBy = "auto", executor: str = "local", ray_address: str | None = None,
             max_cost_increase: float | None = None, max_latency_increase: float | None = None,
             allow_judge_change: bool = False) -> GateReport:
    """Run the active evaluators on the candidate's units and gate them (see the module docstring).

    Args:
        candidate: a :class:`~assay.suite.UnitSelection` or its text form (``"failed,source:pr"``),
            default all units; ``units`` is the older name of the same argument.
        baseline: a previous run id (its stored scores), or a unit selection (the suite is run
            on those units too, as a run of kind ``gate-baseline``); None compares with thresholds only.
        repeat: score every unit this many times (>= 1) and report flaky units.
        alpha: significance level in (0, 1) (default ``settings.gate_alpha``).
        max_unscored: tolerated share in [0, 1] of unscored + error units per evaluator
            (default ``settings.gate_max_unscored``).
        pair_by: ``auto``, ``unit``, ``content``, ``item`` or ``none`` (force independent samples).
        executor: ``local`` (this process) or ``ray`` (a Ray cluster, see :mod:`assay.suite.executor`);
            results are identical either way.
        ray_address: the Ray cluster to join when ``executor`` is ``ray``.
        max_cost_increase, max_latency_increase: also fail when the candidate's mean cost / latency per
            unit is significantly more than this share above the baseline's (0.2: 20%); None: not checked
            (see :mod:`assay.suite.gate_cost`; needs a baseline).
        allow_judge_change: score even with a judge other than the one an evaluator was certified with
            (recorded in the run's parameters and the scores' lineage).

    Raises:
        UsageError: a bad or empty selection, no units selected, no active evaluator, an unknown baseline,
            options out of range, a cost or latency limit without a baseline.
        JudgeChanged: an evaluator's judge is not the certified one (without ``allow_judge_change``).
    """
    selection = UnitSelection.parse(candidate if candidate is not None else units)
    policy = _Policy(settings.gate_alpha if alpha is None else alpha, settings.gate_margin,
                     settings.gate_max_unscored if max_unscored is None else max_unscored)
    _check_options(repeat, policy.alpha, policy.max_unscored, pair_by)
    limits: dict[Metric, float | None] = {"cost": max_cost_increase, "latency": max_latency_increase}
    check_limits(limits, baseline)
    unit_ids = store.select_unit_ids(selection)
    if not unit_ids:
        raise UsageError(f"no units match selection {str(selection)!r}")
    suite = active_evaluators(store, settings.evaluators_path())
    if not suite:
        raise UsageError(f"no active evaluator in {settings.evaluators_path()}: calibrate one first "
                         "(assay calibrate NAME), or activate it with --force REASON")
    judges = _suite_judges(store, settings, judge, suite, allow_judge_change)
    base_side, base_run, base_kind = (None, None, None) if baseline is None else _baseline_side(
        store, settings, judges, baseline, suite, repeat, progress, (executor, ray_address))
    pairing = None if base_side is None else pair_units(unit_keys(store, unit_ids),
                                                        unit_keys(store, base_side.unit_ids), pair_by)
    run_id = new_run(store, RunKind.GATE, GateParams(units=str(selection), baseline=baseline, baseline_run=base_run,
                                               repeat=repeat, alpha=policy.alpha, pair_by=pair_by,
                                               evaluators={d.name: content_version(d) for d, _ in suite},
                                               judge_changes=judges.changes))
    side, flaky = _run_side(store, settings, judges, (run_id, RunKind.GATE), suite, unit_ids, repeat, progress,
                            (executor, ray_address))
    items = tuple(_judge_item(defn, side.lineage[defn.name], side.outcomes[defn.name], base_side, pairing, policy,
                              flaky[defn.name], judges.changes.get(defn.name)) for defn, _ in suite)
    corr, redundant, note = _redundancy(side)
    usage = () if base_side is None else check_usage(
        store, unit_ids, base_side.unit_ids, pairing.pairs if pairing and pairing.key != "none" else None, limits,
        policy.alpha, settings.prices)
    report = GateReport(run_id=run_id, units=len(unit_ids), baseline_run=base_run, items=items, usage_checks=usage,
                        candidate=str(selection), baseline=baseline, baseline_kind=base_kind, pairing=pairing,
                        repeat=repeat, alpha=policy.alpha, margin=policy.margin, max_unscored=policy.max_unscored,
                        correlations=corr, redundant=redundant, redundancy_note=note)
    finish_run(store, run_id, {**report_json(report), "items": [i.model_dump(mode="json") for i in items]})
    return report


def report_json(report: GateReport) -> dict[str, Any]:
    """The report as JSON-ready data, with ``passed``, ``exit_code`` and its meaning, and the flaky units."""
    data = report.model_dump(mode="json")
    if data.get("pairing"):
        data["pairing"].pop("pairs", None)
    return {**data, "passed": report.passed, "exit_code": report.exit_code,
            "exit_meaning": EXIT_CODES[report.exit_code],
            "flaky_units": [f.model_dump(mode="json") for f in report.flaky_units]}
