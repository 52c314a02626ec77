"""``assay doctor`` for real: a healthy workspace passes; a broken store, a missing model and an unreachable
judge each fail with the problem and the fix named (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assay._store.store import Store
from assay.settings import load_settings

from .conftest import ROOT


def _doctor(ws: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, str]]]:
    import os

    proc = subprocess.run([sys.executable, "-m", "assay._cli", "--workspace", str(ws), "doctor", "--json", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})
    report = json.loads(proc.stdout)
    assert report["ok"] is (proc.returncode == 0)
    return proc.returncode, {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("doctor")
    Store(load_settings(ws).resolved_store_url()).close()
    return ws


def test_healthy_workspace_passes_every_check_that_applies(workspace: Path) -> None:
    code, checks = _doctor(workspace)
    assert code == 0, checks
    assert checks["store"]["status"] == "ok" and "journal_mode=wal" in checks["store"]["measured"]
    assert checks["embedding model"]["status"] == "ok" and "384 dims" in checks["embedding model"]["measured"]
    judge = checks["local judge"]
    assert judge["status"] == "ok" and "tokens/s" in judge["measured"]
    prompt_tokens = int(judge["measured"].split(" prompt tokens")[0].rsplit(" ", 1)[1])
    assert prompt_tokens >= 600
    assert "AMX" not in judge["measured"] and "AVX2" in judge["measured"]  # the portable build
    assert checks["API judge"]["status"] == "skip"


def test_broken_store_missing_models_each_fail_with_their_fix(workspace: Path) -> None:
    env = {"ASSAY_STORE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none",
           "ASSAY_JUDGE__MODEL_PATH": "/nonexistent/judge.gguf",
           "ASSAY_EMBEDDING_MODEL": "/nonexistent/minilm"}
    code, checks = _doctor(workspace, env=env)
    assert code == 1
    assert checks["store"]["status"] == "fail" and "127.0.0.1:9" in checks["store"]["measured"]
    assert "store_url" in checks["store"]["fix"]
    assert checks["local judge"]["status"] == "fail" and "/nonexistent/judge.gguf" in checks["local judge"]["measured"]
    embedding = checks["embedding model"]
    assert embedding["status"] == "fail" and "/nonexistent/minilm" in embedding["measured"]
    assert "embedding_model" in checks["embedding model"]["fix"]


def test_unreachable_api_judge_fails_naming_the_url(workspace: Path) -> None:
    env = {"ASSAY_JUDGE__PROVIDER": "openai", "ASSAY_JUDGE__BASE_URL": "http://127.0.0.1:9/v1",
           "ASSAY_JUDGE__API_KEY": "k", "ASSAY_JUDGE__MODEL": "gpt-test"}
    code, checks = _doctor(workspace, env=env)
    assert code == 1
    api = checks["API judge"]
    assert api["status"] == "fail" and "http://127.0.0.1:9/v1" in api["measured"] and "gpt-test" in api["measured"]
    assert "base_url" in api["fix"]
    assert checks["local judge"]["status"] == "skip"


def test_help_explains_the_checks() -> None:
    proc = subprocess.run([sys.executable, "-m", "assay._cli", "--workspace", "/nonexistent-ws", "doctor", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "600-token" in proc.stdout
