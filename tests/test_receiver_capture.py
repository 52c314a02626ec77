"""What experts and judges read is the whole truth (issue 15), through the real OTLP/HTTP receiver:
span copies merged, every span with content a step, media as parts, failed steps with their error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from assay._store.store import unit_content_hash
from assay._store.tables import UnitRow
from assay._store.usage import unit_usages
from assay.traces import render_timeline, step_timeline

from .test_receiver import CHAT, PB, T0, Server, pb_body, pb_response, pb_span, sid, tid


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


# --- 1. span identity merges -----------------------------------------------------------------------
def _copies(trace: int) -> tuple[PbSpan, PbSpan]:
    """An in-progress copy (no end time, input only) and the final copy (output, tokens, error status)."""
    partial = pb_span(trace, 2, 1, start=T0 + 10, end=0, attrs={
        "gen_ai.operation.name": "chat", "gen_ai.input.messages": CHAT["gen_ai.input.messages"],
        "app.stage": "started"})
    final = pb_span(trace, 2, 1, start=T0 + 10, end=T0 + 90, attrs={**CHAT, "gen_ai.usage.output_tokens": 3})
    final.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="upstream 529: overloaded"))
    return partial, final


@pytest.mark.parametrize("order", ["partial_first", "final_first"])
@pytest.mark.parametrize("requests", ["one_batch", "two_requests"])
def test_the_most_complete_copy_wins_in_any_order(tmp_path: Path, order: str, requests: str) -> None:
    server = Server(tmp_path)
    root = pb_span(30, 1, name="invoke_agent", start=T0, end=T0 + 100)
    partial, final = _copies(30)
    first, second = (partial, final) if order == "partial_first" else (final, partial)
    if requests == "one_batch":
        messages = [pb_response(server.post("/v1/traces", pb_body(root, first, second), PB))
                    .partial_success.error_message]
    else:
        messages = [pb_response(server.post("/v1/traces", pb_body(root, first), PB)).partial_success.error_message]
        unit_usages(server.store, [f"trace/{tid(30)}"])  # read (and stored) before the other copy arrives
        messages.append(pb_response(server.post("/v1/traces", pb_body(second), PB)).partial_success.error_message)
    assert "1 span(s) arrived in differing copies and were merged" in messages[-1]
    span = server.span(30, 2)
    assert span.end_ns == T0 + 90 and span.status == "error" and span.status_message == "upstream 529: overloaded"
    assert [m.content for m in span.output_messages] == ["Hello!"] and span.output_tokens == 3
    assert span.attributes["app.stage"] == "started" and "merged" in span.flags
    unit = server.store.unit(f"trace/{tid(30)}")
    with server.store.session() as s:
        row = s.get(UnitRow, unit.unit_id)
        assert row is not None and row.has_error and row.content_hash == unit_content_hash(unit.spans)
    usage = unit_usages(server.store, [unit.unit_id])[unit.unit_id]  # the merge made the stored usage stale
    assert (usage.input_tokens, usage.output_tokens, usage.spans_with_usage) == (7, 3, 1)
    steps = step_timeline(unit)
    assert not any(st.in_progress for st in steps)
    assert "[IN PROGRESS]" not in render_timeline(steps)


def test_an_in_progress_copy_never_looks_final_and_a_retry_is_no_merge(server: Server) -> None:
    partial, _ = _copies(31)
    tool = pb_span(31, 3, 1, name="execute_tool lookup_order", start=T0 + 20, end=0,
                   attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order"})
    body = pb_body(pb_span(31, 1, name="invoke_agent", start=T0, end=T0 + 100), partial, tool)
    pb_response(server.post("/v1/traces", body, PB))
    again = pb_response(server.post("/v1/traces", body, PB)).partial_success.error_message
    assert "merged" not in again and "merged" not in server.span(31, 2).flags
    steps = step_timeline(server.store.unit(f"trace/{tid(31)}"))
    result = next(st for st in steps if st.kind == "tool_result")
    assert result.in_progress and "not ended" in result.text and result.time_ns == T0 + 20
    assert "TOOL_RESULT lookup_order [IN PROGRESS]" in render_timeline(steps)


def test_a_merge_within_an_ingested_file_and_across_files(tmp_path: Path) -> None:
    from assay._store import Store
    from assay.traces.otlp import attributes_to_span, group_units

    def span(end: int, attrs: dict[str, Any]) -> Any:
        return attributes_to_span(attrs, trace_id=tid(32), span_id=sid(1), name="chat", start_ns=T0, end_ns=end)

    partial = span(0, {"gen_ai.operation.name": "chat", "app.stage": "started"})
    final = span(T0 + 5, {**CHAT})
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    counts = store.add_units(group_units([final], "file"))
    counts = store.add_units(group_units([partial], "file"))
    assert counts.spans_merged == 1 and counts.spans_new == 0
    one = store.unit(f"trace/{tid(32)}").spans[0]
    other = Store(f"sqlite:///{tmp_path / 'b.db'}")
    assert other.add_units(group_units([partial, final], "file")).spans_merged == 1
    assert other.unit(f"trace/{tid(32)}").spans[0] == one
    assert one.end_ns == T0 + 5 and one.attributes["app.stage"] == "started" and "merged" in one.flags
    assert json.loads(one.attributes["gen_ai.output.messages"])[0]["role"] == "assistant"
    third = Store(f"sqlite:///{tmp_path / 'c.db'}")  # the unit's usage follows the merged span
    third.add_units(group_units([partial], "file"))
    assert unit_usages(third, [f"trace/{tid(32)}"])[f"trace/{tid(32)}"].input_tokens is None
    third.add_units(group_units([final], "file"))
    assert unit_usages(third, [f"trace/{tid(32)}"])[f"trace/{tid(32)}"].input_tokens == 7


# --- 3. every span that carries content becomes a step ----------------------------------------------
def _oi(kind: str, **attrs: Any) -> dict[str, Any]:
    return {"openinference.span.kind": kind, **attrs} if kind else dict(attrs)


def test_every_span_with_content_becomes_a_step(server: Server) -> None:
    spans = [
        pb_span(40, 1, name="agent", start=T0, end=T0 + 100, attrs=_oi(
            "AGENT", **{"input.value": "Where is my parcel?", "input.mime_type": "text/plain",
                        "output.value": "It arrives Tuesday.", "output.mime_type": "text/plain"})),
        pb_span(40, 2, 1, name="route", start=T0 + 1, end=T0 + 2, attrs=_oi(
            "CHAIN", **{"input.value": json.dumps({"intent": "track"}), "input.mime_type": "application/json",
                        "output.value": '{"not": "state"}', "output.mime_type": "text/plain"})),
        pb_span(40, 3, 1, name="search", start=T0 + 3, end=T0 + 4, attrs=_oi(
            "RETRIEVER", **{"input.value": "parcel 881 status", "retrieval.documents.0.document.id": "d1",
                            "retrieval.documents.0.document.content": "Parcel 881: in transit"})),
        pb_span(40, 4, 1, name="rerank", start=T0 + 5, end=T0 + 6, attrs=_oi(
            "RERANKER", **{"input.value": "rerank 5 documents", "reranker.output.documents.0.document.id": "d1",
                           "reranker.output.documents.0.document.content": "Parcel 881: in transit"})),
        pb_span(40, 5, 1, name="embed", start=T0 + 7, end=T0 + 8, attrs=_oi(
            "EMBEDDING", **{"input.value": "parcel 881", "output.value": json.dumps([[0.1] * 384])})),
        pb_span(40, 6, 1, name="ChatOpenAI", start=T0 + 9, end=T0 + 10, attrs=_oi(
            "LLM", **{"input.value": json.dumps({"messages": [{"role": "user", "content": "Summarise: in transit"}]}),
                      "input.mime_type": "application/json", "output.value": "Your parcel is in transit."})),
        pb_span(40, 7, 1, name="pii-check", start=T0 + 11, end=T0 + 12, attrs=_oi(
            "GUARDRAIL", **{"input.value": "Your parcel is in transit.", "output.value": "passed: no PII"})),
        pb_span(40, 8, 1, name="format_reply", start=T0 + 13, end=T0 + 14,
                attrs={"input.value": "raw draft", "output.value": "It arrives Tuesday."}),
        pb_span(40, 9, 1, name="retrieval", start=T0 + 15, end=T0 + 16, attrs={
            "gen_ai.operation.name": "retrieval", "gen_ai.retrieval.query.text": "delivery policy",
            "gen_ai.retrieval.documents": json.dumps([{"id": "pol-2", "score": 0.8, "content": "3-5 days"}])}),
    ]
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    steps = step_timeline(server.store.unit(f"trace/{tid(40)}"))
    by_span: dict[str, list[Any]] = {}
    for st in steps:
        by_span.setdefault(st.span_id or "", []).append(st)
    kinds = {n: [(st.kind, st.text) for st in by_span.get(sid(n), [])] for n in range(1, 10)}
    assert kinds[1] == [("input", "Where is my parcel?")]  # its output: shown once, where it first appeared
    assert kinds[2] == [("input", '{"intent": "track"}'), ("output", '{"not": "state"}')]  # text/plain: no state
    assert kinds[3] == [("input", "parcel 881 status"), ("retrieval", "[d1] Parcel 881: in transit")]
    assert kinds[4] == [("input", "rerank 5 documents"), ("retrieval", "[d1] Parcel 881: in transit")]
    assert kinds[5] == [("input", "parcel 881"), ("output", "(embedding: 1 vector(s) of 384 numbers)")]
    assert kinds[6] == [("user", "Summarise: in transit"), ("assistant", "Your parcel is in transit.")]
    assert kinds[7] == [("output", "passed: no PII")]  # its input is the assistant turn already shown
    assert kinds[8] == [("input", "raw draft"), ("output", "It arrives Tuesday.")]
    assert kinds[9] == [("input", "delivery policy"), ("retrieval", "[pol-2] (score 0.8) 3-5 days")]
    route = by_span[sid(2)]
    assert [st.mime_type for st in route] == ["application/json", "text/plain"]
    assert "[2] INPUT route: {\"intent\": \"track\"}" in render_timeline(steps)

    from assay._web.pages import step_views

    views = {v.index: v for v in step_views(route)}
    assert views[route[0].index].is_args and views[route[0].index].body == '{\n  "intent": "track"\n}'
    assert not views[route[1].index].is_args and views[route[1].index].body == '{"not": "state"}'


# --- 7. a step records its agent -----------------------------------------------------------------------
def test_steps_record_the_agent_the_source_names(server: Server) -> None:
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund",
            "gen_ai.tool.call.arguments": '{"order": 7}', "gen_ai.tool.call.result": "refunded"}
    spans = [pb_span(41, 1, name="invoke_agent billing", start=T0, end=T0 + 100,
                     attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing"}),
             pb_span(41, 2, 1, start=T0 + 1, end=T0 + 2, attrs=CHAT),
             pb_span(41, 3, 1, name="execute_tool refund", start=T0 + 3, end=T0 + 4, attrs=tool),
             pb_span(41, 4, name="researcher", start=T0 + 10, end=T0 + 20,
                     attrs={"openinference.span.kind": "AGENT", "agent.name": "researcher",
                            "input.value": "find the policy", "output.value": "policy found"})]
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    steps = step_timeline(server.store.unit(f"trace/{tid(41)}"))
    assert [(st.kind, st.agent) for st in steps] == [
        ("user", "billing"), ("assistant", "billing"), ("tool_call", "billing"), ("tool_result", "billing"),
        ("input", "researcher"), ("output", "researcher")]
    assert "TOOL_CALL refund (billing)" in render_timeline(steps)


# --- 8. a failed step shows its error; the system prompt is its own judge prompt variable ---------------
def api_get(server: Server, path: str) -> Any:
    import asyncio

    import httpx

    from assay._web.auth import create_api_key

    key = create_api_key(server.store, owner="ci")

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://assay") as c:
            return await c.get(path, headers={"authorization": f"Bearer {key}"})

    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    return response.json()


def _failed(pb: PbSpan, message: str, exc_type: str, exc_message: str, stack: str = "") -> PbSpan:
    pb.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=message))
    attrs = {"exception.type": exc_type, "exception.message": exc_message, "exception.stacktrace": stack}
    event = pb.events.add(name="exception", time_unix_nano=pb.end_time_unix_nano)
    event.attributes.extend(pb_span(1, 1, attrs={k: v for k, v in attrs.items() if v}).attributes)
    return pb


STACK = 'Traceback (most recent call last):\n  File "orders.py", line 12, in lookup\n    return ORDERS[oid]\nKeyError'
POLICY = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agentrx" / "data" / "policies"
          / "retail_policy.txt")


def test_a_failed_step_shows_its_error_to_reviewers_the_api_and_the_judge(server: Server) -> None:
    from assay.evaluators import EvaluatorDef, render_prompt
    from assay.settings import JudgeSettings

    policy = POLICY.read_text(encoding="utf-8")
    chat = {"gen_ai.operation.name": "chat", "gen_ai.system_instructions": json.dumps(
        [{"type": "text", "content": policy}]), "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "Where is order 7? " + "Please check. " * 60}]}])}
    tool = pb_span(42, 3, 1, name="execute_tool lookup_order", start=T0 + 20, end=T0 + 30, attrs={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.arguments": '{"order": 7}'})
    llm = pb_span(42, 4, 1, start=T0 + 40, end=T0 + 50, attrs={"gen_ai.operation.name": "chat"})
    spans = [pb_span(42, 1, name="invoke_agent", start=T0, end=T0 + 100), pb_span(42, 2, 1, start=T0 + 1,
             end=T0 + 2, attrs=chat), _failed(tool, "lookup failed", "KeyError", "order 7 not found", STACK),
             _failed(llm, "", "openai.RateLimitError", "429 Too Many Requests")]
    pb_response(server.post("/v1/traces", pb_body(*spans), PB))
    unit = server.store.unit(f"trace/{tid(42)}")
    steps = step_timeline(unit)
    result = next(st for st in steps if st.kind == "tool_result")
    assert result.is_error and result.error == "lookup failed; KeyError: order 7 not found"
    assert result.stacktrace == STACK
    error = next(st for st in steps if st.kind == "error")
    assert error.text == "openai.RateLimitError: 429 Too Many Requests"
    text = render_timeline(steps)
    assert "TOOL_RESULT lookup_order [ERROR]: Error: lookup failed; KeyError: order 7 not found" in text
    assert "Traceback" not in text
    api = api_get(server, f"/api/v1/units/trace/{tid(42)}")
    api_result = next(st for st in api["steps"] if st["kind"] == "tool_result")
    assert api_result["error"] == result.error and api_result["stacktrace"] == STACK

    template = "POLICY:\n{{ system_prompt }}\n---\n{{ timeline }}\n{{ criterion.text }}"
    defn = EvaluatorDef.model_validate({"name": "follows-policy", "kind": "llm_judge", "dimension": "policy",
                                        "criterion": {"name": "policy", "text": "The agent follows the policy."},
                                        "judge": {"prompt": template}})
    settings = JudgeSettings(max_prompt_chars=1500)
    prompt = render_prompt(defn, unit, settings)
    assert len(policy) > 5_000 and policy.strip() in prompt  # the whole policy, on its own budget
    assert "[... " not in prompt and "Where is order 7?" in prompt  # the conversation is not pushed out
    assert "KeyError: order 7 not found" in prompt and "Traceback" not in prompt
    assert len(prompt) < 1500 + len(policy) + 200
    short = render_prompt(defn, unit, settings.model_copy(update={"max_system_chars": 1000}))
    assert "more characters of the system prompt omitted" in short and policy[:1000] in short
    default = render_prompt(defn.model_copy(update={"judge": defn.judge_spec().model_copy(update={"prompt": None})}),
                            unit, settings)
    assert policy[:200] not in default  # the shipped prompt (and so every evaluator version) is unchanged


# --- 4-5. media as typed message parts, never text ------------------------------------------------------
IMAGE = __import__("random").Random(15).randbytes(2_359_296)  # 3 MB as base64
B64 = __import__("base64").b64encode(IMAGE).decode()
DATA_URL = f"data:image/png;base64,{B64}"
SHA = __import__("hashlib").sha256(IMAGE).hexdigest()


def _assert_the_image(part: Any) -> None:
    assert (part.kind, part.sha256, part.size_bytes, part.mime_type) == ("image", SHA, len(IMAGE), "image/png")
    assert part.reference == f"inline base64, {len(IMAGE):,} bytes, sha256 {SHA[:12]}…"


def _no_base64(*texts: str | None) -> None:
    assert all(B64[:200] not in (t or "") and len(t or "") < 100_000 for t in texts)


def test_media_parts_from_every_shape_with_their_reference(server: Server, tmp_path: Path) -> None:
    from assay.evaluators import EvaluatorDef, render_prompt
    from assay.settings import JudgeSettings
    from assay.traces import read_file

    genai = json.dumps([{"role": "user", "parts": [
        {"type": "text", "content": "What is in these?"}, {"type": "file", "modality": "image", "file_id": "file-123"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
        {"type": "uri", "modality": "video", "mime_type": "video/mp4", "uri": "gs://bucket/clip.mp4"}]}])
    oi = {"openinference.span.kind": "LLM",
          "llm.input_messages.0.message.role": "user",
          "llm.input_messages.0.message.contents.0.message_content.type": "text",
          "llm.input_messages.0.message.contents.0.message_content.text": "Describe it",
          "llm.input_messages.0.message.contents.1.message_content.type": "image",
          "llm.input_messages.0.message.contents.1.message_content.image.image.url": DATA_URL}
    pb_response(server.post("/v1/traces", pb_body(
        pb_span(50, 1, attrs={"gen_ai.operation.name": "chat", "gen_ai.input.messages": genai}),
        pb_span(51, 1, name="llm", attrs=oi)), PB))
    (user,) = server.span(50, 1).input_messages
    assert user.content == "What is in these?"
    assert [p.reference for p in user.media] == ["file-123", user.media[1].reference, "gs://bucket/clip.mp4"]
    assert [p.kind for p in user.media] == ["image", "image", "video"]
    _assert_the_image(user.media[1])
    api = api_get(server, f"/api/v1/units/trace/{tid(50)}")
    assert [p["reference"] for p in api["steps"][0]["media"]][:1] == ["file-123"]
    assert api["steps"][0]["media"][1]["sha256"] == SHA and "data" not in api["steps"][0]["media"][1]
    _no_base64(json.dumps(api))
    (oi_user,) = server.span(51, 1).input_messages
    assert oi_user.content == "Describe it"
    _assert_the_image(oi_user.media[0])

    openai = {"id": "mm-1", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Is this a cat?"},
                                     {"type": "image_url", "image_url": {"url": DATA_URL}},
                                     {"type": "file", "file": {"file_id": "file-123"}}]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": DATA_URL, "detail": "high"}}]},
        {"role": "assistant", "content": "Same cat."}]}
    anthropic = {"system": "You look at pictures.", "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": B64}},
                                     {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]}
    (tmp_path / "openai.jsonl").write_text(json.dumps(openai) + "\n")
    (tmp_path / "claude.jsonl").write_text(json.dumps(anthropic) + "\n")
    chat = read_file(tmp_path / "openai.jsonl").units[0]
    claude = read_file(tmp_path / "claude.jsonl").units[0]
    users = [m for s in chat.spans for m in s.output_messages if m.role == "user"]
    assert [m.content for m in users] == ["Is this a cat?", None]  # the image-only turn has no text at all
    _assert_the_image(users[0].media[0])
    _assert_the_image(users[1].media[0])
    assert users[0].media[1].file_id == "file-123"
    claude_user = next(m for s in claude.spans for m in s.output_messages if m.role == "user")
    assert claude_user.content == "And this?"
    _assert_the_image(claude_user.media[0])

    steps = step_timeline(chat)
    image_only = next(st for st in steps if st.kind == "user" and not st.text)
    assert [p.sha256 for p in image_only.media] == [SHA]
    text = render_timeline(steps)
    assert f"[image: inline base64, {len(IMAGE):,} bytes, sha256 {SHA[:12]}…]" in text
    assert "[file: file-123]" in text
    _no_base64(text, *(m.content for s in chat.spans for m in s.output_messages), *(st.text for st in steps))
    defn = EvaluatorDef.model_validate({"name": "cat", "kind": "llm_judge", "dimension": "vision",
                                        "criterion": {"name": "cat", "text": "The agent names the animal."}})
    prompt = render_prompt(defn, chat, JudgeSettings(max_prompt_chars=1500))
    _no_base64(prompt)
    assert "Is this a cat?" in prompt and f"sha256 {SHA[:12]}" in prompt
    assert "media you cannot see (only text reaches you): 1 file, 2 images" in prompt
    timeline = prompt.split("<timeline>\n")[1].split("\n</timeline>")[0]
    assert len(timeline) <= 1500


def test_langfuse_media_tokens_parse_to_the_same_parts(tmp_path: Path) -> None:
    from assay.traces import read_file

    token = "@@@langfuseMedia:type=image/jpeg|id=cc48838a-3da8-4ca4-a007-2cf8df930e69|source=base64_data_uri@@@"
    shapes = [token, [{"type": "image_url", "image_url": {"url": token}}],
              f"What is on this receipt? {token}", [{"role": "user", "content": [
                  {"type": "text", "text": "and this one"}, {"type": "image_url", "image_url": {"url": token}}]}]]
    observations = [{"id": f"obs-{i}", "traceId": "t-1", "type": "GENERATION", "name": "vision",
                     "startTime": f"2025-06-0{i + 1}T10:00:00Z", "endTime": f"2025-06-0{i + 1}T10:00:01Z",
                     "input": shape, "output": "A receipt."} for i, shape in enumerate(shapes)]
    (tmp_path / "export.json").write_text(json.dumps({"trace": {"id": "t-1"}, "observations": observations}))
    unit = read_file(tmp_path / "export.json").units[0]
    inputs = [s.input_messages[0] for s in sorted(unit.spans, key=lambda s: s.start_ns)]
    assert [m.content for m in inputs] == [None, None, "What is on this receipt?", "and this one"]
    parts = {m.media for m in inputs}
    assert len(parts) == 1
    (part,) = parts.pop()
    assert (part.kind, part.mime_type, part.provider_id) == ("image", "image/jpeg",
                                                             "cc48838a-3da8-4ca4-a007-2cf8df930e69")
    text = render_timeline(step_timeline(unit))
    assert "@@@" not in text
    assert "[image: langfuse media cc48838a-3da8-4ca4-a007-2cf8df930e69 (base64_data_uri)]" in text
