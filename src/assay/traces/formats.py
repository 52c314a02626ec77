"""The built-in trace formats, registered with :func:`~assay.traces.readers.trace_reader` as a package's are.

Registration order is the order ``auto`` tries them in: OTLP JSON, tau-bench, Magentic-One,
Langfuse, then the chat logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from assay.exceptions import IngestError
from assay.traces import chat_logs, langfuse, magentic, tau_bench
from assay.traces import otlp as otlp_json
from assay.traces.chat_logs import ChatFormat
from assay.traces.model import Span
from assay.traces.readers import Layout, ReadResult, Rejection, TraceReader, trace_reader
from assay.traces.shapes import describe_error


@trace_reader("otlp-json")
class OtlpJsonReader(TraceReader):
    """An OTLP JSON export (``ExportTraceServiceRequest``), or one per line as the Collector's file exporter writes."""

    layout: ClassVar[Layout] = "either"

    def detect(self, data: object) -> bool:
        return otlp_json.looks_like_otlp(data)

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        if not isinstance(data, dict):
            raise IngestError(str(path), "OTLP JSON file must hold an object with resourceSpans")
        result = ReadResult(path=str(path), format=name)
        result.units = otlp_json.group_units(self._spans(data, result, ""), f"{name}:{path.name}")
        return result

    def read_lines(self, text: str, path: Path, name: str, auto: bool) -> ReadResult:
        """Spans of all lines are grouped into units together; a bad line is rejected as ``line N: reason``."""
        result = ReadResult(path=str(path), format=name)
        spans: list[Span] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not otlp_json.looks_like_otlp(data):
                    raise ValueError("not an OTLP export (no resourceSpans)")
                spans += self._spans(data, result, f"line {n}: ")
            except Exception as exc:  # noqa: BLE001 - one bad line must not cost the file
                result.rejected.append(Rejection(str(path), f"line {n}: {describe_error(exc)}"))
        result.units = otlp_json.group_units(spans, f"{name}:{path.name}")
        return result

    @staticmethod
    def _spans(data: object, result: ReadResult, where: str) -> list[Span]:
        spans: list[Span] = []
        for span, reason in otlp_json.read_spans(data):
            if span is not None:
                spans.append(span)
            else:
                result.rejected.append(Rejection(result.path, f"{where}{reason}"))
        return spans


@trace_reader("tau-bench")
class TauBenchReader(TraceReader):
    """tau-bench trajectories: a list of runs with ``task_id`` and ``traj`` (or one run)."""

    def detect(self, data: object) -> bool:
        return tau_bench.looks_like_tau_bench(data)

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        if not isinstance(data, list | dict):
            raise IngestError(str(path), "tau-bench file must hold a list of runs")
        return ReadResult(path=str(path), format=name).add(tau_bench.read_runs(data, f"{name}:{path.name}"))


@trace_reader("magentic-one")
class MagenticReader(TraceReader):
    """A Magentic-One log: one run per file (the run id is the file name without ``.json``)."""

    def detect(self, data: object) -> bool:
        return magentic.looks_like_magentic(data)

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        return ReadResult(path=str(path), format=name).add(magentic.read_runs(data, path.stem,
                                                                              f"{name}:{path.name}"))


@trace_reader("langfuse")
class LangfuseReader(TraceReader):
    """A Langfuse export: an object with ``trace`` and a list of ``observations``."""

    def detect(self, data: object) -> bool:
        return langfuse.looks_like_langfuse(data)

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        if not isinstance(data, dict) or not langfuse.looks_like_langfuse(data):
            raise IngestError(str(path), "Langfuse export must hold an object with trace and observations")
        return ReadResult(path=str(path), format=name).add(langfuse.read_export(data, f"{name}:{path.name}"))


class ChatLogReader(TraceReader):
    """Chat-log JSON Lines, one conversation per line (see :mod:`assay.traces.chat_logs`).

    Named explicitly, every line is read as ``fmt``; detected (``auto``), each line is detected on
    its own, so OpenAI and Anthropic records may mix (format ``chat-jsonl`` when they do).
    """

    layout: ClassVar[Layout] = "lines"
    fmt: ClassVar[ChatFormat]

    def detect(self, data: object) -> bool:
        return chat_logs.detect_chat_format(data) == self.fmt

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        return self.read_lines(json.dumps(data), path, name, auto=False)

    def read_lines(self, text: str, path: Path, name: str, auto: bool) -> ReadResult:
        forced = None if auto else self.fmt
        result = ReadResult(path=str(path), format=forced or "chat-jsonl")
        formats: set[str] = set()
        for unit, reason in chat_logs.read_jsonl(text, forced, f"{forced or 'chat'}:{path.name}"):
            if unit is not None:
                result.units.append(unit)
                formats.add(str(unit.attributes.get("format")))
            else:
                result.rejected.append(Rejection(str(path), str(reason)))
        if not result.units and not result.rejected:
            raise IngestError(str(path), "empty JSONL file")
        if len(formats) == 1:
            result.format = formats.pop()
        return result


@trace_reader("openai-chat")
class OpenAIChatReader(ChatLogReader):
    """OpenAI chat-completions messages, one ``{messages}`` conversation per line."""

    fmt: ClassVar[ChatFormat] = "openai-chat"


@trace_reader("anthropic-messages")
class AnthropicMessagesReader(ChatLogReader):
    """Anthropic Messages API conversations (``system``, content blocks), one per line."""

    fmt: ClassVar[ChatFormat] = "anthropic-messages"
