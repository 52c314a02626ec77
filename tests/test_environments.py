"""Environments and releases: where a unit ran, from OTel resource attributes, an API key's binding, a file's
fields or an ingest option; selections ``env:NAME`` / ``release:X``; production by default in the worker,
signatures, drift and the app (mixed traffic: production, evaluation and untagged units)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from assay._cli.main import app as cli
from assay._store import Store
from assay._store.tables import UnitRow
from assay._web.app import create_app
from assay._web.auth import add_user, create_api_key
from assay.exceptions import UsageError
from assay.settings import Settings
from assay.signatures import build_signatures, failed_unit_ids
from assay.suite.online import OnlineWorker
from assay.traces.environment import Environment, with_environment
from assay.traces.mapping import mapping_reader, parse_mapping
from tests.test_online import _hex, make_workspace, otlp_trace
from tests.test_receiver import _kvs, pb_span
from tests.ui_fixtures import PASSWORD, make_unit

KEYS_PROD = [f"prod-{i}" for i in range(6)]
KEYS_EVAL = [f"eval-{i}" for i in range(6)]
KEYS_UNTAGGED = [f"plain-{i}" for i in range(3)]


def uid(key: str) -> str:
    return f"trace/{_hex(key, 32)}"


def body(spans: list[dict[str, Any]], resource: dict[str, str] | None = None) -> bytes:
    attrs = [{"key": k, "value": {"stringValue": v}} for k, v in (resource or {}).items()]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": attrs},
                                          "scopeSpans": [{"spans": spans}]}]}).encode()


def send(app: Any, spans: list[dict[str, Any]], resource: dict[str, str] | None = None, key: str = "") -> None:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://assay") as client:
            headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
            return await client.post("/v1/traces", content=body(spans, resource), headers=headers)

    resp = asyncio.run(go())
    assert resp.status_code == 200 and "rejected" not in resp.text, resp.text


def placed(store: Store) -> dict[str, tuple[str | None, str | None]]:
    with store.session() as s:
        return {u: (e, r) for u, e, r in s.execute(select(UnitRow.unit_id, UnitRow.env, UnitRow.release))}


# --- where the environment comes from ------------------------------------------------------------
def test_environment_and_release_from_otel_resource_attributes(tmp_path: Path) -> None:
    settings, store, _ = make_workspace(tmp_path)
    app = create_app(settings, store)
    send(app, otlp_trace("new"), {"deployment.environment.name": "staging", "service.version": "2.1.0",
                                  "service.name": "support-agent"})
    send(app, otlp_trace("old"), {"deployment.environment": "production"})  # the older attribute
    send(app, otlp_trace("none"), {"service.name": "support-agent"})
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=_kvs({"deployment.environment.name": "simulation", "service.version": "7"})),
        scope_spans=[ScopeSpans(spans=[pb_span(77, 1, name="invoke_agent sim")])])])
    resp = post_pb(app, req.SerializeToString())
    assert resp.status_code == 200

    got = placed(store)
    pb_unit = f"trace/{77:032x}"
    assert got[uid("new")] == ("staging", "2.1.0") and got[uid("old")] == ("production", None)
    assert got[uid("none")] == (None, None) and got[pb_unit] == ("simulation", "7")
    # the resource attributes travel on the spans (the store keeps spans, not resources)
    assert store.unit(uid("new")).spans[0].attributes["deployment.environment.name"] == "staging"
    assert "service.name" not in store.unit(uid("new")).spans[0].attributes
    # selections: a unit stored without an environment counts as the default one (production)
    assert store.select_unit_ids("env:staging") == [uid("new")]
    assert set(store.select_unit_ids("env:production")) == {uid("old"), uid("none")}
    assert store.select_unit_ids("release:2.1.0") == [uid("new")]
    assert store.select_unit_ids("env:simulation,release:7") == [pb_unit]
    assert len(store.select_unit_ids("env:all")) == 4
    with pytest.raises(Exception, match="empty selection"):
        store.select_unit_ids("env:")
    strict = Store(store.url, environments=settings.environments.model_copy(update={"default": ""}))
    assert strict.select_unit_ids("env:production") == [uid("old")]  # untagged units count in no environment


def post_pb(app: Any, data: bytes) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://assay") as client:
            return await client.post("/v1/traces", content=data, headers={"content-type": "application/x-protobuf"})

    return asyncio.run(go())


def test_environment_from_the_api_key_when_the_resource_names_none(tmp_path: Path) -> None:
    settings, store, _ = make_workspace(tmp_path)
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "keys", "create", "--owner", "harness",
                                      "--env", "evaluation"])
    assert result.exit_code == 0, result.output
    harness = result.stdout.strip().splitlines()[-1]
    plain = create_api_key(store, "app")
    app = create_app(settings, store)
    send(app, otlp_trace("eval-run"), key=harness)
    send(app, otlp_trace("said-prod"), {"deployment.environment.name": "production"}, key=harness)  # resource wins
    send(app, otlp_trace("plain-key"), key=plain)
    send(app, otlp_trace("eval-run"), key=plain)  # a retry with another key changes nothing
    got = placed(store)
    assert got[uid("eval-run")][0] == "evaluation"
    assert got[uid("said-prod")][0] == "production" and got[uid("plain-key")][0] is None
    listed = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "keys", "list"]).stdout.splitlines()
    assert any("harness" in line and "env evaluation" in line for line in listed)
    assert any("app" in line and "env -" in line for line in listed)


CHAT = [{"id": "c1", "environment": "simulation", "release": "v3",
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"id": "c2", "metadata": {"env": "staging"},
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"id": "c3", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye"}]}]


def test_environment_from_file_fields_a_mapping_and_the_ingest_option(tmp_path: Path) -> None:
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "ingest", "--env", "evaluation", "--release",
                                      "v9", str(tmp_path / "chats.jsonl")])
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{tmp_path / '.assay' / 'assay.db'}")
    got = placed(store)
    assert got["openai-chat/c1"] == ("simulation", "v3")  # what the file says wins
    assert got["openai-chat/c2"] == ("staging", "v9")  # the option fills in what it does not say
    assert got["openai-chat/c3"] == ("evaluation", "v9")
    mapping = parse_mapping({"name": "runs", "records": "[*]", "id": "id", "environment": "meta.where",
                             "release": "meta.build", "messages": [{"role": {"path": "role"}, "content": "text"}]})
    (tmp_path / "runs.json").write_text(json.dumps([{"id": "r1", "meta": {"where": "canary", "build": 12},
                                                     "messages": [{"role": "user", "text": "hi"}]}]))
    unit = mapping_reader(mapping)(tmp_path / "runs.json").units[0]
    store.add_units([unit])
    assert placed(store)["runs/r1"] == ("canary", "12")
    # a unit that knew nothing gets the fallback; one that names its environment keeps it
    assert with_environment(unit, Environment("x", "y")).attributes == unit.attributes


# --- production by default ---------------------------------------------------------------------
class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return False


def mixed_traffic(tmp_path: Path, rate: float = 1.0) -> tuple[Settings, Store]:
    """6 production traces (resource attribute), 6 evaluation traces (a key bound to ``evaluation``) and 3
    traces that name no environment; every third one fails a tool call."""
    settings, store, _ = make_workspace(tmp_path, rate=rate)
    app = create_app(settings, store)
    harness = create_api_key(store, "harness", env="evaluation")
    for i, k in enumerate(KEYS_PROD):
        send(app, otlp_trace(k, error=i % 3 == 0), {"deployment.environment.name": "production"}, key=harness)
    for i, k in enumerate(KEYS_EVAL):
        send(app, otlp_trace(k, error=i % 3 == 0), key=harness)
    plain = create_api_key(store, "app")
    for k in KEYS_UNTAGGED:
        send(app, otlp_trace(k), key=plain)
    return settings, store


def test_the_worker_samples_production_only_unless_asked(tmp_path: Path) -> None:
    settings, store = mixed_traffic(tmp_path)
    production = {uid(k) for k in KEYS_PROD + KEYS_UNTAGGED}
    worker = OnlineWorker(store, settings)
    report = worker.run(_Stop(), once=True)
    scored = _online_units(store, report.run_id)
    assert scored == production  # evaluation sessions never enter the production sample
    evaluation = OnlineWorker(store, settings, env="evaluation").run(_Stop(), once=True)
    assert _online_units(store, evaluation.run_id) == {uid(k) for k in KEYS_EVAL}
    # with [environments] default = "", units that name no environment are in no environment's sample
    # (a new worker's first walk reads every stored unit of its environment)
    strict = settings.model_copy(update={"environments": settings.environments.model_copy(update={"default": ""})})
    assert set(OnlineWorker(store, strict)._new_units()) == {uid(k) for k in KEYS_PROD}
    assert set(OnlineWorker(store, settings, env="all")._new_units()) == production | {uid(k) for k in KEYS_EVAL}


def _online_units(store: Store, run_id: str | None) -> set[str]:
    from assay._store.scores import run_scores

    assert run_id is not None
    return {r.unit_id for r in run_scores(store, run_id)}


SIG_SETTINGS = Settings.model_validate({"min_cluster_size": 3})


def test_signatures_cluster_production_failures_only_unless_asked(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'sig.db'}")
    prod = [make_unit(f"prod-{i:02d}") for i in range(8)]
    evals = [with_environment(make_unit(f"eval-{i:02d}", user_text="Simulated user: cancel my booking."),
                              Environment("evaluation")) for i in range(8)]
    untagged = [make_unit(f"plain-{i:02d}") for i in range(4)]
    store.add_units([with_environment(u, Environment("production", "1.0")) for u in prod] + evals + untagged)
    assert set(failed_unit_ids(store)) == {u.unit_id for u in prod + untagged}
    sigs = build_signatures(store, SIG_SETTINGS)
    members = {u for s in sigs for u in s.unit_ids}
    assert members and members <= {u.unit_id for u in prod + untagged}
    assert all(set(s.environments) == {"production"} for s in sigs if s.size)
    every = build_signatures(store, SIG_SETTINGS, env="all")
    assert {u for s in every for u in s.unit_ids} & {u.unit_id for u in evals}
    assert any("evaluation" in s.environments for s in every)

    # the app: the signatures page shows and filters by environment; the review page header names it
    settings = Settings(workspace=tmp_path, store_url=store.url, session_secret="s")
    add_user(store, "ann", PASSWORD, "annotator")
    client = TestClient(create_app(settings, store))
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    client.post("/login", data={"name": "ann", "password": PASSWORD, "next": "/", "csrf_token": token.group(1)})
    listing = client.get("/").text
    assert "<th>Environments</th>" in listing and "evaluation" in listing
    only_prod = client.get("/", params={"env": "production"}).text
    eval_only = [s for s in every if set(s.environments) == {"evaluation"}]
    assert all(f'href="/signatures/{s.id}"' not in only_prod for s in eval_only)
    review = client.get("/review/eval-00").text
    assert re.search(r'id="environment">environment evaluation<', review)
    assert re.search(r'id="environment">environment production \(not set\)<', client.get("/review/plain-00").text)
    assert "release 1.0" in client.get("/review/prod-00").text
    dashboard = client.get("/dashboard", params={"env": "evaluation"}).text
    assert 'value="evaluation"' in dashboard


def test_the_lifecycle_and_workflows_count_production_only_unless_asked(tmp_path: Path) -> None:
    """Evaluation units assigned to a signature never make it escalate, nor move production's failure rates."""
    from datetime import UTC, datetime, timedelta

    from assay._store.tables import MemberRow, SignatureRow
    from assay.signatures import update_lifecycle, workflow_report

    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store = Store(f"sqlite:///{tmp_path / 'life.db'}")
    with store.session() as s:
        s.add(SignatureRow(id=1, structural_key="tool=book", label="book: amount wrong", keywords=[], size=0,
                           status="new", created_at=(now - timedelta(days=20)).replace(tzinfo=None)))
    evals = [with_environment(make_unit(f"eval-{i:02d}"), Environment("evaluation")) for i in range(8)]
    prod = [with_environment(make_unit(f"prod-{i:02d}"), Environment("production")) for i in range(2)]
    store.add_units(evals + prod)
    with store.session() as s:
        for u in evals + prod:  # a burst of evaluation members in the latest window, two production ones
            s.add(MemberRow(unit_id=u.unit_id, signature_id=1, structural_key="tool=book", distance=0.1,
                            seen_at=(now - timedelta(days=1)).replace(tzinfo=None), assignment="assigned"))
    settings = Settings(workspace=tmp_path)
    assert [c.to_state for c in update_lifecycle(store, settings, now)] == ["new"]
    assert [c.to_state for c in update_lifecycle(store, settings, now, env="all")] == ["escalating"]

    assert workflow_report(store).units == len(prod)
    assert workflow_report(store, env="evaluation").units == len(evals)
    assert workflow_report(store, env="all").units == len(evals + prod)


