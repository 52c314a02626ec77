"""Captured traces: domain types and readers (tau-bench, OTLP JSON with OTel GenAI / OpenInference)."""

from assay.traces.model import Message, Session, Span, Step, ToolCall, Trace, Unit, parse_arguments
from assay.traces.readers import ReadResult, Rejection, detect_format, read_file
from assay.traces.timeline import looks_like_error, render_timeline, step_timeline

__all__ = [
    "Message", "ReadResult", "Rejection", "Session", "Span", "Step", "ToolCall", "Trace", "Unit",
    "detect_format", "looks_like_error", "parse_arguments", "read_file", "render_timeline",
    "step_timeline",
]
