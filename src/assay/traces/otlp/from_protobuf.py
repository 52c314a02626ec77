"""Reader of the OTLP protobuf encoding (``ExportTraceServiceRequest``, ``ExportLogsServiceRequest``).

Protobuf spans become the same :class:`~assay.traces.model.Span` as JSON ones, through
:func:`assay.traces.otlp.mapping.attributes_to_span`. Needs ``opentelemetry-proto`` (the ``serve``
extra); :mod:`assay.traces.otlp.export` imports this module only for protobuf bodies.

Invalid UTF-8 in a string field never costs the batch: a body protobuf refuses is re-parsed with a
twin of the messages whose strings are bytes (:class:`_Lenient`), the bad bytes of that span or log
record become U+FFFD and the span is flagged ``invalid_utf8_replaced``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from assay.exceptions import OtlpError
from assay.traces.environment import resource_attributes
from assay.traces.model import Span, SpanEvent
from assay.traces.otlp.mapping import LogItem, attributes_to_span, check_log_ids, log_event
from assay.traces.shapes import MAX_DEPTH, ShapeError, describe_error

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


def pb_span(sp: PbSpan, flags: tuple[str, ...] = (), resource: dict[str, Any] | None = None) -> Span:
    """Convert one protobuf span to a :class:`Span` (``flags``: extra span flags, e.g.
    ``invalid_utf8_replaced``); the environment and release attributes of its ``resource`` are copied
    onto it (:mod:`assay.traces.environment`; the span's own attributes win).

    Raises:
        ValueError (incl. pydantic.ValidationError): wrong-length or all-zero ids, bad values.
    """
    events = [SpanEvent(name=e.name, time_ns=e.time_unix_nano, attributes=pb_attributes(e.attributes))
              for e in sp.events]
    attrs = {**resource_attributes(resource or {}), **pb_attributes(sp.attributes)}
    return attributes_to_span(
        attrs, events, trace_id=sp.trace_id.hex(), span_id=sp.span_id.hex(),
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


# --- spans -------------------------------------------------------------------------------
def _lenient_spans(body: bytes) -> Iterator[tuple[PbSpan, bool, dict[str, Any]]]:
    """Every span of a request that only failed on invalid UTF-8: ``(span, repaired, resource attributes)``.

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
        resource = _lenient_resource(rs)
        for ss in rs.scope_spans:
            for raw in ss.spans:
                repaired = lenient.repair(raw)
                yield PbSpan.FromString(raw.SerializeToString()), repaired, resource


def _lenient_resource(rs: Any) -> dict[str, Any]:
    """The attributes of a lenient twin's resource; empty when they hold invalid UTF-8 themselves."""
    try:
        return _resource_attributes(Resource.FromString(rs.resource.SerializeToString()))
    except DecodeError:
        return {}


def _resource_attributes(resource: Resource) -> dict[str, Any]:
    """A resource's environment and release attributes (empty when its attributes cannot be read: a bad
    resource costs its spans only these, never the spans)."""
    try:
        return resource_attributes(pb_attributes(resource.attributes))
    except ShapeError:
        return {}


def _pb_spans(body: bytes) -> Iterator[tuple[PbSpan, bool, dict[str, Any]]]:
    """The spans of a protobuf request, ``(span, repaired, resource attributes)``; invalid UTF-8 in a string
    field costs only that field's bytes (replaced by U+FFFD, ``repaired`` True), not the batch."""
    req = trace_pb.ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError:
        yield from _lenient_spans(body)
        return
    for rs in req.resource_spans:
        resource = _resource_attributes(rs.resource)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                yield sp, False, resource


def read_spans(body: bytes) -> Iterator[tuple[Span | None, str | None]]:
    """Yield ``(span, None)`` per valid span of an ``ExportTraceServiceRequest`` and ``(None, reason)``
    per rejected one.

    Raises:
        OtlpError: 400 when the body is not a decodable request at all.
    """
    for n, (sp, repaired, resource) in enumerate(_pb_spans(body)):
        try:
            yield pb_span(sp, ("invalid_utf8_replaced",) if repaired else (), resource), None
        except Exception as exc:  # noqa: BLE001 - one bad span must not cost the batch
            yield None, (f"span #{n} (trace_id {sp.trace_id.hex()!r}, span_id {sp.span_id.hex()!r}) rejected: "
                         f"{describe_error(exc)}")


# --- logs --------------------------------------------------------------------------------
def _logs_request(body: bytes) -> Any:
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
    return req


def read_log_records(body: bytes) -> Iterator[tuple[LogItem | None, str | None]]:
    """Yield ``(item, None)`` per valid log record of an ``ExportLogsServiceRequest`` and ``(None,
    reason)`` per rejected one.

    Raises:
        OtlpError: 400 when the body is not a decodable request at all.
    """
    req = _logs_request(body)
    records: list[LogRecord] = [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    for n, r in enumerate(records):
        tid, sid = r.trace_id.hex(), r.span_id.hex()
        try:
            check_log_ids(tid, sid)
            body_value = pb_any(r.body) if r.HasField("body") else None
            event = log_event(r.event_name, r.time_unix_nano or r.observed_time_unix_nano,
                              pb_attributes(r.attributes), body_value)
        except Exception as exc:  # noqa: BLE001 - one bad record must not cost the batch
            yield None, f"log record #{n} rejected: {describe_error(exc)}"
            continue
        yield (tid, sid, event), None


def export_response(kind: str, rejected: int, message: str) -> Message:
    """An ``Export{Trace,Logs}ServiceResponse`` (``kind`` ``traces`` or ``logs``); ``partial_success`` set only
    when something is to say."""
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
    return resp
