"""Where batch scoring runs: in this process (``local``, the default) or on a Ray cluster (``ray``).

Both executors read the units from the store, score them with the same evaluator code
(:func:`assay.evaluators.evaluate_many`), and write each batch's score rows with its lineage
(run id and kind, evaluator version, judge model and parameters, ground-truth dataset version)
through the one writer, :func:`assay._store.scores.add_scores`. Writes are idempotent, keyed by
the ``scores`` table's unique key (run id, unit id, evaluator version): ``INSERT ... ON CONFLICT
DO NOTHING`` on SQLite and PostgreSQL, so a retried batch (a Ray task that ran twice, a re-run of
``assay score --run-id ID``) never creates a second score.

    summary = score_with_executor(store, defn, unit_ids, settings.judge, run_id=None,
                                  dataset_version=None, executor="ray", ray_address="auto")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict
from sqlalchemy import select

from assay._store import Store
from assay._store.scores import RunParams, ensure_run, get_run
from assay._store.tables import ScoreRow
from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, content_version, evaluate_many
from assay.evaluators.lineage import judge_model_of, lineage_for, write_results
from assay.exceptions import UsageError
from assay.models import JudgeClient
from assay.settings import JudgeSettings
from assay.settings.run_kinds import RunKind

Result = EvaluationResult | EvaluatorFailure
ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")

BatchProgress = Callable[[int, int], None]
"""Called after each batch with ``(units done in the batch, failures in the batch)``."""

DEFAULT_BATCH_SIZE = 50


class ScoreParams(RunParams):
    """What a scoring job (a run of kind ``backfill``: ``assay score``) was asked, stored on the run."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    evaluator: str
    evaluator_version: str
    units: int
    executor: str


@dataclass
class ScoreSummary:
    """What one scoring job did.

    Attributes:
        run_id: the run the score rows belong to.
        evaluator, evaluator_version, judge_model: the lineage written on every row.
        executor: ``"local"`` or ``"ray"``; ``workers``: processes that scored (1 locally).
        results: one result per unit, in the order of the ``unit_ids`` asked for (units already
            scored in this run before, when resuming, are read back from the store).
        written: score rows inserted by this job (0 for a unit a previous attempt already wrote).
        seconds: wall time of the job (s).
    """

    run_id: str
    evaluator: str
    evaluator_version: str
    judge_model: str | None
    executor: str
    workers: int
    results: list[Result] = field(default_factory=list)
    written: int = 0
    seconds: float = 0.0

    @property
    def n_units(self) -> int:
        return len(self.results)

    @property
    def n_scored(self) -> int:
        return sum(isinstance(r, EvaluationResult) for r in self.results)

    @property
    def n_pass(self) -> int:
        return sum(isinstance(r, EvaluationResult) and r.verdict == "pass" for r in self.results)

    def count(self, status: str) -> int:
        """Failures with this status (``unscored``, ``error``, ``not_applicable``)."""
        return sum(isinstance(r, EvaluatorFailure) and r.status == status for r in self.results)

    @property
    def failures(self) -> list[EvaluatorFailure]:
        """The units that got no score, each with its status and error, as a local run reports them."""
        return [r for r in self.results if isinstance(r, EvaluatorFailure)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-unit results except the failures)."""
        return {"run_id": self.run_id, "evaluator": self.evaluator, "evaluator_version": self.evaluator_version,
                "judge_model": self.judge_model, "executor": self.executor, "workers": self.workers,
                "units": self.n_units, "scored": self.n_scored, "pass": self.n_pass,
                "unscored": self.count("unscored"), "errors": self.count("error"),
                "not_applicable": self.count("not_applicable"), "written": self.written,
                "seconds": round(self.seconds, 3),
                "units_per_s": round(self.n_units / self.seconds, 2) if self.seconds > 0 else None,
                "failures": [{"unit_id": f.unit_id, "status": f.status, "error": f.error} for f in self.failures]}


def stored_results(store: Store, run_id: str, evaluator_version: str, unit_ids: Sequence[str]) -> dict[str, Result]:
    """Results already written in a run for this evaluator version (for resuming), by unit id."""
    out: dict[str, Result] = {}
    wanted = set(unit_ids)
    with store.session() as s:
        rows = s.scalars(select(ScoreRow).where(ScoreRow.run_id == run_id,
                                                ScoreRow.evaluator_version == evaluator_version))
        for row in rows:
            if row.unit_id not in wanted:
                continue
            if row.status == "scored":
                out[row.unit_id] = EvaluationResult(
                    evaluator=row.evaluator_name, evaluator_version=row.evaluator_version, unit_id=row.unit_id,
                    judge_model=row.judge_model, score=row.score or 0.0, verdict=row.verdict or "fail",
                    reason=row.reason, raw=row.raw)
            else:
                out[row.unit_id] = EvaluatorFailure(
                    evaluator=row.evaluator_name, evaluator_version=row.evaluator_version, unit_id=row.unit_id,
                    judge_model=row.judge_model, status=row.status,
                    error=row.reason, raw=row.raw)
    return out


def batches(items: Sequence[str], size: int) -> list[list[str]]:
    """``items`` cut into consecutive lists of at most ``size`` (>= 1)."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def score_batch(store: Store, defn: EvaluatorDef, unit_ids: list[str], judge: JudgeClient | None,
                settings: JudgeSettings, run: tuple[str, str] | None,
                dataset_version: int | None) -> tuple[list[Result], int]:
    """Read, score and write one batch (what both executors run per batch): ``(results, rows written)``.

    ``run`` is the (id, kind) of the run to write into, with the batch's lineage; None scores
    without writing (0 rows)."""
    results = list(evaluate_many(defn, store.units(unit_ids), judge, settings, store=store))
    if run is None:
        return results, 0
    lineage = lineage_for(defn, run[0], run[1], dataset_version, judge_model_of(results), judge, settings)
    return results, write_results(store, lineage, results)


