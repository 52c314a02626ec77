"""The gate scores in chunks: units loaded, scored by every evaluator and written a chunk at a time.

520 stored units (the 200 real tau-bench airline runs, then copies under new ids) cross the gate's
chunk of 200 units and the store's 500 ids per query. What the gate stores and reports must be
exactly what scoring every unit at once gives: one score per unit and evaluator, the same
verdicts, scores and reasons, the same pass rates, and progress for every unit scored. Within a
chunk the evaluators read each unit's step timeline once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay._store import Store
from assay._store.scores import run_scores
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluationResult, EvaluatorDef, evaluate_many, save_evaluator
from assay.evaluators.runner import shared_steps, unit_steps
from assay.settings import Settings, load_settings
from assay.suite.gate import CHUNK, run_gate, unit_keys
from assay.traces.model import Span
from assay.traces.readers import read_file
from assay.traces.timeline import step_timeline
from tests.scale_fixtures import copy_unit

from .conftest import AIRLINE

N_UNITS = 520
CRITERION = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}
SUITE = [EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use", criterion=CRITERION,
                      code={"callable": "assay.evaluators.checks:no_tool_errors"}, min_pass_rate=0.0),
         EvaluatorDef(name="books", kind="code", dimension="tool use", criterion=CRITERION, min_pass_rate=0.0,
                      code={"callable": "assay.evaluators.checks:tool_called", "args": {"tool": "book_reservation"}})]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Settings]]:
    ws = tmp_path_factory.mktemp("gate-batches")
    settings = load_settings(ws)
    store = Store(settings.resolved_store_url())
    real = sorted(read_file(AIRLINE).units, key=lambda u: u.unit_id)
    store.add_units(real)
    store.add_units([copy_unit(u, 1) for u in real])
    store.add_units([copy_unit(u, 2) for u in real[:N_UNITS - 2 * len(real)]])
    for defn in SUITE:
        save_evaluator(defn, Path(settings.evaluators_path()) / f"{defn.name}.yaml")
        save_evaluator_record(store, defn, "active", None, override_reason="gate batches test")
    yield store, settings
    store.close()


def _row(r: EvaluationResult) -> tuple[str, str, float, str, str]:
    return r.unit_id, r.evaluator, r.score, r.verdict, r.reason


def test_chunked_gate_stores_what_scoring_all_at_once_gives(workspace: tuple[Store, Settings]) -> None:
    store, settings = workspace
    ids = store.select_unit_ids()
    assert len(ids) == N_UNITS > 2 * CHUNK
    done: list[int] = []
    report = run_gate(store, settings, None, progress=done.append)
    assert report.units == N_UNITS and sum(done) == N_UNITS * len(SUITE)
    units = store.units(ids)
    expected = {defn.name: [r for r in evaluate_many(defn, units) if isinstance(r, EvaluationResult)]
                for defn in SUITE}
    stored = run_scores(store, report.run_id)
    assert len(stored) == N_UNITS * len(SUITE)
    for item in report.items:
        want = expected[item.evaluator]
        assert len(want) == N_UNITS and item.n == N_UNITS
        assert item.pass_rate == sum(r.verdict == "pass" for r in want) / N_UNITS
        got = {(r.unit_id, r.evaluator_name, r.score, r.verdict, r.reason) for r in stored
               if r.evaluator_name == item.evaluator}
        assert got == {_row(r) for r in want}


def test_pairing_keys_are_read_in_chunks(workspace: tuple[Store, Settings]) -> None:
    store, _ = workspace
    rows = {r.unit_id: r for r in store.unit_rows()}
    keys = unit_keys(store, [*reversed(list(rows)), "no-such-unit"])
    assert sorted(k.unit_id for k in keys) == sorted(rows)
    for k in keys:
        assert k.content_hash == rows[k.unit_id].content_hash and k.content_hash
        assert k.attributes["task_id"] == rows[k.unit_id].attributes["task_id"]


def test_evaluators_of_a_chunk_share_each_units_timeline(workspace: tuple[Store, Settings]) -> None:
    store, _ = workspace
    unit, other = store.units(store.select_unit_ids()[:2])
    assert unit_steps(unit)[0] is not unit_steps(unit)[0]  # outside the block: built on every call
    with shared_steps():
        first, again = unit_steps(unit), unit_steps(unit)
        assert first == again and first is not again and all(a is b for a, b in zip(first, again, strict=True))
        assert unit_steps(other)[0] is not first[0] and unit_steps(other) == step_timeline(other)
    assert first == step_timeline(unit)
    assert unit_steps(unit)[0] is not first[0]  # the block's cache ended with it


def test_scoring_leaves_no_spans_in_reference_cycles(workspace: tuple[Store, Settings]) -> None:
    """The gate scores with the cyclic collector paused, so whatever a unit's scoring leaves in a reference
    cycle stays until the run ends (a recursive closure in the timeline's agent lookup once held every
    scored unit's spans that way: 1.5 GB at 10,000 units)."""
    store, _ = workspace
    units = store.units(store.select_unit_ids()[:40])
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with shared_steps():
            for defn in SUITE:
                assert len(evaluate_many(defn, units)) == len(units)
        del units
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, Span)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
