"""Token usage, cost and latency per unit: counted once per trace across nested spans, unknown never 0,
priced by configured prices when the source gives no cost; stored per unit, shown by the API, the review
page and the signature listing."""

from __future__ import annotations

import gc
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow, UnitRow
from assay._store.usage import unit_usages
from assay._web.app import create_app
from assay._web.auth import create_api_key
from assay.settings import ModelPrice
from assay.signatures import list_signatures
from assay.traces import Span, Unit, read_file
from assay.traces.usage import unit_usage, usage_summary
from tests.ui_fixtures import PASSWORD, add_user, settings_for

from .conftest import AIRLINE, DATA

LANGFUSE = DATA / "langfuse-framework-traces" / "worker" / "src" / "__tests__" / "chatml" / "framework-traces"
T0 = 1_760_000_000_000_000_000


def _attr(key: str, value: Any) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "doubleValue" if isinstance(value, float) else "stringValue"
    return {"key": key, "value": {kind: value}}


def _span(span: str, parent: str | None, kind: str, start: int, end: int, **attrs: Any) -> dict[str, Any]:
    return {"traceId": "ab" * 16, "spanId": span * 16, **({"parentSpanId": parent * 16} if parent else {}),
            "name": kind.lower(), "startTimeUnixNano": str(T0 + start), "endTimeUnixNano": str(T0 + end),
            "attributes": [_attr("openinference.span.kind", kind), *(_attr(k, v) for k, v in attrs.items())]}


def _openinference_agent(tmp_path: Path) -> Path:
    """An AGENT span whose token counts repeat its two LLM children's; one LLM wraps the SDK's LLM span with
    the same counts; a TOOL span without usage; one LLM child without counts (usage unknown)."""
    spans = [_span("1", None, "AGENT", 0, 4_000_000_000, **{"llm.token_count.prompt": 300,
                                                            "llm.token_count.completion": 70}),
             _span("2", "1", "LLM", 100, 1_000_000_000, **{"llm.token_count.prompt": 100,
                                                            "llm.token_count.completion": 20,
                                                            "llm.model_name": "gpt-4o-mini", "llm.cost.total": 0.5}),
             _span("3", "1", "TOOL", 1_000_000_000, 2_000_000_000, **{"tool.name": "lookup"}),
             _span("4", "1", "LLM", 2_000_000_000, 3_900_000_000, **{"llm.token_count.prompt": 200,
                                                                      "llm.token_count.completion": 50,
                                                                      "llm.model_name": "gpt-4o-mini-2024-07-18"}),
             _span("5", "4", "LLM", 2_000_000_100, 3_800_000_000, **{"llm.token_count.prompt": 200,
                                                                      "llm.token_count.completion": 50,
                                                                      "llm.model_name": "gpt-4o-mini-2024-07-18"}),
             _span("6", "1", "LLM", 3_900_000_000, 3_950_000_000)]
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
    return path


def test_nested_usage_is_counted_once_and_unknown_stays_unknown(tmp_path: Path) -> None:
    (unit,) = read_file(_openinference_agent(tmp_path)).units
    usage = unit_usage(unit)
    assert (usage.input_tokens, usage.output_tokens) == (300, 70)  # not 300 + 300 + 200 + 200 + 100
    assert (usage.spans_with_usage, usage.spans_nested, usage.llm_spans) == (2, 2, 4)
    assert usage.cost_usd == 0.5 and usage.spans_with_cost == 1  # the other call has no cost: not 0
    assert usage.latency_s == pytest.approx(4.0)
    priced = usage.priced({"gpt-4o-mini": ModelPrice(input_per_mtok=1000, output_per_mtok=2000)})
    assert priced.cost_usd == pytest.approx(0.5 + (200 * 1000 + 50 * 2000) / 1e6) and priced.spans_with_cost == 2
    assert usage.priced({"claude": ModelPrice(input_per_mtok=1, output_per_mtok=1)}) == usage
    assert usage_summary(usage) == "300 in / 70 out tokens · $0.5000 · 4.0 s · usage on 2 of 4 model calls"
    nothing = unit_usage(read_file(AIRLINE).units[0])  # tau-bench records no usage and no clock times
    assert (nothing.input_tokens, nothing.cost_usd, nothing.latency_s, nothing.known) == (None, None, None, False)
    assert "unknown" in usage_summary(nothing)


@pytest.mark.parametrize("name, tokens, cost", [
    ("pydantic-ai-tools-2025-12-04", (1315, 209), 0.00032265),  # 4 generations; agent spans repeat them
    ("microsoft-agent-2025-12-17", (293, 106), 0.00028525),     # an AGENT observation's own total not added
    ("beeai-2025-08-01", (5542, None), 0.0008313),              # no output counts given: unknown, not 0
])
def test_langfuse_usage_and_cost(name: str, tokens: tuple[int, int | None], cost: float) -> None:
    (unit,) = read_file(LANGFUSE / f"{name}.trace.json").units
    usage = unit_usage(unit)
    assert (usage.input_tokens, usage.output_tokens) == tokens
    assert usage.cost_usd == pytest.approx(cost)
    raw = json.loads((LANGFUSE / f"{name}.trace.json").read_text())["observations"]
    assert usage.spans_with_usage == sum(o["type"] == "GENERATION" and bool(o["usageDetails"]) for o in raw)