def _local(store: Store, defn: EvaluatorDef, todo: list[str], settings: JudgeSettings, run: tuple[str, str] | None,
           dataset_version: int | None, batch_size: int, use_cache: bool, judge: JudgeClient | None,
           progress: BatchProgress | None) -> tuple[list[Result], int]:
    from assay.models import make_judge

    if defn.uses_judge and judge is None:
        from assay.evaluators.runner import judge_settings_for

        judge = make_judge(judge_settings_for(defn, settings), store if use_cache else None)
    results: list[Result] = []
    written = 0
    for batch in batches(todo, batch_size):
        got, n = score_batch(store, defn, batch, judge if defn.uses_judge else None, settings, run,
                             dataset_version)
        results.extend(got)
        written += n
        if progress is not None:
            progress(len(got), sum(isinstance(r, EvaluatorFailure) for r in got))
    return results, written


def score_with_executor(store: Store, defn: EvaluatorDef, unit_ids: Sequence[str], judge_settings: JudgeSettings,
                        run_id: str | None = None, dataset_version: int | None = None,
                        executor: str = "local", ray_address: str | None = None,
                        progress: BatchProgress | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                        workers: int | None = None, use_cache: bool = True,
                        judge: JudgeClient | None = None, record: bool = True) -> ScoreSummary:
    """Score ``unit_ids`` with one evaluator on the chosen executor and write the score rows.

    Args:
        store: the shared store (on Ray, its URL is passed to the workers, which open it
            themselves: a SQLite file works on one machine, PostgreSQL across machines).
        defn: the evaluator.
        unit_ids: the units to score (ids in the store).
        judge_settings: judge settings; each Ray worker builds its own judge from them, with
            ``rpm``/``tpm`` divided by the number of workers (see :mod:`assay.suite.ray_executor`).
        run_id: the run to write into; None creates a ``backfill-...`` run. A run that already has
            rows for some of these units (an interrupted job) is resumed: those units are not scored again.
        dataset_version: the ground-truth dataset version recorded on each row (lineage).
        executor: ``"local"`` (this process) or ``"ray"``.
        ray_address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            None starts or joins as ``ray.init()`` does.
        progress: called after each batch with (units done, failures among them).
        batch_size: units per batch (>= 1); a Ray task scores one batch.
        workers: Ray actors (default: the cluster's CPUs, at most the number of batches). Ignored locally.
        use_cache: judge replies through the store's judge cache (as the CLI does).
        judge: a ready judge for the local executor (tests, the gate); None builds one from settings.
        record: write score rows (default). False only scores and returns the results (no run is
            created or resumed, ``run_id`` of the summary is ``run_id`` or ""): for callers that
            combine several passes before writing, as the gate's ``--repeat`` does.

    Returns:
        :class:`ScoreSummary` with one result per unit in ``unit_ids`` order.

    Raises:
        UsageError: unknown executor, or no units.
        MissingDependency: ``ray`` is not installed (``pip install 'assay[ray]'``).
        ConfigError: the evaluator's check or prompt cannot be loaded.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    ids = list(dict.fromkeys(unit_ids))
    if not ids:
        raise UsageError("no units to score")
    version = content_version(defn)
    started = time.perf_counter()
    target: tuple[str, str] | None = None
    done: dict[str, Result] = {}
    if record:
        params = ScoreParams(evaluator=defn.name, evaluator_version=version, units=len(ids), executor=executor)
        target_id = ensure_run(store, run_id, RunKind.BACKFILL, params)
        target = (target_id, get_run(store, target_id).kind)
        done = stored_results(store, target_id, version, ids)
    todo = [u for u in ids if u not in done]
    if progress is not None and done:
        progress(len(done), sum(isinstance(r, EvaluatorFailure) for r in done.values()))
    n_workers = 1
    fresh: list[Result] = []
    written = 0
    if todo and executor == "local":
        fresh, written = _local(store, defn, todo, judge_settings, target, dataset_version, batch_size, use_cache,
                                judge, progress)
    elif todo:
        from assay.suite.ray_executor import score_on_ray

        fresh, written, n_workers = score_on_ray(store.url, defn, todo, judge_settings, target, dataset_version,
                                                 ray_address=ray_address, batch_size=batch_size, workers=workers,
                                                 use_cache=use_cache, progress=progress,
                                                 store_settings={"signals": store.signals.model_dump(mode="json"),
                                                                 "environments": store.environments.model_dump()})
    by_id = {**done, **{r.unit_id: r for r in fresh}}
    results = [by_id[u] for u in ids]
    judge_model = next((r.judge_model for r in results if r.judge_model), None)
    return ScoreSummary(run_id=target[0] if target else run_id or "", evaluator=defn.name, evaluator_version=version,
                        judge_model=judge_model, executor=executor, workers=n_workers, results=results, written=written,
                        seconds=time.perf_counter() - started)
