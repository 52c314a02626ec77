"""OTLP export requests as a receiver gets them: a body in one encoding, decoded into spans or log
records plus the partial-success bookkeeping, and the response messages.

Spec: OTLP/HTTP (opentelemetry-proto ``docs/specification.md``). Bodies are protobuf
(``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``) or JSON (the proto3 JSON mapping with
hex ids), optionally gzip-compressed. Valid spans are kept and invalid ones rejected with a reason;
the response's ``partialSuccess`` carries the count and a message (a message with zero rejected is a
warning). A body that cannot be decoded at all raises :class:`~assay.exceptions.OtlpError` with the
status the spec names. HTTP itself (routes, authentication, reading the stream) is the web shell's.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Literal, NamedTuple, TypeVar

from assay.exceptions import MissingDependency, OtlpError
from assay.traces.model import Span
from assay.traces.otlp import from_json
from assay.traces.otlp.mapping import LogItem
from assay.traces.shapes import ShapeError

Encoding = Literal["protobuf", "json"]
T = TypeVar("T")
Signal = Literal["traces", "logs"]
MAX_REASONS = 5
"""Rejection reasons quoted in a partial-success message (the rest are counted)."""


class DecodedSpans(NamedTuple):
    """The spans of one export request: ``spans`` valid, ``rejected`` one reason per rejected span."""

    spans: list[Span]
    rejected: list[str]


class DecodedLogs(NamedTuple):
    """The log records of one export request, ``(trace id, span id, event)``, and one reason per rejected one."""

    items: list[LogItem]
    rejected: list[str]


def _protobuf() -> ModuleType:
    """:mod:`assay.traces.otlp.from_protobuf`, imported on first use.

    Raises:
        MissingDependency: ``opentelemetry-proto`` is not installed.
    """
    try:
        from assay.traces.otlp import from_protobuf
    except ImportError as exc:
        raise MissingDependency("opentelemetry-proto", "pip install 'assay[serve]'") from exc
    return from_protobuf


def request_encoding(content_type: str | None) -> Encoding:
    """``protobuf`` or ``json`` from a Content-Type (parameters such as charset ignored).

    Raises:
        OtlpError: 415 for any other type.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/x-protobuf":
        return "protobuf"
    if media == "application/json":
        return "json"
    raise OtlpError(415, 3, f"unsupported Content-Type {content_type!r}: use application/x-protobuf or "
                    "application/json")


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent (no or ``identity`` encoding) or gunzipped (``gzip``), at most ``max_bytes``.

    Raises:
        OtlpError: 415 another content encoding, 400 corrupt or truncated gzip, 413 over ``max_bytes``
            once decompressed.
    """
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding != "gzip":
        raise OtlpError(415, 3, f"unsupported Content-Encoding {coding!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise OtlpError(400, 3, f"body is not valid gzip: {exc}") from exc
    if not inflater.eof and len(out) <= max_bytes:
        raise OtlpError(400, 3, "body is not valid gzip: truncated stream")
    if len(out) > max_bytes:
        raise OtlpError(413, 8, f"decompressed body exceeds the limit of {max_bytes} bytes (server.max_body_bytes)")
    return out


def json_body(body: bytes) -> dict[str, Any]:
    """The parsed JSON object. Invalid UTF-8 inside a string costs only that string's bytes: decoded
    with ``surrogateescape`` they become lone surrogates, which the span readers replace by U+FFFD and
    flag (``lone_surrogate_replaced``), as for text cut inside an emoji.

    Raises:
        OtlpError: 400 not JSON, nested too deeply, or not an object.
    """
    try:
        data = json.loads(body.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as exc:
        raise OtlpError(400, 3, f"body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise OtlpError(400, 3, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise OtlpError(400, 3, "body must be a JSON object")
    return data


def _collect(results: Iterable[tuple[T | None, str | None]], good: list[T], rejected: list[str]) -> None:
    for item, reason in results:
        if item is not None:
            good.append(item)
        else:
            rejected.append(str(reason))


def decode_spans(body: bytes, encoding: Encoding) -> DecodedSpans:
    """Decode an ``ExportTraceServiceRequest`` into valid spans and one reason per rejected span.

    Raises:
        OtlpError: 400 when the body is not a decodable request at all.
        MissingDependency: a protobuf body without ``opentelemetry-proto`` installed.
    """
    out = DecodedSpans([], [])
    if encoding == "protobuf":
        _collect(_protobuf().read_spans(body), out.spans, out.rejected)
        return out
    data = json_body(body)
    if not isinstance(data.get("resourceSpans", []), list):
        raise OtlpError(400, 3, "resourceSpans must be a list")
    # read_spans checks shapes per element and never raises: a junk span costs only itself
    _collect(((s, None if r is None else f"{r} (span rejected)") for s, r in from_json.read_spans(data)),
             out.spans, out.rejected)
    return out


def decode_logs(body: bytes, encoding: Encoding) -> DecodedLogs:
    """Decode an ``ExportLogsServiceRequest`` into ``(trace id, span id, event)`` and one reason per
    rejected log record.

    Raises:
        OtlpError: 400 when the body is not decodable at all.
        MissingDependency: a protobuf body without ``opentelemetry-proto`` installed.
    """
    out = DecodedLogs([], [])
    records = _protobuf().read_log_records(body) if encoding == "protobuf" else from_json.read_log_records(
        json_body(body))
    try:
        _collect(records, out.items, out.rejected)
    except ShapeError as exc:  # resourceLogs itself is not a list
        raise OtlpError(400, 3, str(exc)) from None
    return out


def utf8_warnings(spans: list[Span]) -> list[str]:
    """A warning per span stored with invalid UTF-8 replaced (sent in ``partialSuccess.errorMessage``
    with zero rejected, which OTLP defines as a warning)."""
    return [f"span {s.span_id} (trace {s.trace_id}) stored with invalid UTF-8 replaced by U+FFFD "
            "(flag invalid_utf8_replaced)" for s in spans if "invalid_utf8_replaced" in s.flags]


def partial_success_message(rejected: list[str], warnings: list[str]) -> str:
    """The ``partialSuccess.errorMessage``: the first :data:`MAX_REASONS` rejection reasons (and how many
    more), then the first warnings; ``; ``-joined, empty when there is nothing to say."""
    lines = rejected[:MAX_REASONS] + ([f"... and {len(rejected) - MAX_REASONS} more"]
                                      if len(rejected) > MAX_REASONS else [])
    return "; ".join(lines + warnings[:MAX_REASONS])


def encode_export_response(signal: Signal, rejected: int, message: str, encoding: Encoding) -> bytes:
    """``Export{Trace,Logs}ServiceResponse`` in ``encoding``; ``partial_success`` set only when something
    is to say.

    Raises:
        MissingDependency: ``opentelemetry-proto`` is not installed.
    """
    from google.protobuf.json_format import MessageToJson

    resp = _protobuf().export_response(signal, rejected, message)
    if encoding == "protobuf":
        return resp.SerializeToString()
    return MessageToJson(resp, indent=None).encode()


def encode_status(error: OtlpError, encoding: Encoding) -> bytes:
    """The failure body: a ``google.rpc.Status`` (field 1 code, field 2 message) in protobuf wire
    format, or ``{"code", "message"}`` in JSON."""
    if encoding == "json":
        return json.dumps({"code": error.rpc_code, "message": error.message}).encode()

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    text = error.message.encode()
    return b"\x08" + varint(error.rpc_code) + b"\x12" + varint(len(text)) + text