def test_chat_log_usage(tmp_path: Path) -> None:
    lines = [{"id": "c1", "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
              "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}},
             {"id": "c2", "system": "Be brief.", "usage": {"input_tokens": 40, "output_tokens": 9},
              "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
                  {"type": "text", "text": "hey"}]}]},
             {"id": "c3", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    usages = [unit_usage(u) for u in read_file(path).units]
    assert [(u.input_tokens, u.output_tokens) for u in usages] == [(12, 3), (40, 9), (None, None)]
    first = read_file(path).units[0]
    assert [s.model for s in first.spans if s.kind == "llm"] == ["gpt-4o"]


def _unit(uid: str, cost: float | None, seconds: float = 2.0) -> Unit:
    trace = hashlib.sha256(uid.encode()).hexdigest()[:32]
    root = Span(trace_id=trace, span_id="1" * 16, name="run", kind="agent", start_ns=T0, end_ns=T0 + int(seconds * 1e9))
    llm = Span(trace_id=trace, span_id="2" * 16, parent_span_id="1" * 16, name="chat", kind="llm", start_ns=T0,
               end_ns=T0 + 1, input_tokens=10, output_tokens=5, cost_usd=cost, model="m-1")
    return Unit(unit_id=uid, kind="trace", source="test", spans=(root, llm), outcome="fail")


def _login(client: TestClient) -> None:
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    r = client.post("/login", data={"name": "ann", "password": PASSWORD, "next": "/", "csrf_token": token.group(1)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


def test_usage_is_stored_and_shown_per_unit_and_per_signature(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.prices = {"m-": ModelPrice(input_per_mtok=1000.0, output_per_mtok=1000.0)}
    store = Store(settings.store_url)
    store.add_units([_unit("u1", 0.25), _unit("u2", 0.75, 4.0), _unit("u3", None)])
    with store.session() as s:
        assert s.get(UnitRow, "u1").usage["cost_usd"] == 0.25  # type: ignore[union-attr]  # stored at ingest
        s.get(UnitRow, "u2").usage = None  # type: ignore[union-attr]  # as a unit stored before usage existed
        s.add(SignatureRow(id=1, structural_key="k", label="k", keywords=[], size=3, representative_unit="u1",
                           status="new"))
        s.flush()
        s.add_all([MemberRow(unit_id=u, signature_id=1, structural_key="k", distance=0.1, assignment="cluster",
                             seen_at=datetime.now(UTC)) for u in ("u1", "u2", "u3")])
    assert unit_usages(store, ["u2"])["u2"].cost_usd == 0.75  # computed from the spans, and stored
    with store.session() as s:
        assert s.get(UnitRow, "u2").usage is not None  # type: ignore[union-attr]
    (sig,) = list_signatures(store)
    assert (sig.usage.cost_usd_sum, sig.usage.units_with_cost, sig.usage.cost_usd_mean) == (1.0, 2, 0.5)
    assert (sig.usage.tokens_sum, sig.usage.latency_s_mean) == (45, pytest.approx(8 / 3))
    (priced,) = list_signatures(store, prices=settings.prices)  # u3's tokens priced: 15 tokens x $1000/M
    assert priced.usage.cost_usd_sum == pytest.approx(1.015) and priced.usage.units_with_cost == 3
    add_user(store, "ann", PASSWORD, "annotator")
    key = create_api_key(store, owner="ci")
    try:
        with TestClient(create_app(settings, store)) as client:
            unit = client.get("/api/v1/units/u1", headers={"Authorization": f"Bearer {key}"}).json()
            assert unit["usage"]["cost_usd"] == 0.25 and unit["usage"]["input_tokens"] == 10
            assert unit["usage"]["spans_with_usage"] == 1 and unit["usage"]["llm_spans"] == 1
            sigs = client.get("/api/v1/signatures", headers={"Authorization": f"Bearer {key}"}).json()
            assert sigs[0]["usage"]["cost_usd_sum"] == pytest.approx(1.015)
            _login(client)
            page = client.get("/review/u1").text
            assert "10 in / 5 out tokens · $0.2500 · 2.0 s · usage on 1 of 1 model calls" in page
            assert "$1.0150" in client.get("/").text or "$1.0150" in client.get("/signatures").text
    finally:
        store.close()
        gc.unfreeze()


def test_live_ingestion_marks_usage_stale_and_a_read_recomputes_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    first, second = _unit("live", 0.25).spans
    store.add_spans([first])
    assert unit_usages(store, ["trace/" + first.trace_id])["trace/" + first.trace_id].cost_usd is None
    store.add_spans([second])
    with store.session() as s:
        assert s.get(UnitRow, "trace/" + first.trace_id).usage is None  # type: ignore[union-attr]
    assert unit_usages(store, ["trace/" + first.trace_id])["trace/" + first.trace_id].cost_usd == 0.25
    store.close()
