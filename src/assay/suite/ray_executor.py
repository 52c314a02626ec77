"""Batch scoring and embedding on a Ray cluster (https://docs.ray.io), the ``ray`` executor.

Install with ``pip install 'assay[ray]'``; ``ray`` is imported only when this executor is used.

Scoring: the driver cuts the unit ids into batches and hands them to :class:`ScoringWorker`
actors (one CPU each). Only the store URL, the evaluator definition and the judge settings
travel to a worker, never units or a store object: each actor opens the shared store itself
(PostgreSQL across machines; a SQLite file works on one machine), builds its own judge client
from the settings, reads its batch of units, scores it with
:func:`assay.evaluators.evaluate_many` (the same code as the local executor, with the
judge's ``concurrency`` threads per actor) and writes the rows with their lineage through
:func:`assay._store.scores.add_scores` (``ON CONFLICT DO NOTHING`` on (run, unit, evaluator
version)). Actors are restartable (``max_restarts``) and their tasks are retried
(``max_task_retries``): a worker process that dies mid-batch is replaced and the batch runs
again; rows the dead attempt had already committed are not written twice.

The global requests/min and tokens/min limits are held by division: with ``n`` actors each
one's :class:`~assay.models.runtime.ResilientJudge` gets ``rpm // n`` and ``tpm // n`` (and
``n`` is capped at ``rpm`` so every actor may send at least one request a minute). The sum
over the cluster never exceeds the configured limit; an idle actor's share is not lent to
the others, so a cluster can run below the limit near the end of a job.

Embedding: :func:`embed_on_ray` encodes texts in Ray tasks of ``batch_size`` texts; each task
loads the sentence-transformers model once per worker process, writes its vectors to the
store's ``embeddings`` cache table and returns them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.evaluators import EvaluationResult, EvaluatorDef, EvaluatorFailure, content_version
from assay.exceptions import MissingDependency, UsageError
from assay.settings import JudgeSettings

if TYPE_CHECKING:
    from assay.suite.executor import BatchProgress, Result

RAY_HINT = "pip install 'assay[ray]'"
MAX_RESTARTS = 3
"""Times a dead scoring actor is restarted, and times one of its batches is retried."""
IN_FLIGHT_PER_ACTOR = 2
"""Batches queued on each actor at once (one running, one waiting), to hide the round trip."""


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        MissingDependency: ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", hint=RAY_HINT) from None
    return ray


def connect(ray_address: str | None) -> bool:
    """Join (or, without an address, start) Ray unless this process is already connected.

    Returns:
        True when this call connected (the caller shuts Ray down afterwards).

    Raises:
        UsageError: a ``HOST:PORT`` address that does not accept a TCP connection (checked before
            Ray is imported, see :func:`check_reachable`).
    """
    check_reachable(ray_address)
    ray = import_ray()
    if ray.is_initialized():
        return False
    import logging

    ray.init(address=ray_address, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=True, include_dashboard=False if ray_address is None else None)
    return True


def check_reachable(ray_address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast when a ``HOST:PORT`` Ray address does not accept a TCP connection.

    ``ray.init`` on an unreachable GCS address retries for minutes and ignores SIGTERM, so the
    address is probed first: one TCP connect with a ``timeout_s`` (s) limit. ``None``, ``"auto"``,
    ``"local"``, ``ray://`` client addresses and addresses without a numeric port are left to Ray.

    Raises:
        UsageError: ``cannot reach Ray at HOST:PORT`` (refused, timed out, unknown host).
    """
    import socket

    if not ray_address or ray_address in ("auto", "local") or "://" in ray_address:
        return
    host, sep, port = ray_address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, OverflowError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or str(exc))
        raise UsageError(f"cannot reach Ray at {ray_address}: {reason} (is the head node running? "
                         "check --ray-address / ASSAY_RAY_ADDRESS)") from exc