def test_the_worker_brings_production_signatures_up_to_date_only(tmp_path: Path) -> None:
    from assay.signatures import map_points

    settings, store = mixed_traffic(tmp_path)
    settings = settings.model_copy(update={"min_cluster_size": 2, "online": settings.online.model_copy(
        update={"signatures_interval_s": 0})})
    failed_eval = set(store.select_unit_ids("failed,env:evaluation"))
    assert failed_eval  # evaluation traces fail too
    OnlineWorker(store, settings).run(_Stop(), once=True)
    known = {p[0] for p in map_points(store)}
    assert known == set(failed_unit_ids(store)) and not known & failed_eval
    # a worker of another environment scores its units but leaves the (production) signatures alone
    OnlineWorker(store, settings, env="evaluation").run(_Stop(), once=True)
    assert {p[0] for p in map_points(store)} == known


def _signature_view(workspace: Path, *env: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--workspace", str(workspace), "signatures", "--json", *env])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_viewing_another_environment_never_changes_the_production_signatures(tmp_path: Path) -> None:
    """`assay signatures --env all` / `--env ci` cluster those units for the view only: the stored signatures
    (production's) keep their members, impact and ranking (an adopter saw `--env all` add 6 ci members)."""
    from assay.signatures import map_points

    (tmp_path / "assay.toml").write_text("min_cluster_size = 3\n")
    store = Store(Settings(workspace=tmp_path).resolved_store_url())
    prod = [with_environment(make_unit(f"prod-{i:02d}"), Environment("production")) for i in range(4)]
    prod += [with_environment(make_unit(f"prod-cancel-{i:02d}", user_text="Cancel my order.", tool="cancel_order"),
                              Environment("production")) for i in range(3)]
    ci = [with_environment(make_unit(f"ci-{i:02d}"), Environment("ci")) for i in range(6)]
    store.add_units(prod + ci)
    before = _signature_view(tmp_path)
    assert before and all(set(s["environments"]) == {"production"} for s in before)
    members_before = map_points(store)

    every = _signature_view(tmp_path, "--env", "all")
    assert {u for s in every for u in s["unit_ids"]} >= {u.unit_id for u in ci}
    only_ci = _signature_view(tmp_path, "--env", "ci")
    assert {u for s in only_ci for u in s["unit_ids"]} == {u.unit_id for u in ci}
    assert all(set(s["environments"]) == {"ci"} for s in only_ci)

    assert map_points(store) == members_before
    assert _signature_view(tmp_path) == before
    table = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "signatures", "--env", "all"])
    said = " ".join(table.output.split())
    assert table.exit_code == 0 and "environment: all (the failed units of every environment" in said, said
    assert "other environments are not clustered" not in said
    update = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "signatures", "update", "--env", "ci"])
    assert update.exit_code == 2 and "--env ci" in update.output


