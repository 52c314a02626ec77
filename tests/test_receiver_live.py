"""The receiver as a real process: a real OpenTelemetry SDK client exporting to it, and
durability under SIGKILL (every acknowledged span is in the store after restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assay._store import Store

from .test_receiver import PB, pb_body, pb_span, sid, tid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``python -m assay serve`` on a free loopback port, over a workspace folder."""

    def __init__(self, workspace: Path, *extra: str) -> None:
        self.workspace = workspace
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(workspace / f"serve-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "assay", "-w", str(workspace), "serve",
                                      "--port", str(self.port), *extra], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        self.stop()
        pytest.fail(f"server did not start: {(workspace / f'serve-{self.port}.log').read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, "--api-key", "k-123")
    yield server
    server.stop()


def test_real_opentelemetry_sdk_client(live: LiveServer) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "weather-agent"}))
    exporter = OTLPSpanExporter(endpoint=f"{live.url}/v1/traces", headers={"authorization": "Bearer k-123"},
                                compression=Compression.Gzip)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("weather-agent")
    with tracer.start_as_current_span("invoke_agent weather") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.conversation.id", "live-conv-1")
        with tracer.start_as_current_span("chat gpt-4o") as chat:
            chat.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Rain in Oslo?"}]}]',
                "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", '
                                          '"name": "weather", "arguments": {"city": "Oslo"}}]}]',
                "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 9})
        with tracer.start_as_current_span("execute_tool weather") as tool:
            tool.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather",
                                 "gen_ai.tool.call.id": "t1", "gen_ai.tool.call.arguments": '{"city": "Oslo"}',
                                 "gen_ai.tool.call.result": "light rain"})
        trace_id = f"{agent.get_span_context().trace_id:032x}"
    assert provider.force_flush(10_000)
    provider.shutdown()

    store = Store(f"sqlite:///{live.workspace / '.assay' / 'assay.db'}")
    unit = store.unit("session/live-conv-1")
    assert unit.trace_ids == [trace_id] and len(unit.spans) == 3
    by_kind = {s.kind: s for s in unit.spans}
    assert set(by_kind) == {"agent", "llm", "tool"}
    assert by_kind["llm"].output_messages[0].tool_calls[0].arguments == {"city": "Oslo"}
    assert by_kind["llm"].input_tokens == 12 and by_kind["tool"].tool_result == "light rain"
    assert by_kind["llm"].parent_span_id == by_kind["agent"].span_id and not by_kind["llm"].flags
    store.close()


def test_sigkill_loses_no_acknowledged_span(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    acked: list[tuple[str, str]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=10) as client:
            for batch in range(10_000):
                spans = [pb_span(batch + 1, i + 1, name="step", attrs={"input.value": "x" * 200})
                         for i in range(25)]
                try:
                    r = client.post(f"{server.url}/v1/traces", content=pb_body(*spans), headers=PB)
                except httpx.TransportError:
                    stop.set()
                    return
                if r.status_code == 200:
                    acked.extend((tid(batch + 1), sid(i + 1)) for i in range(25))

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acked) < 500 and time.monotonic() < deadline and sender.is_alive():
        time.sleep(0.01)
    server.stop(signal.SIGKILL)
    sender.join(timeout=30)
    assert stop.is_set() and len(acked) >= 500

    restarted = LiveServer(tmp_path)
    try:
        store = Store(f"sqlite:///{tmp_path / '.assay' / 'assay.db'}")
        with store.engine.connect() as conn:
            stored = set(conn.exec_driver_sql("SELECT trace_id, span_id FROM spans").fetchall())
        store.close()
    finally:
        restarted.stop()
    missing = [k for k in acked if k not in stored]
    assert not missing, f"{len(missing)} acknowledged spans lost of {len(acked)}"


def test_real_sdk_log_records_joined_to_span(live: LiveServer) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    headers = {"x-api-key": "k-123"}
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{live.url}/v1/traces",
                                                                            headers=headers)))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{live.url}/v1/logs",
                                                                                      headers=headers)))
    logger = logger_provider.get_logger("openai-v2")
    with tracer_provider.get_tracer("openai-v2").start_as_current_span("chat gpt-4o-mini") as chat:
        chat.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.system": "openai"})
        logger.emit(event_name="gen_ai.user.message", body={"content": "Capital of Peru?"},
                    attributes={"gen_ai.system": "openai"})
        logger.emit(event_name="gen_ai.choice", attributes={"gen_ai.system": "openai"},
                    body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Lima."}})
        trace_id = f"{chat.get_span_context().trace_id:032x}"
    logger_provider.shutdown()
    tracer_provider.shutdown()

    store = Store(f"sqlite:///{live.workspace / '.assay' / 'assay.db'}")
    span = store.unit(f"trace/{trace_id}").spans[0]
    assert [(m.role, m.content) for m in span.input_messages] == [("user", "Capital of Peru?")]
    assert [(m.role, m.content) for m in span.output_messages] == [("assistant", "Lima.")]
    assert span.provider == "openai" and span.flags == ()
    store.close()
