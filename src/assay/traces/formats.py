"""The built-in trace formats, registered with :func:`~assay.traces.readers.trace_reader` as a package's are.

Registration order is the order ``auto`` tries them in: OTLP JSON, tau-bench, Magentic-One,
Langfuse, then the chat logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from assay.exceptions import IngestError
from assay.traces import chat_logs, langfuse, magentic, tau_bench
from assay.traces import otlp as otlp_json
from assay.traces.chat_logs import ChatFormat
from assay.traces.model import Span
from assay.traces.readers import Layout, Read, ReadResult, Rejection, TraceReader, json_document, trace_reader
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
    """A Langfuse export: an object with ``trace`` and a list of ``observations``, or a list of such exports."""

    def detect(self, data: object) -> bool:
        if isinstance(data, list):
            return bool(data) and all(langfuse.looks_like_langfuse(x) for x in data)
        return langfuse.looks_like_langfuse(data)

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        exports = [x for x in (data if isinstance(data, list) else [data]) if isinstance(x, dict)]
        if not exports or not all(langfuse.looks_like_langfuse(x) for x in exports) \
                or len(exports) != (len(data) if isinstance(data, list) else 1):
            raise IngestError(str(path), "Langfuse export must hold an object with trace and observations "
                                         "(or a list of them)")
        result = ReadResult(path=str(path), format=name)
        for export in exports:
            result.add(langfuse.read_export(export, f"{name}:{path.name}"))
        return result


class ChatLogReader(TraceReader):
    """Chat logs (see :mod:`assay.traces.chat_logs`): JSON Lines, one conversation per line, or a JSON
    document holding one conversation (pretty-printed too), a list of them, or a bare list of messages.

    Named explicitly, every conversation is read as ``fmt``; detected (``auto``), each one is detected on
    its own, so OpenAI and Anthropic records may mix (format ``chat-jsonl`` when they do).
    """

    layout: ClassVar[Layout] = "lines"
    fmt: ClassVar[ChatFormat]

    def detect(self, data: object) -> bool:
        return chat_logs.detect_chat_document(data) == self.fmt

    def read(self, data: object, path: Path, name: str) -> ReadResult:
        if isinstance(data, dict):
            return self.read_lines(json.dumps(data), path, name, auto=False)
        try:
            return self._collect(chat_logs.read_document(data, self.fmt, f"{self.fmt}:{path.name}"), path, self.fmt)
        except ValueError as exc:
            raise IngestError(str(path), str(exc)) from exc

    def read_lines(self, text: str, path: Path, name: str, auto: bool) -> ReadResult:
        """JSON Lines; a file that is one JSON document over several lines (or one list) is read whole."""
        forced = None if auto else self.fmt
        document = json_document(text)
        if document is not None:
            try:
                reads = list(chat_logs.read_document(document, forced, f"{forced or 'chat'}:{path.name}"))
            except ValueError as exc:
                raise IngestError(str(path), str(exc)) from exc
            return self._collect(reads, path, forced)
        return self._collect(chat_logs.read_jsonl(text, forced, f"{forced or 'chat'}:{path.name}"), path, forced)

    @staticmethod
    def _collect(reads: Iterable[Read], path: Path, forced: str | None) -> ReadResult:
        result = ReadResult(path=str(path), format=forced or "chat-jsonl").add(reads)
        if not result.units and not result.rejected:
            raise IngestError(str(path), "no conversation in the file")
        formats = {str(u.attributes.get("format")) for u in result.units}
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
