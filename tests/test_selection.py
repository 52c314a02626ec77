"""Unit selections: parsed into typed terms, compiled to one SQL query, the same answer on SQLite and PostgreSQL.

The reference is the Python filter the store used before selections went to SQL (every unit row
read, each term applied in Python; ``failed`` the ids of the one failure query,
``Store.failed_unit_ids``, and ``passed`` every other unit): every term and intersection must select
exactly the same ids, case-sensitively, with LIKE/GLOB wildcards in values taken literally. Some units
carry failure signals and some were scanned, so ``failed`` differs from the recorded outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from assay._store import Store
from assay._store.selection import TERMS, UnitSelection
from assay.annotations import Annotation, add_annotations
from assay.exceptions import UsageError
from assay.signals import DetectorLineage, FailureSignal, SignalSettings, add_signals, scan_units
from assay.traces import Span, Unit
from tests.test_store_backends import _postgres

IDS = ("tau/a%b", "tau/a_b", "tau/axb", "tau/a*b", "tau/a?b", "tau/a[b]", "Tau/upper", "otel/1", "otel/2", "x")
SOURCES = {"tau": "trial-1.json", "Tau": "TRIAL-1.JSON", "otel": "otlp-http", "x": "file[1]%.json"}


def _unit(uid: str, n: int) -> Unit:
    outcome = ("pass", "fail", "unknown")[n % 3]
    span = Span(trace_id=f"{n:032x}", span_id=f"{n:016x}", name="step", start_ns=n, end_ns=n + 1,
                status="error" if n % 2 else "ok")
    return Unit(unit_id=uid, kind="trace", source=SOURCES[uid.split("/")[0]], spans=(span,), outcome=outcome)


UNITS = [_unit(uid, n) for n, uid in enumerate(IDS)]


def _signal(unit_id: str, strength: float, step: int = 1) -> FailureSignal:
    return FailureSignal(unit_id=unit_id, source="cue", kind="user_frustration", strength=strength,
                         evidence=f"user: no ({step})", step=step, time_ns=1,
                         lineage=DetectorLineage(name="test", version="1"))


SCANNED = ("tau/a_b", "tau/axb", "otel/1")
"""Run through the detectors: their recorded outcome no longer stands in for signals."""
SIGNALS = [_signal("Tau/upper", 0.4), _signal("x", 0.3), _signal("x", 0.4, step=2), _signal("tau/a*b", 1.0)]
"""Tau/upper (outcome pass) stays below fail_at 0.5; x (outcome pass) reaches 1 - 0.7 * 0.6 = 0.58;
tau/a*b (outcome pass) is certain."""


def _reference(selection: str | None, labelled: set[str], failed: set[str]) -> list[str]:
    """The store's old selection: every unit in Python, terms intersected."""
    ids = {u.unit_id for u in UNITS}
    tests: dict[str, Callable[[Unit], bool]] = {
        "failed": lambda u: u.unit_id in failed, "passed": lambda u: u.unit_id not in failed,
        "labelled": lambda u: u.unit_id in labelled}
    for term in (selection or "all").split(","):
        term = term.strip()
        if term.startswith("prefix:"):
            ids &= {u.unit_id for u in UNITS if u.unit_id.startswith(term[7:])}
        elif term.startswith("source:"):
            ids &= {u.unit_id for u in UNITS if term[7:] in u.source}
        elif term != "all":
            ids &= {u.unit_id for u in UNITS if tests[term](u)}
    return sorted(ids)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'assay.db'}"
    else:
        yield from _postgres(tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.add_units(UNITS)
    add_annotations(store, [Annotation(unit_id=u, annotator="ann", label="fail") for u in ("tau/a%b", "otel/2")])
    scan_units(store, store.units(list(SCANNED)), SignalSettings())
    add_signals(store, SIGNALS)
    yield store
    store.close()


SELECTIONS = [None, "all", "failed", "passed", "labelled", "prefix:tau/", "prefix:Tau/", "prefix:tau/a%",
              "prefix:tau/a_", "prefix:tau/a*", "prefix:tau/a?", "prefix:tau/a[", "prefix:tau/a[b]", "prefix:T",
              "source:trial", "source:TRIAL", "source:[1]%", "source:%", "source:_", "failed,prefix:tau/",
              "passed, source:otlp", "labelled,failed", "prefix:tau/,prefix:tau/a", "all,passed"]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_sql_selection_matches_the_python_filter(store: Store, selection: str | None) -> None:
    want = _reference(selection, {"tau/a%b", "otel/2"}, set(store.failed_unit_ids()))
    assert store.select_unit_ids(selection) == want
    assert [r.unit_id for r in store.unit_rows(selection)] == want


def test_failed_is_the_failure_score_not_the_recorded_outcome(store: Store) -> None:
    """Signals decide scanned units and add to unscanned ones; ``[signals] fail_at`` is the store's."""
    failed = store.select_unit_ids("failed")
    assert failed == store.failed_unit_ids()
    assert {"x", "tau/a*b"} <= set(failed)  # outcome pass, failed by their signals
    assert "Tau/upper" not in failed and "tau/axb" not in failed
    assert {"tau/a%b", "otel/2"} <= set(failed)  # an expert labelled them fail (outcome pass; no outcome)
    assert "tau/a?b" in failed and "tau/a[b]" in failed  # never scanned: outcome fail / no outcome and an error
    assert store.select_unit_ids("passed") == sorted({u.unit_id for u in UNITS} - set(failed))
    strict = Store(store.url, SignalSettings(fail_at=0.6, ambiguous_high=0.6))
    try:
        assert "x" not in strict.select_unit_ids("failed") and "x" in strict.select_unit_ids("passed")
        assert strict.select_unit_ids("failed") == strict.failed_unit_ids()
    finally:
        strict.close()


def test_wildcards_and_case_are_literal(store: Store) -> None:
    assert store.select_unit_ids("prefix:tau/a%") == ["tau/a%b"]
    assert store.select_unit_ids("prefix:tau/a_") == ["tau/a_b"]
    assert store.select_unit_ids("prefix:tau/a*") == ["tau/a*b"]
    assert store.select_unit_ids("prefix:tau/a[") == ["tau/a[b]"]
    assert store.select_unit_ids("prefix:Tau") == ["Tau/upper"]
    assert store.select_unit_ids("source:TRIAL") == ["Tau/upper"]


def test_text_form_round_trips() -> None:
    sel = UnitSelection.parse(" failed , prefix:a:b,source:x y")
    assert str(sel) == "failed,prefix:a:b,source:x y"
    assert [t.kind for t in sel.terms] == ["failed", "prefix", "source"]
    assert UnitSelection.parse(str(sel)) == sel
    assert UnitSelection.model_validate_json(sel.model_dump_json()) == sel
    assert str(UnitSelection.parse(None)) == "all" and UnitSelection.parse(sel) is sel


@pytest.mark.parametrize(("selection", "message"), [
    ("", "empty selection"), ("prefix:", "empty selection"), ("failed,,passed", "empty selection"),
    ("source:", "empty selection"), ("env:", "empty selection"), ("release:", "empty selection"),
    ("failing", "unknown unit selection 'failing'"),
    ("prefix", "unknown unit selection 'prefix'"), ("failed:yes", "unknown unit selection 'failed:yes'")])
def test_bad_selections_are_refused_with_the_terms_there_are(selection: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        UnitSelection.parse(selection)
    assert "all, failed, passed, labelled, prefix:TEXT, source:TEXT, env:NAME or release:X" in str(info.value)


def test_every_term_is_registered_by_kind() -> None:
    assert set(TERMS) == {"all", "failed", "passed", "labelled", "prefix", "source", "env", "release"}
    assert all(cls.model_fields["kind"].default == word for word, cls in TERMS.items())


def test_terms_are_served_by_indexes_on_sqlite(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("query plans are SQLite's")
    plans = {}
    for selection in ("failed", "passed", "prefix:tau/", "labelled"):
        query = UnitSelection.parse(selection).query()
        with store.engine.connect() as conn:
            compiled = query.compile(dialect=conn.dialect)
            params = tuple(compiled.params[k] for k in compiled.positiontup or ())
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
        plans[selection] = " | ".join(r[-1] for r in rows)
    assert "ix_units_outcome (outcome=?)" in plans["failed"] and "ix_units_outcome (outcome=?)" in plans["passed"]
    assert "SEARCH units USING" in plans["prefix:tau/"] and "(unit_id>? AND unit_id<?)" in plans["prefix:tau/"]
    assert "ix_annotations_unit_id" in plans["labelled"]


def test_prefix_is_served_by_an_index_on_postgresql(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    query = UnitSelection.parse("prefix:tau/").query()
    with store.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        compiled = query.compile(dialect=conn.dialect)
        plan = " | ".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
    assert "ix_units_id_pattern" in plan and "~>=~" in plan, plan


def test_env_and_release_terms_are_sql_conditions() -> None:
    sel = UnitSelection.parse("env:evaluation,release:v2")
    assert [t.kind for t in sel.terms] == ["env", "release"] and str(sel) == "env:evaluation,release:v2"
    sql = str(sel.query().compile(compile_kwargs={"literal_binds": True}))
    assert "units.env = 'evaluation'" in sql and "units.release = 'v2'" in sql
    default = str(UnitSelection.parse("env:production").query().compile(compile_kwargs={"literal_binds": True}))
    assert "units.env IS NULL" in default  # a unit stored without an environment counts as the default one