def test_an_unknown_environment_is_a_usage_error_everywhere(tmp_path: Path) -> None:
    """A typo in --env or env:NAME exits 2 naming the environments the store knows (their units', API keys',
    and the configured production and default ones even before a unit has them); it never selects nothing."""
    from assay.settings import load_settings

    (tmp_path / "assay.toml").write_text('[environments]\nproduction = "prod"\n')
    settings = load_settings(tmp_path, env={})
    store = Store(settings.resolved_store_url(), settings.signals, settings.environments)
    store.add_units([with_environment(make_unit("ci-00"), Environment("ci")), make_unit("plain-00")])
    create_api_key(store, "harness", env="staging")
    ws = ["--workspace", str(tmp_path)]
    for args in (["signatures", "--env", "nope"], ["signatures", "--by-workflow", "--env", "nope"],
                 ["drift", "--env", "nope"], ["worker", "--once", "--env", "nope"],
                 ["report", "--env", "nope", "--output", str(tmp_path / "r.html")],
                 ["gate", "--candidate", "failed,env:nope"]):
        result = CliRunner().invoke(cli, [*ws, *args])
        assert result.exit_code == 2, (args, result.output)
        assert "unknown environment 'nope'" in result.output, (args, result.output)
        assert all(name in result.output for name in ("ci", "prod", "production", "staging", "'all'")), result.output
    assert store.select_unit_ids("env:ci") == ["ci-00"]
    assert store.select_unit_ids("env:prod") == []  # configured, no unit yet: known, selects nothing
    with pytest.raises(UsageError, match="unknown environment 'nope'"):
        store.select_unit_ids("env:nope")
    assert CliRunner().invoke(cli, [*ws, "worker", "--once", "--env", "staging"]).exit_code == 0
