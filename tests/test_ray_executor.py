"""Batch scoring and embedding on a real Ray cluster (head + a second node on loopback) against the
shared store: PostgreSQL when ``ASSAY_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one),
else a SQLite file. 2,000 real units (387 distinct real units, repeated under new ids: see
``tests/scale_fixtures.py``) with a ``code`` evaluator; an ``llm_judge`` on the local SmolLM2 model
over a small subset; one Ray worker killed mid-job. Each result is compared with the local executor.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from sqlalchemy import func, select
from typer.testing import CliRunner

from assay._store import Store
from assay._store.scores import RunParams, get_run, read_params
from assay._store.tables import EmbeddingRow, ScoreRow
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, save_evaluator
from assay.evaluators.definition import CodeSpec, CriterionRef
from assay.evaluators.lineage import write_results
from assay.exceptions import UsageError
from assay.settings import JudgeSettings
from assay.signatures.embeddings import embed_texts, remote_encoding
from assay.suite.executor import ScoreSummary, score_with_executor
from assay.suite.ray_executor import RayEncoder, split_limits
from tests.scale_fixtures import RayCluster, corpus, postgres_database, worker_pids

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PG_ENV = "ASSAY_TEST_POSTGRES_URL"
N_UNITS = 2000
N_JUDGE_UNITS = 24
CRITERION = CriterionRef(name="tool errors", text="Every tool call succeeds.")
CODE = EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use", criterion=CRITERION,
                    code=CodeSpec(callable="assay.evaluators.checks:no_tool_errors"))
JUDGE = EvaluatorDef(name="resolved", kind="llm_judge", dimension="outcome",
                     criterion=CriterionRef(name="resolved", text="The agent resolved the user's request."))
# Small prompts and replies so 2 x 24 SmolLM2 calls fit in about a minute on 2 busy cores;
# one thread per model (each Ray actor holds one CPU).
JUDGE_SETTINGS = JudgeSettings(max_prompt_chars=300, max_tokens=48, n_ctx=1024, n_threads=1)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if base:
        with postgres_database(base) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('ray') / 'assay.db'}"


@pytest.fixture(scope="module")
def store(store_url: str, data_dir: Path) -> Iterator[Store]:
    units, n_real = corpus(data_dir, N_UNITS)
    assert len({u.unit_id for u in units}) == N_UNITS and n_real >= 300
    st = Store(store_url)
    for i in range(0, len(units), 200):
        st.add_units(units[i:i + 200])
    yield st
    st.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """Head + one more node, 1 CPU each; ``ray stop --force`` in the finalizer, whatever happens."""
    c = RayCluster(nodes=2, cpus_per_node=1)
    try:
        c.start()
        ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        c.wait_for_cpus(ray)
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()


def by_unit(summary: ScoreSummary) -> dict[str, tuple[Any, ...]]:
    """What must match between executors: status, score, verdict and reason/error of each unit."""
    return {r.unit_id: (("scored", r.score, r.verdict, r.reason) if isinstance(r, EvaluationResult)
                        else (r.status, None, None, r.error)) for r in summary.results}


def rows_per_key(store: Store, run_id: str) -> Counter[tuple[str, str]]:
    with store.session() as s:
        return Counter(s.execute(select(ScoreRow.unit_id, ScoreRow.evaluator_version)
                                 .where(ScoreRow.run_id == run_id)).tuples())


def test_idempotent_writes_skip_a_retried_batch(store: Store) -> None:
    ids = store.select_unit_ids()[:30]
    first = score_with_executor(store, CODE, ids, JudgeSettings())
    assert first.written == 30 and first.n_units == 30
    # A retried batch (same run, same results) inserts nothing.
    lineage = read_params(get_run(store, first.run_id), RunParams).lineage[f"{CODE.name}@{first.evaluator_version}"]
    assert (lineage.run_kind, lineage.judge_model, lineage.dataset_version) == ("backfill", None, None)
    assert write_results(store, lineage, first.results) == 0
    # Re-running the job with the same run id resumes: nothing scored or written twice.
    again = score_with_executor(store, CODE, ids, JudgeSettings(), run_id=first.run_id)
    assert again.written == 0 and by_unit(again) == by_unit(first)
    assert set(rows_per_key(store, first.run_id).values()) == {1} and len(rows_per_key(store, first.run_id)) == 30


def test_code_evaluator_on_ray_matches_local_and_survives_a_killed_worker(store: Store, cluster: RayCluster) -> None:
    ids = store.select_unit_ids()
    assert len(ids) == N_UNITS
    local = score_with_executor(store, CODE, ids, JudgeSettings(), executor="local", batch_size=100)
    killed: list[int] = []
    seen: list[tuple[int, int]] = []

    def progress(done: int, failed: int) -> None:
        seen.append((done, failed))
        if not killed and sum(d for d, _ in seen) >= 200:  # mid-job: ~10% done
            pids = worker_pids("ScoringWorker")
            assert pids, "no Ray scoring worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    remote = score_with_executor(store, CODE, ids, JudgeSettings(), executor="ray", ray_address=cluster.address,
                                 progress=progress, batch_size=50, workers=2)
    assert killed and sum(d for d, _ in seen) == N_UNITS
    assert remote.workers == 2 and remote.executor == "ray"
    # Same scores, verdicts, reasons and failure counts as the local executor.
    assert by_unit(remote) == by_unit(local)
    assert remote.n_scored == local.n_scored and remote.count("unscored") == local.count("unscored")
    assert remote.count("error") == local.count("error") == 0
    assert 0 < remote.n_pass < N_UNITS  # real data: some runs have tool errors, most do not
    # Every unit scored exactly once in the Ray run, with the same lineage.
    counts = rows_per_key(store, remote.run_id)
    assert len(counts) == N_UNITS and set(counts.values()) == {1}
    assert set(counts) == {(u, content_version(CODE)) for u in ids}
    assert sum(f for _, f in seen) == len(remote.failures)


def test_llm_judge_on_ray_matches_local(store: Store, cluster: RayCluster) -> None:
    # Distinct real units only (no copies): spread over the sources.
    real = [u for u in store.select_unit_ids() if "#copy" not in u]
    ids = real[:: max(1, len(real) // N_JUDGE_UNITS)][:N_JUDGE_UNITS]
    local = score_with_executor(store, JUDGE, ids, JUDGE_SETTINGS, executor="local", use_cache=False, batch_size=6)
    remote = score_with_executor(store, JUDGE, ids, JUDGE_SETTINGS, executor="ray", ray_address=cluster.address,
                                 use_cache=False, batch_size=6, workers=2)
    assert remote.judge_model == local.judge_model == "smollm2-135m-instruct"
    assert by_unit(remote) == by_unit(local)
    assert (remote.n_scored, remote.count("unscored"), remote.count("error")) == (
        local.n_scored, local.count("unscored"), local.count("error"))
    assert remote.n_scored > 0
    counts = rows_per_key(store, remote.run_id)
    assert len(counts) == len(ids) and set(counts.values()) == {1}
    with store.session() as s:
        models = set(s.scalars(select(ScoreRow.judge_model).where(ScoreRow.run_id == remote.run_id)))
    assert models == {"smollm2-135m-instruct"}


def test_embeddings_on_ray_match_local_and_fill_the_cache(store: Store, cluster: RayCluster) -> None:
    from assay.signatures.keys import key_text

    ids = store.select_unit_ids("failed")[:48]
    texts = [key_text(u) for u in store.units(ids)]
    with tempfile.TemporaryDirectory() as d:
        local_store = Store(f"sqlite:///{d}/local.db")
        expected = embed_texts(local_store, ids, texts, "all-MiniLM-L6-v2")
        local_store.close()
    with remote_encoding(RayEncoder(cluster.address, batch_size=24)):
        got = embed_texts(store, ids, texts, "all-MiniLM-L6-v2")
    assert got.shape == expected.shape == (len(ids), 384)
    assert np.allclose(got, expected, atol=1e-5)
    with store.session() as s:
        cached = s.scalar(select(func.count()).select_from(EmbeddingRow).where(
            EmbeddingRow.model == "all-MiniLM-L6-v2", EmbeddingRow.unit_id.in_(ids)))
    assert cached == len(ids)
    # A second pass is served from the cache: the remote encoder is never called.
    with remote_encoding(lambda *a: pytest.fail("cached vectors were computed again")):
        again = embed_texts(store, ids, texts, "all-MiniLM-L6-v2")
    assert np.array_equal(again, got)


def test_score_cli_on_ray(store: Store, store_url: str, cluster: RayCluster, tmp_path: Path) -> None:
    from assay._cli.main import app

    (tmp_path / "evaluators").mkdir()
    save_evaluator(CODE, tmp_path / "evaluators" / "no-tool-errors.yaml")
    env = {"ASSAY_STORE_URL": store_url, "ASSAY_WORKSPACE": str(tmp_path)}
    runner = CliRunner()
    result = runner.invoke(app, ["score", "--evaluator", "no-tool-errors", "--units", "source:airline",
                                 "--executor", "ray", "--ray-address", cluster.address, "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    n = len(store.select_unit_ids("source:airline"))
    assert data["executor"] == "ray" and data["units"] == n > 0 and data["written"] == n
    assert data["scored"] + data["unscored"] + data["errors"] == n
    # Resuming the same run writes nothing new.
    again = runner.invoke(app, ["score", "-e", "no-tool-errors", "-u", "source:airline", "--run-id", data["run_id"],
                                "--json"], env={**env, "ASSAY_EXECUTOR": "ray", "ASSAY_RAY_ADDRESS": cluster.address})
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["written"] == 0
    bad = runner.invoke(app, ["score", "-e", "no-tool-errors", "--executor", "spark"], env=env)
    assert bad.exit_code == 2 and "local or ray" in bad.output


def test_split_limits_keeps_the_global_rate() -> None:
    per, n = split_limits(JudgeSettings(rpm=600, tpm=90_000), 4)
    assert (n, per.rpm, per.tpm) == (4, 150, 22_500) and n * per.rpm <= 600
    per, n = split_limits(JudgeSettings(rpm=3), 8)
    assert n == 3 and per.rpm == 1
    per, n = split_limits(JudgeSettings(), 8)
    assert n == 8 and per.rpm is None and per.tpm is None


def test_signatures_update_cli_embeds_on_ray(cluster: RayCluster, data_dir: Path, tmp_path: Path) -> None:
    from assay._cli.main import app
    from assay.signatures import failed_unit_ids
    from assay.traces.readers import read_file

    url = f"sqlite:///{tmp_path / 'sig.db'}"
    st = Store(url)
    st.add_units(read_file(data_dir / "agentrx" / "data" / "tau_retail" / "tau_dataset_failed.json").units)
    failed = failed_unit_ids(st)
    assert len(failed) >= 10
    env = {"ASSAY_STORE_URL": url, "ASSAY_WORKSPACE": str(tmp_path)}
    result = CliRunner().invoke(app, ["signatures", "update", "--executor", "ray", "--ray-address", cluster.address],
                                env=env)
    assert result.exit_code == 0, result.output
    assert f"embedded {len(failed)} (0 from cache)" in " ".join(result.stdout.split())
    with st.session() as s:
        cached = set(s.scalars(select(EmbeddingRow.unit_id).where(EmbeddingRow.model == "all-MiniLM-L6-v2")))
    assert cached == set(failed)
    st.close()


def test_score_without_recording_writes_nothing(store: Store, cluster: RayCluster) -> None:
    """``record=False`` (the gate's repeated passes): results come back, no run or score row is written."""
    ids = store.select_unit_ids("failed")[:120]
    with store.session() as s:
        before = s.scalar(select(func.count()).select_from(ScoreRow))
    remote = score_with_executor(store, CODE, ids, JudgeSettings(), executor="ray", ray_address=cluster.address,
                                 record=False, batch_size=40)
    local = score_with_executor(store, CODE, ids, JudgeSettings(), record=False)
    with store.session() as s:
        after = s.scalar(select(func.count()).select_from(ScoreRow))
    assert after == before and remote.written == local.written == 0 and remote.run_id == ""
    assert by_unit(remote) == by_unit(local) and remote.n_units == len(ids) > 0
    with pytest.raises(UsageError, match="in-memory"):
        score_with_executor(Store("sqlite:///:memory:"), CODE, ids[:1], JudgeSettings(), executor="ray",
                            ray_address=cluster.address)


def test_gate_cli_on_ray_matches_local(store: Store, store_url: str, cluster: RayCluster, tmp_path: Path) -> None:
    from assay._cli.main import app
    from assay.calibration.calibrate import save_evaluator_record

    (tmp_path / "evaluators").mkdir()
    save_evaluator(CODE, tmp_path / "evaluators" / "no-tool-errors.yaml")
    save_evaluator_record(store, CODE, "active", None, override_reason="test: gate on Ray")
    env = {"ASSAY_STORE_URL": store_url, "ASSAY_WORKSPACE": str(tmp_path)}
    runner = CliRunner()
    reports = {}
    for kind in ("local", "ray"):
        result = runner.invoke(app, ["gate", "--candidate", "source:airline", "--executor", kind,
                                     "--ray-address", cluster.address, "--json"], env=env)
        assert result.exit_code in (0, 1), result.output
        reports[kind] = json.loads(result.stdout)
    items = {k: [(i["evaluator"], i["n"], i["n_unscored"], i["pass_rate"]) for i in r["items"]]
             for k, r in reports.items()}
    assert items["ray"] == items["local"] and items["local"][0][1] > 0
    assert reports["ray"]["run_id"] != reports["local"]["run_id"]


def test_scoring_workers_open_the_store_with_the_drivers_signal_and_environment_settings(tmp_path: Path) -> None:
    """A failed score becomes a failure signal of the workspace's strength on a Ray actor too (not the default)."""
    from assay.settings import EnvironmentSettings
    from assay.settings.signals import SignalSettings
    from assay.suite.ray_executor import ScoringWorker

    signals = SignalSettings.model_validate({"evaluator": {"strength": 0.7}})
    assert signals != SignalSettings()
    given = {"signals": signals.model_dump(mode="json"), "environments": EnvironmentSettings(production="prod")
             .model_dump()}
    url = f"sqlite:///{tmp_path / 'assay.db'}"
    worker = ScoringWorker(url, CODE.model_dump(mode="json"), JudgeSettings().model_dump(), False, given)
    assert worker.store.signals == signals and worker.store.environments.production == "prod"
    plain = ScoringWorker(url, CODE.model_dump(mode="json"), JudgeSettings().model_dump(), False)
    assert plain.store.signals == SignalSettings() and plain.store.environments.production == "production"
    worker.store.close()
    plain.store.close()
