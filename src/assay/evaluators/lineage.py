"""Evaluator results into stored scores with lineage: the evaluator side of :mod:`assay._store.scores`.

Every writer of scores (gate, online worker, backfill, calibration, Ray executor) builds the
batch's :class:`~assay._store.scores.Lineage` with :func:`lineage_for` and writes it with
:func:`write_results` (or :func:`new_score` rows into :func:`~assay._store.scores.add_scores`
when more goes into the same transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import JsonValue

from assay._store.scores import Lineage, NewScore, ParseStatus, write_scores
from assay._store.store import Store
from assay.evaluators.definition import EvaluatorDef, content_version
from assay.evaluators.results import Evaluation, EvaluationResult
from assay.evaluators.runner import judge_settings_for
from assay.models.base import HasParameters, JudgeClient
from assay.models.cache import CachedJudge
from assay.models.factory import make_judge
from assay.models.identity import JudgeIdentity, judge_identity
from assay.settings import JudgeSettings


def judge_parameters(judge: JudgeClient | None, settings: JudgeSettings,
                     judge_change: str | None = None) -> dict[str, JsonValue]:
    """What shaped a judge's replies besides model name and prompt: ``provider``, the judge's own generation
    parameters (when it reports them, :class:`~assay.models.HasParameters`), ``max_prompt_chars``,
    ``max_system_chars``, the judge's ``fingerprint`` (:class:`~assay.models.JudgeIdentity`) and, when a run
    was allowed to use a judge other than the certified one, ``judge_change`` (what differs)."""
    own: dict[str, JsonValue] = dict(judge.parameters) if isinstance(judge, HasParameters) else {}
    out: dict[str, JsonValue] = {"provider": settings.provider, **own, "max_prompt_chars": settings.max_prompt_chars,
                                 "max_system_chars": settings.max_system_chars}
    if judge is not None:
        out["fingerprint"] = judge_identity(judge, settings).fingerprint
    if judge_change:
        out["judge_change"] = judge_change
    return out


def effective_judge(defn: EvaluatorDef, judge: JudgeClient | None,
                    settings: JudgeSettings | None) -> JudgeClient | None:
    """The judge ``defn`` scores with: None for a kind without one; ``judge`` when given, unless the evaluator's
    file pins another model (``judge.model``), then one built for that model (through ``judge``'s cache, when
    it has one); with no ``judge``, one built from ``settings`` with the evaluator's override.

    Raises:
        ConfigError, MissingDependency: the judge cannot be built (see :func:`assay.models.make_judge`).
    """
    if not defn.uses_judge:
        return None
    pinned = defn.judge_spec().model
    if judge is not None and (pinned is None or pinned == judge.model_name):
        return judge
    cache = judge if isinstance(judge, CachedJudge) else None
    return make_judge(judge_settings_for(defn, settings), cache.store if cache else None,
                      refresh=cache.refresh if cache else False)


def run_identity(defn: EvaluatorDef, judge: JudgeClient | None,
                 settings: JudgeSettings | None) -> JudgeIdentity | None:
    """The identity of the judge ``defn`` scores with (None for a kind without a judge).

    Raises:
        ConfigError, MissingDependency: as :func:`effective_judge`.
    """
    client = effective_judge(defn, judge, settings)
    return None if client is None else judge_identity(client, judge_settings_for(defn, settings))


def judge_model_of(results: Sequence[Evaluation]) -> str | None:
    """The judge model that produced results (the first one named; None for code checks)."""
    return next((r.judge_model for r in results if r.judge_model), None)


def lineage_for(defn: EvaluatorDef, run_id: str, run_kind: str, dataset_version: int | None,
                judge_model: str | None, judge: JudgeClient | None = None, settings: JudgeSettings | None = None,
                sample_rate: float | None = None, judge_change: str | None = None) -> Lineage:
    """The lineage of ``defn``'s scores in run ``run_id`` (of kind ``run_kind``).

    Args:
        dataset_version: the ground-truth dataset version ``defn`` was calibrated on (None: never).
        judge_model: the judge model that scores (None for a code check: no judge parameters then).
        judge, settings: the judge and the workspace judge settings (the evaluator's model override
            applied here), for :func:`judge_parameters`.
        sample_rate: the online sample rate (online runs only).
        judge_change: how the judge differs from the certified one, when the run was allowed to use it anyway.
    """
    params: dict[str, JsonValue] = {}
    if judge_model is not None:
        params = (judge_parameters(judge, judge_settings_for(defn, settings), judge_change) if defn.uses_judge
                  else {"provider": defn.kind})  # an external evaluator: its judge ran elsewhere
    return Lineage(evaluator=defn.name, evaluator_version=content_version(defn), judge_model=judge_model,
                   judge_parameters=params, dataset_version=dataset_version, run_id=run_id, run_kind=run_kind,
                   sample_rate=sample_rate)


def parse_status(r: Evaluation) -> ParseStatus:
    """How the result's verdict was read: ``repaired`` when the judge reply needed repair, ``ok`` for a score
    (or a not-applicable finding) read as given, ``failed`` when no verdict could be read (an unscored reply,
    an error)."""
    if isinstance(r, EvaluationResult):
        return "repaired" if r.repaired else "ok"
    return "ok" if r.status == "not_applicable" else "failed"


def new_score(r: Evaluation) -> NewScore:
    """The score row of one result: a failure keeps its status and its error as the reason, and no score."""
    if isinstance(r, EvaluationResult):
        return NewScore(unit_id=r.unit_id, evaluator=r.evaluator, evaluator_version=r.evaluator_version,
                        judge_model=r.judge_model, status="scored", score=r.score, verdict=r.verdict,
                        reason=r.reason, raw=r.raw, parse_status=parse_status(r))
    return NewScore(unit_id=r.unit_id, evaluator=r.evaluator, evaluator_version=r.evaluator_version,
                    judge_model=r.judge_model, status=r.status, score=None, verdict=None, reason=r.error, raw=r.raw,
                    parse_status=parse_status(r))


def write_results(store: Store, lineage: Lineage, results: Sequence[Evaluation]) -> int:
    """Write one evaluator version's results as score rows with ``lineage`` (idempotent per run, unit and
    evaluator version); returns the rows inserted.

    Raises:
        NotFoundError: the lineage's run does not exist.
        ValueError: a result of another evaluator version than the lineage's.
    """
    return write_scores(store, lineage, [new_score(r) for r in results])
