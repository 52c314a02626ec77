"""The OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs``.

Spec: OTLP/HTTP (opentelemetry-proto ``docs/specification.md``): bodies are
``application/x-protobuf`` (``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``) or
``application/json`` (the proto3 JSON mapping with hex ids), optionally ``Content-Encoding: gzip``;
the response uses the request's content type. Valid spans are stored and invalid ones rejected
with a count and a message in ``partialSuccess`` (a message with zero rejected is a warning);
a response is sent only after the store committed. Failures answer a ``google.rpc.Status``
(``{code, message}`` in JSON): 400 undecodable body, 401 missing/wrong API key, 413 body over
``max_body_bytes`` (compressed or not), 415 other content types, 503 store unavailable (retryable).

Protobuf spans become the same :class:`~assay.traces.model.Span` as JSON ones, through
:func:`assay.traces.otlp_json.attributes_to_span`.

Invalid UTF-8 in a string field never costs the batch: protobuf bodies are re-parsed with a twin of
the messages whose strings are bytes (:class:`_Lenient`), the bad bytes of that span become U+FFFD
and the span is flagged ``invalid_utf8_replaced`` (a warning in ``partialSuccess``); in JSON bodies
they become lone surrogates and then U+FFFD (flag ``lone_surrogate_replaced``).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from assay._store import Store
from assay.exceptions import OtlpError
from assay.settings import ServerSettings
from assay.traces import otlp_json
from assay.traces.model import Span, SpanEvent, clean_value
from assay.traces.shapes import MAX_DEPTH, ShapeError, describe_error, expect_list, expect_object

Encoding = Literal["protobuf", "json"]
_MAX_REASONS = 5
_STATUS = {0: "unset", 1: "ok", 2: "error"}


# --- protobuf → Python values ------------------------------------------------------------
def pb_any(v: AnyValue, depth: int = 0) -> Any:
    """Decode an ``AnyValue``; bytes become base64 text, as in the JSON encoding.

    Raises:
        ShapeError: arrays / kvlists nested deeper than :data:`~assay.traces.shapes.MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise ShapeError(f"nested attribute value too deep (more than {MAX_DEPTH} levels)")
    which = v.WhichOneof("value")
    if which == "array_value":
        return [pb_any(x, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return pb_attributes(v.kvlist_value.values, depth + 1)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None if which is None else getattr(v, which)


def pb_attributes(kvs: Any, depth: int = 0) -> dict[str, Any]:
    """Decode a repeated ``KeyValue`` into a flat dict."""
    return {kv.key: pb_any(kv.value, depth) for kv in kvs if isinstance(kv, KeyValue)}


def pb_span(sp: PbSpan, flags: tuple[str, ...] = ()) -> Span:
    """Convert one protobuf span to a :class:`Span` (``flags``: extra span flags, e.g.
    ``invalid_utf8_replaced``).

    Raises:
        ValueError (incl. pydantic.ValidationError): wrong-length or all-zero ids, bad values.
    """
    events = [SpanEvent(name=e.name, time_ns=e.time_unix_nano, attributes=pb_attributes(e.attributes))
              for e in sp.events]
    return otlp_json.attributes_to_span(
        pb_attributes(sp.attributes), events, trace_id=sp.trace_id.hex(), span_id=sp.span_id.hex(),
        parent_span_id=sp.parent_span_id.hex() or None, name=sp.name, start_ns=sp.start_time_unix_nano,
        end_ns=sp.end_time_unix_nano, status=_STATUS.get(sp.status.code, "unset"),
        status_message=sp.status.message or None, flags=flags)


# --- invalid UTF-8: a lenient twin of the OTLP messages ---------------------------------------
class _Lenient:
    """The OTLP request messages with every ``string`` field declared ``bytes`` instead.

    protobuf's decoder rejects a whole message when one ``string`` field holds invalid UTF-8. The
    wire format of ``string`` and ``bytes`` is the same (length-delimited), so the twin parses any
    such body; each span is then re-encoded, its invalid bytes replaced by U+FFFD (``bytes.decode(
    errors="replace")``), and parsed by the real message class. Built once per process, lazily.
    """

    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self._done: set[str] = set()
        self.string_fields: set[str] = set()
        """Full names of the twin's fields that are ``string`` in the real messages."""

    def _add(self, fd: FileDescriptor) -> None:
        if fd.name in self._done:
            return
        for dep in fd.dependencies:
            self._add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        for msg in proto.message_type:
            self._bytes(msg, f"{proto.package}.{msg.name}")
        self.pool.Add(proto)
        self._done.add(fd.name)

    def _bytes(self, msg: descriptor_pb2.DescriptorProto, full: str) -> None:
        for f in msg.field:
            if f.type == FieldDescriptor.TYPE_STRING:
                f.type = FieldDescriptor.TYPE_BYTES
                self.string_fields.add(f"{full}.{f.name}")
        for nested in msg.nested_type:
            self._bytes(nested, f"{full}.{nested.name}")

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        """The lenient twin of a real message class."""
        self._add(descriptor.file)
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(descriptor.full_name))

    def repair(self, msg: Message) -> bool:
        """Replace invalid UTF-8 in the former ``string`` fields of ``msg`` (recursively) by U+FFFD,
        in place; True when anything was replaced."""
        changed = False
        for field, value in msg.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                items = value if field.is_repeated else [value]
                for item in items:
                    changed = self.repair(item) or changed
            elif field.full_name in self.string_fields:
                if field.is_repeated:
                    fixed = [_utf8(v) for v in value]
                    if fixed != list(value):
                        del value[:]
                        value.extend(fixed)
                        changed = True
                elif _utf8(value) != value:
                    setattr(msg, field.name, _utf8(value))
                    changed = True
        return changed


def _utf8(raw: bytes) -> bytes:
    return raw.decode("utf-8", errors="replace").encode("utf-8")


_LENIENT: list[_Lenient] = []


def _lenient() -> _Lenient:
    if not _LENIENT:
        _LENIENT.append(_Lenient())
    return _LENIENT[0]


def _lenient_spans(body: bytes) -> Iterator[tuple[PbSpan, bool]]:
    """Every span of a request that only failed on invalid UTF-8: ``(span, repaired)``.

    Raises:
        OtlpError: 400 when the body does not parse even with ``bytes`` for ``string``.
    """
    lenient = _lenient()
    req = lenient.message_class(trace_pb.ExportTraceServiceRequest.DESCRIPTOR)()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpError(400, 3, f"body is not an ExportTraceServiceRequest: {exc}") from exc
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for raw in ss.spans:
                repaired = lenient.repair(raw)
                yield PbSpan.FromString(raw.SerializeToString()), repaired


def _reason(n: int, trace_id: str, span_id: str, exc: Exception) -> str:
    detail = describe_error(exc)
    return f"span #{n} (trace_id {trace_id!r}, span_id {span_id!r}) rejected: {detail}"


def _pb_spans(body: bytes) -> Iterator[tuple[PbSpan, bool]]:
    """The spans of a protobuf request, ``(span, repaired)``; invalid UTF-8 in a string field costs
    only that field's bytes (replaced by U+FFFD, ``repaired`` True), not the batch."""
    req = trace_pb.ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError:
        yield from _lenient_spans(body)
        return
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                yield sp, False


def decode_spans(body: bytes, encoding: Encoding) -> tuple[list[Span], list[str]]:
    """Decode an export request into valid spans and one reason per rejected span.

    Raises:
        OtlpError: 400 when the body is not a decodable request at all.
    """
    spans: list[Span] = []
    reasons: list[str] = []
    if encoding == "protobuf":
        for n, (sp, repaired) in enumerate(_pb_spans(body)):
            try:
                spans.append(pb_span(sp, ("invalid_utf8_replaced",) if repaired else ()))
            except Exception as exc:  # noqa: BLE001 - one bad span must not cost the batch
                reasons.append(_reason(n, sp.trace_id.hex(), sp.span_id.hex(), exc))
        return spans, reasons
    data = _json_body(body)
    if not isinstance(data.get("resourceSpans", []), list):
        raise OtlpError(400, 3, "resourceSpans must be a list")
    # read_spans checks shapes per element and never raises: a junk span costs only itself
    for span, reason in otlp_json.read_spans(data):
        if span is not None:
            spans.append(span)
        else:
            reasons.append(f"{reason} (span rejected)")
    return spans, reasons


def _json_body(body: bytes) -> dict[str, Any]:
    """The parsed JSON object. Invalid UTF-8 inside a string costs only that string's bytes: decoded
    with ``surrogateescape`` they become lone surrogates, which the span readers replace by U+FFFD and
    flag (``lone_surrogate_replaced``), as for text cut inside an emoji."""
    try:
        data = json.loads(body.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as exc:
        raise OtlpError(400, 3, f"body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise OtlpError(400, 3, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise OtlpError(400, 3, "body must be a JSON object")
    return data


# --- logs ---------------------------------------------------------------------------------
LogItem = tuple[str, str, SpanEvent]


def _log_event(name: str, time_ns: int, attrs: dict[str, Any], body: Any) -> SpanEvent:
    (attrs, body), _ = clean_value([attrs, body])
    return SpanEvent(name=name or str(attrs.get("event.name") or ""), time_ns=time_ns, attributes=attrs,
                     body=body, source="log_record")


def _check_ids(trace_id: str, span_id: str) -> None:
    if (trace_id and len(trace_id) != 32) or (span_id and len(span_id) != 16):
        raise ValueError(f"trace_id must be 16 bytes and span_id 8 bytes (got {trace_id!r}, {span_id!r})")
    if bool(trace_id) != bool(span_id):
        raise ValueError("trace_id and span_id must be given together")


def _pb_logs(body: bytes) -> Iterator[tuple[LogItem | None, str | None]]:
    req = logs_pb.ExportLogsServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        lenient = _lenient().message_class(logs_pb.ExportLogsServiceRequest.DESCRIPTOR)()
        try:
            lenient.ParseFromString(body)
        except DecodeError:
            raise OtlpError(400, 3, f"body is not an ExportLogsServiceRequest: {exc}") from exc
        _lenient().repair(lenient)  # invalid UTF-8 → U+FFFD, as for spans
        req = logs_pb.ExportLogsServiceRequest.FromString(lenient.SerializeToString())
    records: list[LogRecord] = [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    for n, r in enumerate(records):
        tid, sid = r.trace_id.hex(), r.span_id.hex()
        try:
            _check_ids(tid, sid)
            body_value = pb_any(r.body) if r.HasField("body") else None
            event = _log_event(r.event_name, r.time_unix_nano or r.observed_time_unix_nano,
                               pb_attributes(r.attributes), body_value)
        except Exception as exc:  # noqa: BLE001 - one bad record must not cost the batch
            yield None, f"log record #{n} rejected: {describe_error(exc)}"
            continue
        yield (tid, sid, event), None


def _json_logs(body: bytes) -> Iterator[tuple[LogItem | None, str | None]]:
    """Log records of a JSON body; shapes are checked per element, so a junk element (a string
    where a record object belongs ...) costs only itself, with its JSON path in the reason."""
    data = _json_body(body)
    n = 0
    try:
        resource_logs = expect_list(data.get("resourceLogs"), "resourceLogs")
    except ShapeError as exc:
        raise OtlpError(400, 3, str(exc)) from None
    for i, rl in enumerate(resource_logs):
        try:
            scope_logs = expect_list(expect_object(rl, f"resourceLogs[{i}]").get("scopeLogs"),
                                     f"resourceLogs[{i}].scopeLogs")
        except ShapeError as exc:
            yield None, f"{exc} (log records rejected)"
            continue
        for j, sl in enumerate(scope_logs):
            spath = f"resourceLogs[{i}].scopeLogs[{j}]"
            try:
                records = expect_list(expect_object(sl, spath).get("logRecords"), f"{spath}.logRecords")
            except ShapeError as exc:
                yield None, f"{exc} (log records rejected)"
                continue
            for k, r in enumerate(records):
                path = f"{spath}.logRecords[{k}]"
                try:
                    r = expect_object(r, path)
                    tid, sid = str(r.get("traceId") or "").lower(), str(r.get("spanId") or "").lower()
                    _check_ids(tid, sid)
                    bytes.fromhex(tid + sid)
                    time_ns = int(r.get("timeUnixNano") or r.get("observedTimeUnixNano") or 0)
                    event = _log_event(str(r.get("eventName") or ""), time_ns,
                                       otlp_json.attributes(r.get("attributes"), f"{path}.attributes"),
                                       otlp_json.any_value(r["body"], f"{path}.body") if r.get("body") else None)
                except Exception as exc:  # noqa: BLE001 - one bad record must not cost the batch
                    detail = describe_error(exc)
                    yield None, f"log record #{n} rejected: " + (detail if detail.startswith(path)
                                                                  else f"{path}: {detail}")
                else:
                    yield (tid, sid, event), None
                n += 1


def decode_logs(body: bytes, encoding: Encoding) -> tuple[list[LogItem], list[str]]:
    """Decode an ``ExportLogsServiceRequest`` into ``(trace id, span id, event)`` and reasons.

    Raises:
        OtlpError: 400 when the body is not decodable at all.
    """
    items: list[LogItem] = []
    reasons: list[str] = []
    for item, reason in (_pb_logs(body) if encoding == "protobuf" else _json_logs(body)):
        if item is not None:
            items.append(item)
        else:
            reasons.append(str(reason))
    return items, reasons


# --- HTTP plumbing ------------------------------------------------------------------------
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


def check_api_key(request: Request, api_key: str | None, store: Store | None = None) -> None:
    """Raises OtlpError 401 unless ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` matches.

    Keys are required when ``[server] api_key`` is configured or the store holds API keys
    (``assay keys create``); either kind is accepted.
    """
    from assay._web.auth import check_api_key as stored_key_ok
    from assay._web.auth import has_api_keys

    keys_stored = store is not None and has_api_keys(store)
    if not api_key and not keys_stored:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if given and api_key and secrets.compare_digest(given.encode(), api_key.encode()):
        return
    if given and store is not None and keys_stored and stored_key_ok(store, given):
        return
    raise OtlpError(401, 16, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'x-api-key'")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``, at most ``max_bytes`` either way.

    Raises:
        OtlpError: 413 over the cap, 400 corrupt gzip, 415 other content encodings.
    """
    too_big = OtlpError(413, 8, f"request body exceeds the limit of {max_bytes} bytes (server.max_body_bytes)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_big
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > max_bytes:
            raise too_big
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return bytes(buf)
    if coding != "gzip":
        raise OtlpError(415, 3, f"unsupported Content-Encoding {coding!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(bytes(buf), max_bytes + 1)
    except zlib.error as exc:
        raise OtlpError(400, 3, f"body is not valid gzip: {exc}") from exc
    if not inflater.eof and len(out) <= max_bytes:
        raise OtlpError(400, 3, "body is not valid gzip: truncated stream")
    if len(out) > max_bytes:
        raise OtlpError(413, 8, f"decompressed body exceeds the limit of {max_bytes} bytes (server.max_body_bytes)")
    return out


def _encode_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` message (field 1 code, field 2 message) in protobuf wire format."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    text = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


def error_response(exc: OtlpError, encoding: Encoding) -> Response:
    """An OTLP failure response in the request's encoding."""
    if encoding == "protobuf":
        return Response(_encode_status(exc.rpc_code, exc.message), exc.http_status, media_type="application/x-protobuf")
    return Response(json.dumps({"code": exc.rpc_code, "message": exc.message}), exc.http_status,
                    media_type="application/json")


def _message(reasons: list[str], warnings: list[str]) -> str:
    lines = reasons[:_MAX_REASONS] + ([f"... and {len(reasons) - _MAX_REASONS} more"]
                                      if len(reasons) > _MAX_REASONS else [])
    return "; ".join(lines + warnings[:_MAX_REASONS])


def success_response(kind: Literal["traces", "logs"], rejected: int, message: str, encoding: Encoding) -> Response:
    """``Export{Trace,Logs}ServiceResponse``; ``partial_success`` set only when something is to say."""
    resp: Any
    if kind == "traces":
        resp = trace_pb.ExportTraceServiceResponse()
        if rejected or message:
            resp.partial_success.rejected_spans = rejected
            resp.partial_success.error_message = message
    else:
        resp = logs_pb.ExportLogsServiceResponse()
        if rejected or message:
            resp.partial_success.rejected_log_records = rejected
            resp.partial_success.error_message = message
    if encoding == "protobuf":
        return Response(resp.SerializeToString(), 200, media_type="application/x-protobuf")
    return Response(MessageToJson(resp, indent=None), 200, media_type="application/json")


@dataclass
class Receiver:
    """The receiver's state: settings, the store, and one lock so writes go through one path."""

    settings: ServerSettings
    store: Store
    lock: threading.Lock

    def write_spans(self, spans: list[Span]) -> list[str]:
        """Store spans (committed on return); the clock-skew warnings."""
        with self.lock:
            return self.store.add_spans(spans, "otlp-http").warnings

    def write_logs(self, items: list[LogItem]) -> None:
        """Store log records (committed on return)."""
        with self.lock:
            self.store.add_log_records(items)


def _utf8_warnings(spans: list[Span]) -> list[str]:
    """A warning per span stored with invalid UTF-8 replaced (sent in ``partialSuccess.errorMessage``
    with zero rejected, which OTLP defines as a warning)."""
    return [f"span {s.span_id} (trace {s.trace_id}) stored with invalid UTF-8 replaced by U+FFFD "
            "(flag invalid_utf8_replaced)" for s in spans if "invalid_utf8_replaced" in s.flags]


async def _handle(request: Request, receiver: Receiver, kind: Literal["traces", "logs"]) -> Response:
    encoding: Encoding = "json" if "json" in request.headers.get("content-type", "") else "protobuf"
    try:
        await run_in_threadpool(check_api_key, request, receiver.settings.api_key, receiver.store)
        encoding = request_encoding(request.headers.get("content-type"))
        body = await read_body(request, receiver.settings.max_body_bytes)
        warnings: list[str] = []
        if kind == "traces":
            spans, reasons = await run_in_threadpool(decode_spans, body, encoding)
            if spans:
                warnings = _utf8_warnings(spans) + await run_in_threadpool(receiver.write_spans, spans)
        else:
            items, reasons = await run_in_threadpool(decode_logs, body, encoding)
            if items:
                await run_in_threadpool(receiver.write_logs, items)
    except OtlpError as exc:
        return error_response(exc, encoding)
    except SQLAlchemyError as exc:
        return error_response(OtlpError(503, 14, f"store unavailable, retry: {type(exc).__name__}"), encoding)
    return success_response(kind, len(reasons), _message(reasons, warnings), encoding)


def otlp_router(settings: ServerSettings, store: Store) -> APIRouter:
    """The ``/v1/traces`` and ``/v1/logs`` routes bound to a store."""
    receiver = Receiver(settings, store, threading.Lock())
    router = APIRouter(tags=["otlp"])

    @router.post("/v1/traces", summary="OTLP/HTTP trace export (protobuf or JSON)")
    async def traces(request: Request) -> Response:
        return await _handle(request, receiver, "traces")

    @router.post("/v1/logs", summary="OTLP/HTTP log export: GenAI events joined to their spans")
    async def logs(request: Request) -> Response:
        return await _handle(request, receiver, "logs")

    return router
