"""Captured traces: domain types and readers (OTLP JSON/protobuf with OTel GenAI / OpenInference, Langfuse
exports, OpenAI / Anthropic chat-log JSONL, tau-bench, Magentic-One; more formats from packages through the
entry-point group ``assay.readers``)."""

from assay.traces.ingest import IngestResult, UnitSink, ingest_paths
from assay.traces.model import (
    Message,
    Session,
    Span,
    SpanEvent,
    Step,
    ToolCall,
    Trace,
    Unit,
    parse_arguments,
    timestamp_ns,
)
from assay.traces.readers import ReadResult, Rejection, TraceReader, detect_format, read_file, trace_reader
from assay.traces.timeline import looks_like_error, render_timeline, step_timeline

__all__ = [
    "IngestResult", "Message", "ReadResult", "Rejection", "Session", "Span", "SpanEvent", "Step", "ToolCall", "Trace",
    "TraceReader", "Unit", "UnitSink", "detect_format", "ingest_paths", "looks_like_error", "parse_arguments",
    "read_file", "render_timeline", "step_timeline", "timestamp_ns", "trace_reader",
]
