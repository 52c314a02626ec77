"""Shared fixtures: real data from ../shared/data (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
AIRLINE = DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json"
RETAIL = DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"
AGENTRX_GT = DATA / "agentrx" / "data" / "ground_truth" / "tau_ground_truth.json"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.fail(f"shared data not found at {DATA}")
    return DATA
