"""Online scoring of production: deterministic sampling, completion rules, the worker (once, idempotent,
lineage), the judge audit (queue, app pages, audit pairs), score export as OTel evaluation events,
the real local judge, and `assay serve --worker` as a process that stops gracefully."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

from assay import Lineage
from assay._cli.main import app as cli
from assay._store import Store
from assay._store.scores import read_params
from assay._store.tables import AuditItemRow, OnlineScoreRow, RunRow, ScoreRow, UnitRow
from assay._web.app import create_app
from assay._web.auth import add_user
from assay.calibration import CalibrationReport, agreement
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluatorDef, content_version, evaluator_json_schema, save_evaluator
from assay.settings import OnlineSettings, Settings, load_settings
from assay.suite.audit import audit_items, audit_pairs
from assay.suite.online import OnlineParams, OnlineWorker, audited, completion, sampled
from assay.traces.model import Span
from assay.traces.otlp import decode_logs
from tests.test_store_backends import _postgres

NAME = "no-tool-errors"
CODE_EVAL: dict[str, Any] = {
    "name": NAME, "kind": "code", "dimension": "tool_use",
    "criterion": {"name": "no-tool-errors", "text": "Every tool call succeeds."},
    "code": {"callable": "assay.evaluators.checks:no_tool_errors"}}
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, and PostgreSQL where ASSAY_TEST_POSTGRES_URL names a server (skipped otherwise)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'assay.db'}"
    else:
        yield from _postgres(tmp_path)


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# --- sampling ----------------------------------------------------------------------------------
def test_sampling_is_deterministic_and_near_the_rate() -> None:
    ids = [f"trace/{_hex(str(i), 32)}" for i in range(10_000)]
    first = {u for u in ids if sampled(NAME, u, 0.10)}
    again = {u for u in ids if sampled(NAME, u, 0.10)}
    assert first == again
    sd = math.sqrt(10_000 * 0.1 * 0.9)  # binomial: 30
    assert abs(len(first) - 1000) < 4 * sd, len(first)
    assert {u for u in ids if sampled(NAME, u, 0.05)} < first  # a lower rate keeps a subset
    other = {u for u in ids if sampled("tone", u, 0.10)}
    assert abs(len(first & other) - 100) < 4 * math.sqrt(10_000 * 0.01)  # independent per evaluator
    assert not any(sampled(NAME, u, 0.0) for u in ids[:500]) and all(sampled(NAME, u, 1.0) for u in ids[:500])
    audit = [u for u in ids if audited(u, 0.02)]
    assert abs(len(audit) - 200) < 4 * math.sqrt(10_000 * 0.02 * 0.98)


def test_sample_rate_is_policy_and_keeps_existing_versions() -> None:
    defn = EvaluatorDef.model_validate(CODE_EVAL)
    assert defn.sample_rate == 0.10
    assert content_version(defn) == "55c2f1dfe300"  # the version this file had before sample_rate existed
    assert content_version(defn.model_copy(update={"sample_rate": 0.5})) == content_version(defn)
    assert evaluator_json_schema()["properties"]["sample_rate"]["maximum"] == 1
    with pytest.raises(ValueError, match="sample_rate"):
        EvaluatorDef.model_validate({**CODE_EVAL, "sample_rate": 1.5})


# --- completion --------------------------------------------------------------------------------
def _span(trace: str, span: str, parent: str | None, start: int, end: int, session: str | None = None,
          status: str = "ok") -> Span:
    return Span(trace_id=_hex(trace, 32), span_id=_hex(span, 16), parent_span_id=_hex(parent, 16) if parent else None,
                name=span, start_ns=start, end_ns=end, session_id=session, status=status)  # type: ignore[arg-type]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.close()


def test_completion_rules(store: Store) -> None:
    cfg = OnlineSettings(settle_s=5, idle_timeout_s=300)
    now = time.time_ns()
    s = 1_000_000_000
    store.add_spans([_span("done", "root", None, now - 60 * s, now - 50 * s),
                     _span("done", "tool", "root", now - 59 * s, now - 55 * s)])
    store.add_spans([_span("late", "child", "root", now - 60 * s, now - 55 * s)])  # root not arrived yet
    store.add_spans([_span("open", "root", None, now - 60 * s, 0)])  # no end time
    store.add_spans([_span("fresh", "root", None, now - 3 * s, now - 2 * s)])  # ended 2 s ago, settle 5 s
    store.add_spans([_span("chat1", "root", None, now - 100 * s, now - 90 * s, session="conv-1")])
    units = {"done": f"trace/{_hex('done', 32)}", "late": f"trace/{_hex('late', 32)}",
             "open": f"trace/{_hex('open', 32)}", "fresh": f"trace/{_hex('fresh', 32)}", "session": "session/conv-1"}
    got = completion(store, list(units.values()), cfg, now)
    assert got[units["done"]].complete
    assert not got[units["late"]].complete and "parent" in got[units["late"]].reason
    assert not got[units["open"]].complete and "open" in got[units["open"]].reason
    assert not got[units["fresh"]].complete and "settle" in got[units["fresh"]].reason
    assert completion(store, [units["fresh"]], cfg, now + 10 * s)[units["fresh"]].complete
    assert not got[units["session"]].complete and "idle" in got[units["session"]].reason
    # the session's idle clock restarts with a new span; complete only 300 s after the newest one
    store.add_spans([_span("chat2", "root", None, now - 20 * s, now - 10 * s, session="conv-1")])
    assert not completion(store, [units["session"]], cfg, now + 250 * s)[units["session"]].complete
    assert completion(store, [units["session"]], cfg, now + 291 * s)[units["session"]].complete
    store.add_spans([_span("late", "root", None, now - 61 * s, now - 50 * s)])  # the parent arrives
    assert completion(store, [units["late"]], cfg, now)[units["late"]].complete
    assert not completion(store, ["trace/none"], cfg, now)["trace/none"].complete


# --- a workspace, ingestion through the real app ------------------------------------------------
def make_workspace(tmp_path: Path, rate: float = 0.5, audit_share: float = 0.25,
                   evaluator: dict[str, Any] | None = None, judge: str = "",
                   store_url: str | None = None) -> tuple[Settings, Store, EvaluatorDef]:
    url = store_url or f"sqlite:///{tmp_path / 'assay.db'}"
    (tmp_path / "assay.toml").write_text(
        f'store_url = "{url}"\nsession_secret = "test-secret"\n{judge}'
        f"[online]\nsettle_s = 0\naudit_share = {audit_share}\nbatch_size = 7\n")
    defn = EvaluatorDef.model_validate({**(evaluator or CODE_EVAL), "sample_rate": rate})
    save_evaluator(defn, tmp_path / "evaluators" / f"{defn.name}.yaml")
    settings = load_settings(tmp_path, env={})
    store = Store(settings.resolved_store_url())
    save_evaluator_record(store, defn, "active", calibrated(defn, dataset_version=3))
    return settings, store, defn


def calibrated(defn: EvaluatorDef, dataset_version: int) -> CalibrationReport:
    """A calibration report that activated ``defn`` on ground-truth dataset ``dataset_version``."""
    return CalibrationReport(evaluator=defn.name, evaluator_version=content_version(defn), judge_model=None,
                             dataset_version=dataset_version, dataset_balance={"pass": 1, "fail": 1}, n_labelled=2,
                             n_unscored=0, n_errors=0, agreement=agreement(["pass", "fail"], ["pass", "fail"]),
                             threshold=0.8, min_kappa=0.0, meets_threshold=True, status="active",
                             run_id="calibration-fixture")


def otlp_trace(key: str, *, root: bool = True, error: bool = False) -> list[dict[str, Any]]:
    """One agent trace as OTLP JSON spans: a root, a chat span and a tool span (failing when ``error``)."""
    t, end = time.time_ns() - 120 * 10**9, time.time_ns() - 60 * 10**9
    tid, rid = _hex(key, 32), _hex(key + "root", 16)

    def attrs(d: dict[str, str]) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]

    spans = [{"traceId": tid, "spanId": _hex(key + "chat", 16), "parentSpanId": rid, "name": "chat gpt-4o",
              "startTimeUnixNano": str(t + 1000), "endTimeUnixNano": str(t + 2000),
              "attributes": attrs({"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(
                  [{"role": "user", "parts": [{"type": "text", "content": f"Please cancel order {key}."}]}]),
                  "gen_ai.output.messages": json.dumps(
                  [{"role": "assistant", "parts": [{"type": "text", "content": "Cancelling it now."}]}])})},
             {"traceId": tid, "spanId": _hex(key + "tool", 16), "parentSpanId": rid, "name": "execute_tool cancel",
              "startTimeUnixNano": str(t + 3000), "endTimeUnixNano": str(t + 4000),
              "status": {"code": 2, "message": "order not found"} if error else {"code": 1},
              "attributes": attrs({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "cancel",
                                   "gen_ai.tool.call.arguments": json.dumps({"order": key}),
                                   "gen_ai.tool.call.result": "Error: order not found" if error else "cancelled"})}]
    if root:
        spans.insert(0, {"traceId": tid, "spanId": rid, "name": "invoke_agent support", "startTimeUnixNano": str(t),
                         "endTimeUnixNano": str(end), "attributes": attrs({"gen_ai.operation.name": "invoke_agent"})})
    return spans


def post(app: Any, path: str, body: bytes) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://assay") as client:
            return await client.post(path, content=body, headers={"content-type": "application/json"})

    return asyncio.run(go())


def ingest(settings: Settings, store: Store, traces: list[list[dict[str, Any]]]) -> None:
    app = create_app(settings, store)
    for spans in traces:
        body = json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}).encode()
        resp = post(app, "/v1/traces", body)
        assert resp.status_code == 200 and "rejected" not in resp.text, resp.text


def run_cli(tmp_path: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), *args])
    return result


def online_scores(store: Store) -> list[ScoreRow]:
    with store.session() as s:
        q = select(ScoreRow).join(RunRow, ScoreRow.run_id == RunRow.run_id).where(RunRow.kind == "online")
        return list(s.scalars(q.order_by(ScoreRow.id)))


# --- the worker --------------------------------------------------------------------------------
def test_worker_once_scores_sampled_complete_units_exactly_once(tmp_path: Path) -> None:
    settings, store, defn = make_workspace(tmp_path)
    keys = [f"order-{i}" for i in range(40)]
    uid = {k: f"trace/{_hex(k, 32)}" for k in keys}
    open_key = next(k for k in keys if sampled(NAME, uid[k], 0.5))  # a sampled trace whose root is late
    ingest(settings, store, [otlp_trace(k, root=k != open_key, error=i % 3 == 0) for i, k in enumerate(keys)])
    expected = {uid[k] for k in keys if sampled(NAME, uid[k], 0.5) and k != open_key}
    assert 10 < len(expected) < 30

    result = run_cli(tmp_path, "worker", "--once", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scored"] == len(expected) and summary["failed"] == 0 and summary["passes"] >= 3  # batch 7
    rows = online_scores(store)
    assert {r.unit_id for r in rows} == expected and len(rows) == len(expected)
    fails = {uid[k] for i, k in enumerate(keys) if i % 3 == 0}
    assert {r.unit_id for r in rows if r.verdict == "fail"} == expected & fails
    with store.session() as s:
        run = s.get(RunRow, summary["run_id"])
    assert run is not None
    version = content_version(defn)
    assert run.kind == "online" and run.finished_at is not None
    lineage = read_params(run, OnlineParams).lineage[f"{NAME}@{version}"]
    assert lineage == Lineage(evaluator=NAME, evaluator_version=version, judge_model=None, judge_parameters={},
                              dataset_version=3, run_id=run.run_id, run_kind="online", sample_rate=0.5)
    assert run.params["version"] == 1 and run.params["lineage"][lineage.key]["version"] == 1  # stored versioned
    assert all(r.evaluator_version == version and r.dataset_version == 3 and r.run_id == run.run_id for r in rows)

    again = json.loads(run_cli(tmp_path, "worker", "--once", "--json").stdout)
    assert again["scored"] == 0 and len(online_scores(store)) == len(expected)

    ingest(settings, store, [[otlp_trace(open_key)[0]]])  # the late root arrives: now complete
    third = json.loads(run_cli(tmp_path, "worker", "--once", "--json").stdout)
    assert third["scored"] == 1 and {r.unit_id for r in online_scores(store)} == expected | {uid[open_key]}
    with store.session() as s:
        ledger = list(s.scalars(select(OnlineScoreRow)))
    assert len(ledger) == len(expected) + 1 and all(r.score_id is not None and r.content_hash for r in ledger)


def test_a_new_evaluator_version_scores_again_and_a_stale_claim_is_retaken(tmp_path: Path, store_url: str) -> None:
    settings, store, defn = make_workspace(tmp_path, rate=1.0, store_url=store_url)
    try:
        _new_version_and_stale_claim(tmp_path, settings, store, defn)
    finally:
        store.close()


def _new_version_and_stale_claim(tmp_path: Path, settings: Settings, store: Store, defn: EvaluatorDef) -> None:
    ingest(settings, store, [otlp_trace(f"k{i}") for i in range(3)])
    first = OnlineWorker(store, settings).run_pass()
    assert first.scored == 3
    # a claim left by a worker that died long ago is taken again; a live one is not
    with store.session() as s:
        row = s.scalars(select(OnlineScoreRow)).first()
        assert row is not None
        s.delete(row)
    old = settings.model_copy(update={"online": settings.online.model_copy(update={"claim_lease_s": 1e-6})})
    store_rows = len(online_scores(store))
    with store.session() as s:
        s.add(OnlineScoreRow(evaluator_name=NAME, evaluator_version=content_version(defn), unit_id=row.unit_id,
                             run_id="online-dead"))
    assert OnlineWorker(store, settings).run_pass().scored == 0  # live claim (default lease 600 s)
    assert OnlineWorker(store, old).run_pass().scored == 1
    assert len(online_scores(store)) == store_rows + 1
    # a new version (another check argument) is a new evaluator version: it scores the units again
    v2 = EvaluatorDef.model_validate({**CODE_EVAL, "sample_rate": 1.0,
                                      "code": {"callable": "assay.evaluators.checks:tool_called",
                                               "args": {"tool": "cancel"}}})
    save_evaluator(v2, tmp_path / "evaluators" / f"{NAME}.yaml")
    save_evaluator_record(store, v2, "active", None)
    report = OnlineWorker(store, settings).run_pass()
    assert report.scored == 3 and report.evaluators[0].evaluator_version == content_version(v2)


def test_a_running_worker_reads_what_changed_not_the_tables(tmp_path: Path, store_url: str) -> None:
    settings, store, defn = make_workspace(tmp_path, rate=0.5, store_url=store_url)
    try:
        _incremental_passes(tmp_path, settings, store, defn)
    finally:
        store.close()


def _incremental_passes(tmp_path: Path, settings: Settings, store: Store, defn: EvaluatorDef) -> None:
    """One worker over passes: units ingested after its first pass are scored, also a unit row committed with an
    older ``ingested_at`` (a long ingest transaction); a raised sample rate adds the units now sampled; choosing
    what to score reads no ``units`` table whole (every such query has a WHERE clause: the ingestion-order walk,
    ids). The failure-signal pass before it (:func:`assay.signals.units_to_scan`, units joined with their
    ``signal_scans`` to find grown or never-scanned ones) still reads the units whole: it is left out here."""
    worker = OnlineWorker(store, settings)
    first = [f"a{i}" for i in range(10)]
    ingest(settings, store, [otlp_trace(k) for k in first])
    uid = {k: f"trace/{_hex(k, 32)}" for k in [*first, "b0", "b1", "late"]}
    assert worker.run_pass().scored == sum(sampled(NAME, uid[k], 0.5) for k in first) > 0
    ingest(settings, store, [otlp_trace(k) for k in ("b0", "b1", "late")])
    with store.session() as s:
        row = s.get(UnitRow, uid["late"])
        assert row is not None
        row.ingested_at -= timedelta(seconds=30)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        later = worker.run_pass()
        assert worker.run_pass().scored == 0
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert later.scored == sum(sampled(NAME, uid[k], 0.5) for k in ("b0", "b1", "late"))
    on_units = [q for q in statements if q.startswith("SELECT") and re.search(r"FROM units\b", q)
                and "signal_scans" not in q]
    assert on_units and all(" WHERE " in q for q in on_units), on_units
    save_evaluator(defn.model_copy(update={"sample_rate": 1.0}), tmp_path / "evaluators" / f"{NAME}.yaml")
    assert worker.run_pass().scored == sum(not sampled(NAME, uid[k], 0.5) for k in uid)
    assert {r.unit_id for r in online_scores(store)} == set(uid.values())


# --- the judge audit ---------------------------------------------------------------------------
def test_audit_share_goes_to_the_queue_and_the_app(tmp_path: Path) -> None:
    settings, store, defn = make_workspace(tmp_path, rate=1.0, audit_share=0.25)
    keys = [f"order-{i}" for i in range(24)]
    ingest(settings, store, [otlp_trace(k, error=i % 2 == 0) for i, k in enumerate(keys)])
    report = OnlineWorker(store, settings).run(_Stop(), once=True)
    expected = {f"trace/{_hex(k, 32)}" for k in keys if audited(f"trace/{_hex(k, 32)}", 0.25)}
    assert 0 < len(expected) < len(keys) and report.audited == len(expected)
    items = audit_items(store)
    assert {i.unit_id for i in items} == expected
    assert all(i.criterion == "no-tool-errors" and i.human_label is None for i in items)
    pairs = audit_pairs(store, NAME)
    assert [p.unit_id for p in pairs] == [i.unit_id for i in items] and all(p.human_label is None for p in pairs)

    add_user(store, "ann", PASSWORD, "annotator")
    target = items[0]
    human = "pass" if target.judge_verdict == "fail" else "fail"

    async def review() -> tuple[str, str, int, str]:
        app = create_app(settings, store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            page = await c.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            await c.post("/login", data={"name": "ann", "password": PASSWORD, "next": "/", "csrf_token": token})
            listing = (await c.get("/audit")).text
            item = await c.get(f"/audit/{target.id}")
            token = re.search(r'name="csrf_token" value="([^"]+)"', item.text).group(1)  # type: ignore[union-attr]
            forged = await c.post(f"/audit/{target.id}", data={"label": human, "csrf_token": "x"})
            saved = await c.post(f"/audit/{target.id}", data={"label": human, "rationale": "<b>no</b>",
                                                               "csrf_token": token})
            assert saved.status_code == 303 and saved.headers["location"] == f"/audit/{target.id}"
            revealed = (await c.get(saved.headers["location"])).text
            return listing, item.text, forged.status_code, (await c.get("/audit")).text, revealed

    listing, page, forged, after, revealed = asyncio.run(review())
    assert all(u in listing for u in expected) and "to label" in listing and "disagrees" not in listing
    assert "Every tool call succeeds." in page and 'id="audit-result"' not in page  # blind before labelling
    assert f'id="next-link" href="/audit/{items[1].id}"' in page  # on to the next unlabelled item (key j)
    assert re.search(rf'id="audit-result">Human: <strong>{human}</strong>.*judge: <strong>{target.judge_verdict}',
                     revealed)
    assert "&lt;b&gt;" not in revealed and "<b>no</b>" not in revealed  # the rationale is not echoed raw
    assert forged == 403
    assert "disagrees" in after and f"{NAME}: 0/1" in after
    pair = next(p for p in audit_pairs(store, NAME) if p.unit_id == target.unit_id)
    assert pair.human_label == human and pair.judge_verdict == target.judge_verdict and pair.labelled_at is not None
    assert pair.evaluator_version == content_version(defn)
    with store.session() as s:
        assert s.scalar(select(AuditItemRow.score_id).where(AuditItemRow.id == target.id)) == target.score_id


class _Stop:
    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        return False


# --- export ------------------------------------------------------------------------------------
def test_scores_export_otel_events_round_trip_with_lineage(tmp_path: Path) -> None:
    settings, store, defn = make_workspace(tmp_path, rate=1.0)
    keys = [f"order-{i}" for i in range(5)]
    ingest(settings, store, [otlp_trace(k, error=k == "order-0") for k in keys])
    run_id = OnlineWorker(store, settings).run(_Stop(), once=True).run_id
    out = tmp_path / "scores.otlp.jsonl"
    result = run_cli(tmp_path, "scores", "export", "--otel", "--run", str(run_id), "--output", str(out))
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    items, reasons = decode_logs(lines[0].encode(), "json")  # the receiver's own OTLP reader
    assert reasons == [] and len(items) == 5
    by_unit = {ev.attributes["assay.unit.id"]: (t, sid, ev) for t, sid, ev in items}
    for k in keys:
        t, sid, ev = by_unit[f"trace/{_hex(k, 32)}"]
        assert ev.name == "gen_ai.evaluation.result"
        assert (t, sid) == (_hex(k, 32), _hex(k + "root", 16))  # parented to the unit's root span
        a = ev.attributes
        assert a["gen_ai.evaluation.name"] == NAME and a["assay.evaluator.version"] == content_version(defn)
        assert a["gen_ai.evaluation.score.label"] == ("fail" if k == "order-0" else "pass")
        assert a["gen_ai.evaluation.score.value"] == (0.0 if k == "order-0" else 1.0)
        assert a["assay.dataset.version"] == 3 and a["assay.run.id"] == run_id and a["gen_ai.evaluation.explanation"]
    app = create_app(settings, store)
    assert post(app, "/v1/logs", lines[0].encode()).status_code == 200  # an OTLP endpoint takes it as is

    plain = run_cli(tmp_path, "scores", "export", "--jsonl")
    records = [json.loads(line) for line in plain.stdout.splitlines()]
    assert len(records) == 5 and {r["run_id"] for r in records} == {run_id}
    assert all(r["dataset_version"] == 3 and r["evaluator_version"] == content_version(defn) for r in records)
    assert run_cli(tmp_path, "scores", "export", "--otel", "--jsonl").exit_code == 2
    assert run_cli(tmp_path, "scores", "export", "--jsonl", "--run", "nope").exit_code == 2


# --- the real local judge ----------------------------------------------------------------------
def test_online_scoring_with_the_real_local_judge(tmp_path: Path) -> None:
    judge_eval = {"name": "resolves-request", "kind": "llm_judge", "dimension": "task success",
                  "criterion": {"name": "resolves-request", "text": "The agent does what the user asked and "
                                                                    "every tool call succeeds."}, "judge": {}}
    settings, store, defn = make_workspace(
        tmp_path, rate=1.0, evaluator=judge_eval,
        judge="[judge]\nprovider = \"local\"\nmax_prompt_chars = 800\nn_threads = 1\nmax_tokens = 96\n")
    ingest(settings, store, [otlp_trace(f"order-{i}", error=i == 0) for i in range(3)])
    report = OnlineWorker(store, settings).run(_Stop(), once=True)  # the judge from [judge]: the real factory path
    rows = online_scores(store)
    assert len(rows) == 3 and report.scored + report.failed == 3
    assert all(r.judge_model == "smollm2-135m-instruct" for r in rows)
    assert all(r.status in ("scored", "unscored", "error") and r.raw for r in rows)
    assert sum(r.status == "scored" for r in rows) >= 2  # grammar-constrained replies parse
    with store.session() as s:
        run = s.get(RunRow, report.run_id)
        assert run is not None
        params = read_params(run, OnlineParams).lineage[f"resolves-request@{content_version(defn)}"].judge_parameters
    assert params["provider"] == "local" and params["temperature"] == 0.0 and params["max_prompt_chars"] == 800
    assert params["gguf"].endswith(".gguf")
    assert json.loads(run_cli(tmp_path, "worker", "--once", "--json").stdout)["scored"] == 0


# --- assay serve --worker ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "sigkill"])
def test_serve_with_worker_scores_in_a_separate_process_and_stops_with_it(tmp_path: Path, stop: str) -> None:
    """Ctrl-C (the whole process group), SIGTERM to the server (its shutdown stops the worker), or the
    server killed outright (the worker notices its parent is gone): the worker finishes its run and exits."""
    settings, store, _ = make_workspace(tmp_path, rate=1.0)
    port = _free_port()
    env = {**os.environ, "ASSAY_ONLINE__POLL_INTERVAL_S": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "assay", "-w", str(tmp_path), "serve", "--port", str(port),
                             "--worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    worker = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        worker = _children(proc.pid)[0]
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": otlp_trace("live")}]}]}).encode()
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 200
        while time.monotonic() < deadline and not online_scores(store):
            time.sleep(0.3)
        assert [r.unit_id for r in online_scores(store)] == [f"trace/{_hex('live', 32)}"]
    finally:
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        else:
            proc.send_signal(signal.SIGTERM if stop == "sigterm" else signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        assert worker is not None and _gone(worker, 30), "the worker outlived the server"
    # Ctrl-C: a graceful stop, then 130 as every interrupted command (README exit codes)
    assert proc.returncode == {"ctrl-c": 130, "sigterm": 128 + signal.SIGTERM, "sigkill": -signal.SIGKILL}[stop], err
    assert b"Traceback" not in err
    if stop != "sigkill":  # the server waited for the worker: its lines are in the server's output
        assert b"stopping after the units in hand" in err
        assert re.search(rb"online run online-[0-9a-f]{12}: 1 scored", out), out
    with store.session() as s:
        run = s.scalars(select(RunRow).where(RunRow.kind == "online")).one()
        assert run.finished_at is not None and run.summary["scored"] == 1


def test_an_orphan_whose_parent_never_arrives_is_complete_after_the_grace_window(tmp_path: Path) -> None:
    from assay._web.auth import create_api_key

    settings, store, _ = make_workspace(tmp_path, rate=1.0)
    ingest(settings, store, [otlp_trace("lost-parent", root=False)])  # both spans' parent never arrives
    unit_id = f"trace/{_hex('lost-parent', 32)}"
    now = time.time_ns()
    waiting = completion(store, [unit_id], settings.online, now)[unit_id]
    assert not waiting.complete and "parent span is still expected" in waiting.reason
    assert OnlineWorker(store, settings).run_pass().scored == 0  # default grace: 600 s; the spans are ~60 s old
    graced = settings.model_copy(update={"online": settings.online.model_copy(update={"orphan_grace_s": 30})})
    done = completion(store, [unit_id], graced.online, now)[unit_id]
    assert done.complete and "2 orphan span(s) whose parent never arrived" in done.reason
    assert OnlineWorker(store, graced).run_pass().scored == 1
    assert [r.unit_id for r in online_scores(store)] == [unit_id]
    assert sum("orphan" in s.flags for s in store.unit(unit_id).spans) == 2  # the flag is kept
    key = create_api_key(store, owner="ci")

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, store)),
                                     base_url="http://assay") as client:
            return await client.get(f"/api/v1/units/{unit_id}", headers={"authorization": f"Bearer {key}"})

    body = asyncio.run(get()).json()
    assert body["orphan_spans"] == 2 and body["steps"]