def split_limits(settings: JudgeSettings, workers: int) -> tuple[JudgeSettings, int]:
    """Per-actor judge settings holding the global rpm/tpm: ``(settings with rpm//n, tpm//n; n)``.

    ``n`` is ``workers`` capped at ``rpm`` (each actor needs at least 1 request/min).
    """
    n = max(1, workers)
    if settings.rpm is not None:
        n = min(n, settings.rpm)
    update: dict[str, Any] = {}
    if settings.rpm is not None:
        update["rpm"] = max(1, settings.rpm // n)
    if settings.tpm is not None:
        update["tpm"] = max(1, settings.tpm // n)
    return settings.model_copy(update=update), n


class ScoringWorker:
    """One Ray actor's scoring state: its own store connection and judge client.

    Args:
        store_url: SQLAlchemy URL of the shared store.
        definition: the evaluator definition (``EvaluatorDef.model_dump(mode="json")``).
        settings: judge settings (``JudgeSettings.model_dump()``), limits already divided.
        use_cache: route judge calls through the store's judge cache.
        store_settings: the driver store's ``{"signals": ..., "environments": ...}`` settings (model dumps), so a
            failed score becomes a failure signal of the workspace's strength, as on the driver (None: defaults).
    """

    def __init__(self, store_url: str, definition: dict[str, Any], settings: dict[str, Any], use_cache: bool,
                 store_settings: dict[str, Any] | None = None) -> None:
        from assay._store import Store
        from assay.evaluators.runner import judge_settings_for
        from assay.models import make_judge
        from assay.settings import EnvironmentSettings
        from assay.settings.signals import SignalSettings

        given = store_settings or {}
        self.store = Store(store_url, SignalSettings.model_validate(given.get("signals") or {}),
                           EnvironmentSettings.model_validate(given.get("environments") or {}))
        self.defn = EvaluatorDef.model_validate(definition)
        self.settings = JudgeSettings.model_validate(settings)
        self.judge = (make_judge(judge_settings_for(self.defn, self.settings), self.store if use_cache else None)
                      if self.defn.uses_judge else None)

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def score(self, unit_ids: list[str], run: tuple[str, str] | None,
              dataset_version: int | None) -> tuple[list[Result], int]:
        """Read, score and write one batch into ``run`` (id, kind): ``(results in unit_ids order, rows
        inserted)``; run None: no write."""
        from assay.suite.executor import score_batch

        return score_batch(self.store, self.defn, unit_ids, self.judge, self.settings, run, dataset_version)


def _failures(defn: EvaluatorDef, unit_ids: list[str], error: str) -> list[Result]:
    version = content_version(defn)
    return [EvaluatorFailure(evaluator=defn.name, evaluator_version=version, unit_id=u, status="error",
                             error=error) for u in unit_ids]


def score_on_ray(store_url: str, defn: EvaluatorDef, unit_ids: Sequence[str], settings: JudgeSettings,
                 run: tuple[str, str] | None, dataset_version: int | None, *, ray_address: str | None = None,
                 batch_size: int = 50, workers: int | None = None, use_cache: bool = True,
                 progress: BatchProgress | None = None,
                 store_settings: dict[str, Any] | None = None) -> tuple[list[Result], int, int]:
    """Score units on Ray actors (see the module docstring); what ``executor="ray"`` runs.

    Args:
        store_url: the shared store's URL (opened by every actor).
        run: the (id, kind) of the run the rows go to; None scores without writing.
        workers: actors to start (default: the cluster's CPUs), at most one per batch.
        progress: called after each batch with (units done, failures among them).
        store_settings: the driver store's signal and environment settings, for every actor's store
            (see :class:`ScoringWorker`).

    Returns:
        ``(results in unit_ids order, rows inserted, actors used)``. A batch whose actor
        failed for good (after ``MAX_RESTARTS`` retries) gives status ``error`` results for its units.

    Raises:
        MissingDependency: ray is not installed.
        UsageError: no units, an in-memory store, a cluster without CPUs, or an unreachable
            ``HOST:PORT`` address.
    """
    from assay.suite.executor import batches

    check_reachable(ray_address)  # before importing Ray: an unreachable address fails in seconds, not minutes
    ray = import_ray()
    work = batches(list(unit_ids), batch_size)
    if not work:
        raise UsageError("no units to score")
    if store_url.startswith("sqlite://") and (":memory:" in store_url or store_url == "sqlite://"):
        raise UsageError("--executor ray needs a store the Ray workers can open (PostgreSQL, or a SQLite file "
                         "on a one-machine cluster), not an in-memory SQLite database")
    if (code := defn.code_spec()) is not None:  # a check that cannot be imported fails here, not in every actor
        from assay.evaluators.code import resolve_callable

        resolve_callable(code.callable)
    owned = connect(ray_address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < 1:
            raise UsageError(f"the Ray cluster at {ray_address or 'local'} has no CPU to run scoring actors on")
        per_actor, n = split_limits(settings, min(workers or cpus, len(work)))
        actor_cls = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(ScoringWorker)
        actors = [actor_cls.remote(store_url, defn.model_dump(mode="json"), per_actor.model_dump(), use_cache,
                                   store_settings) for _ in range(n)]
        results: dict[int, list[Result]] = {}
        written = 0
        pending: dict[Any, tuple[int, int]] = {}  # object ref -> (batch index, actor index)
        queue = list(range(len(work)))

        def submit(actor_index: int) -> None:
            if queue:
                i = queue.pop(0)
                ref = actors[actor_index].score.remote(work[i], run, dataset_version)
                pending[ref] = (i, actor_index)

        for a in range(n):
            for _ in range(IN_FLIGHT_PER_ACTOR):
                submit(a)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, a = pending.pop(ready[0])
            try:
                got, inserted = ray.get(ready[0])
            except (UsageError, MissingDependency):
                raise
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, UsageError | MissingDependency):
                    raise cause from None
                got, inserted = _failures(defn, work[i], f"worker error: {type(cause).__name__}: {cause}"), 0
            except ray.exceptions.RayError as exc:
                got, inserted = _failures(defn, work[i], f"worker lost: {type(exc).__name__}"), 0
            results[i] = got
            written += inserted
            if progress is not None:
                progress(len(got), sum(not isinstance(r, EvaluationResult) for r in got))
            submit(a)
        for actor in actors:
            ray.kill(actor)
        return [r for i in range(len(work)) for r in results[i]], written, n
    finally:
        if owned:
            ray.shutdown()


# --- embeddings --------------------------------------------------------------------------

_ENCODERS: dict[str, Any] = {}


def _embed_batch(store_url: str, model_name: str, unit_ids: list[str], texts: list[str],
                 digests: list[str]) -> np.ndarray:
    """One Ray task: encode ``texts`` (model loaded once per worker process) and cache them in the store."""
    from assay._store import Store
    from assay.signatures.embeddings import _BATCH, _save, load_encoder

    encoder = _ENCODERS.get(model_name)
    if encoder is None:
        encoder = _ENCODERS[model_name] = load_encoder(model_name)
    vectors = np.array(encoder.encode(texts, batch_size=_BATCH, normalize_embeddings=True, show_progress_bar=False,
                                      convert_to_numpy=True), dtype=np.float32)
    store = Store(store_url)
    try:
        _save(store, model_name, list(zip(unit_ids, digests, vectors, strict=True)))
    finally:
        store.close()
    return vectors


class RayEncoder:
    """Encode texts on Ray for :func:`assay.signatures.embeddings.remote_encoding`.

    Args:
        ray_address: the cluster to join (None: start or join as ``ray.init()`` does).
        batch_size: texts per Ray task.
    """

    def __init__(self, ray_address: str | None = None, batch_size: int = 256) -> None:
        self.ray_address = ray_address
        self.batch_size = max(1, batch_size)

    def __call__(self, store_url: str, model_name: str, unit_ids: list[str], texts: list[str], digests: list[str],
                 progress: Any = None) -> np.ndarray:
        """Encode and cache; returns float32 ``(len(texts), dim)`` in input order."""
        return embed_on_ray(store_url, model_name, unit_ids, texts, digests, ray_address=self.ray_address,
                            batch_size=self.batch_size, progress=progress)


def embed_on_ray(store_url: str, model_name: str, unit_ids: list[str], texts: list[str], digests: list[str], *,
                 ray_address: str | None = None, batch_size: int = 256, progress: Any = None) -> np.ndarray:
    """Encode texts in Ray tasks of ``batch_size`` texts, each writing its vectors to the embedding cache.

    Returns:
        float32 array ``(len(texts), dim)``, rows L2-normalized, in input order.

    Raises:
        MissingDependency: ray (or, in the workers, sentence-transformers) is not installed.
    """
    ray = import_ray()
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    owned = connect(ray_address)
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RESTARTS)(_embed_batch)
        refs = {}
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            refs[task.remote(store_url, model_name, unit_ids[start:end], texts[start:end], digests[start:end])] = start
        parts: dict[int, np.ndarray] = {}
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            try:
                vectors = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            parts[refs[ready[0]]] = vectors
            if progress is not None:
                progress(len(vectors))
        return np.vstack([parts[k] for k in sorted(parts)])
    finally:
        if owned:
            ray.shutdown()
