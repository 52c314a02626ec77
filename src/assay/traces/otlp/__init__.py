"""OTLP, the native input: the JSON and protobuf encodings of trace and log exports decoded into
assay's spans, whether they come from a file or an OTLP/HTTP request.

Modules:
    mapping         span attributes (OTel GenAI semantic conventions, OpenInference) and log records
                    onto :class:`~assay.traces.model.Span` / :class:`~assay.traces.model.SpanEvent`;
                    spans grouped into units
    from_json       the JSON encoding (files, Collector file-exporter lines, HTTP bodies)
    from_protobuf   the protobuf encoding (needs ``opentelemetry-proto``, the ``serve`` extra; imported
                    only when a protobuf body arrives)
    export          export requests: encodings, gzip, decoding with partial-success bookkeeping, and the
                    response messages

Specs: OTLP (opentelemetry-proto ``docs/specification.md``, JSON with hex ids), OTel GenAI semantic
conventions v1.37, OpenInference semantic conventions.
"""

from assay.traces.otlp.export import (
    DecodedLogs,
    DecodedSpans,
    Encoding,
    Signal,
    decode_logs,
    decode_spans,
    decompress,
    encode_export_response,
    encode_status,
    partial_success_message,
    request_encoding,
    utf8_warnings,
)
from assay.traces.otlp.from_json import any_value, attributes, looks_like_otlp, otlp_span, read_spans
from assay.traces.otlp.mapping import LogItem, attributes_to_span, group_units, with_events

__all__ = [
    "DecodedLogs", "DecodedSpans", "Encoding", "LogItem", "Signal", "any_value", "attributes", "attributes_to_span",
    "decode_logs", "decode_spans", "decompress", "encode_export_response", "encode_status", "group_units",
    "looks_like_otlp", "otlp_span", "partial_success_message", "read_spans", "request_encoding",
    "utf8_warnings", "with_events",
]
