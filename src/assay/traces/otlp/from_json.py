"""Reader of the OTLP JSON encoding (``resourceSpans`` -> ``scopeSpans`` -> ``spans``; ``resourceLogs``
-> ``scopeLogs`` -> ``logRecords``): files, Collector file-exporter lines and OTLP/HTTP JSON bodies.

Shapes are checked level by level, so a wrong-typed element costs only itself, with its JSON path in
the reason. Spec: OTLP/JSON encoding (opentelemetry-proto ``docs/specification.md``: the proto3 JSON
mapping with hex-encoded ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from assay.traces.environment import resource_attributes
from assay.traces.model import Span, SpanEvent
from assay.traces.otlp.mapping import LogItem, attributes_to_span, check_log_ids, log_event
from assay.traces.shapes import MAX_DEPTH, ShapeError, describe_error, expect_list, expect_object, json_type


def any_value(v: Any, path: str = "value", depth: int = 0) -> Any:
    """Decode an OTLP JSON ``AnyValue`` into a Python value.

    Args:
        v: the ``AnyValue`` object (``{"stringValue": ...}``, ``{"arrayValue": {"values": [...]}}`` ...).
        path: JSON path of ``v``, for error messages.
        depth: nesting level of ``v`` (arrays / kvlists); at most :data:`~assay.traces.shapes.MAX_DEPTH`.

    Raises:
        ShapeError: not an object, a malformed array/kvlist, a non-numeric int/double, or nested
            deeper than ``MAX_DEPTH``.
    """
    if depth > MAX_DEPTH:
        raise ShapeError(f"{path}: nested attribute value too deep (more than {MAX_DEPTH} levels)")
    v = expect_object(v, path)
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    try:
        if "intValue" in v:
            return int(v["intValue"])
        if "doubleValue" in v:
            return float(v["doubleValue"])
    except (TypeError, ValueError):
        got = v.get("intValue", v.get("doubleValue"))
        raise ShapeError(f"{path}: expected a number, got {json_type(got)} {str(got)[:40]!r}") from None
    if "arrayValue" in v:
        arr = expect_object(v["arrayValue"], f"{path}.arrayValue")
        values = expect_list(arr.get("values"), f"{path}.arrayValue.values")
        return [any_value(x, f"{path}.arrayValue.values[{i}]", depth + 1) for i, x in enumerate(values)]
    if "kvlistValue" in v:
        kvl = expect_object(v["kvlistValue"], f"{path}.kvlistValue")
        return attributes(kvl.get("values"), f"{path}.kvlistValue.values", depth + 1)
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs: Any, path: str = "attributes", depth: int = 0) -> dict[str, Any]:
    """Decode an OTLP JSON attribute list (``[{key, value}]``) into a flat dict.

    Raises:
        ShapeError: not a list, an element not an object, a missing or non-string key, or a bad value.
    """
    out: dict[str, Any] = {}
    for i, kv in enumerate(expect_list(kvs, path)):
        kv = expect_object(kv, f"{path}[{i}]")
        key = kv.get("key")
        if not isinstance(key, str):
            raise ShapeError(f"{path}[{i}].key: expected a string, got {json_type(key)}")
        out[key] = any_value(kv.get("value") or {}, f"{path}[{i}].value", depth)
    return out



def otlp_events(raw: Any, path: str = "events") -> list[SpanEvent]:
    """Decode OTLP JSON span events (``{timeUnixNano, name, attributes}``).

    Raises:
        ShapeError: not a list, an event not an object, or malformed event attributes.
    """
    out: list[SpanEvent] = []
    for i, e in enumerate(expect_list(raw, path)):
        e = expect_object(e, f"{path}[{i}]")
        out.append(SpanEvent(name=str(e.get("name") or ""),
                             time_ns=_ns(e.get("timeUnixNano"), f"{path}[{i}].timeUnixNano"),
                             attributes=attributes(e.get("attributes"), f"{path}[{i}].attributes")))
    return out


def _ns(value: Any, path: str) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise ShapeError(f"{path}: expected an integer (ns since the epoch), got {json_type(value)} "
                         f"{str(value)[:40]!r}") from None


def _status(raw: Any, path: str = "status") -> tuple[str, str | None]:
    raw = expect_object(raw or {}, path)
    code = raw.get("code", 0)
    status = {2: "error", "STATUS_CODE_ERROR": "error", 1: "ok", "STATUS_CODE_OK": "ok"}.get(
        code if isinstance(code, int | str) else 0, "unset")
    message = raw.get("message")
    return status, None if message is None else str(message)


def otlp_span(raw: Any, resource: dict[str, Any], path: str = "span") -> Span:
    """Convert one OTLP JSON span object into a :class:`Span`; the resource's environment and release
    attributes are copied onto it (:mod:`assay.traces.environment`; the span's own attributes win).

    Raises:
        KeyError, ValueError (incl. pydantic.ValidationError, ShapeError): missing or malformed fields.
    """
    raw = expect_object(raw, path)
    attrs = {**resource_attributes(resource), **attributes(raw.get("attributes"), f"{path}.attributes")}
    status, message = _status(raw.get("status"), f"{path}.status")
    for key in ("traceId", "spanId"):
        if key not in raw:
            raise ShapeError(f"{path}.{key}: missing")
        if not isinstance(raw[key], str):
            raise ShapeError(f"{path}.{key}: expected a hex string, got {json_type(raw[key])}")
    parent = raw.get("parentSpanId") or ""
    if not isinstance(parent, str):
        raise ShapeError(f"{path}.parentSpanId: expected a hex string, got {json_type(parent)}")
    return attributes_to_span(
        attrs, otlp_events(raw.get("events"), f"{path}.events"), trace_id=raw["traceId"].lower(),
        span_id=raw["spanId"].lower(), parent_span_id=parent.lower() or None, name=str(raw.get("name") or ""),
        start_ns=_ns(raw.get("startTimeUnixNano"), f"{path}.startTimeUnixNano"),
        end_ns=_ns(raw.get("endTimeUnixNano"), f"{path}.endTimeUnixNano"), status=status, status_message=message,
    )


def looks_like_otlp(data: object) -> bool:
    """True when parsed JSON is an OTLP trace export."""
    return isinstance(data, dict) and "resourceSpans" in data


def read_spans(data: Any) -> Iterator[tuple[Span | None, str | None]]:
    """Yield ``(span, None)`` per valid span and ``(None, reason)`` per rejected part.

    Shapes are checked level by level: a wrong-typed element costs only that element (one reason
    such as ``resourceSpans[0].scopeSpans[0].spans[0]: expected an object, got string``), the rest
    is still read. Never raises for any parsed JSON value.
    """
    if not isinstance(data, dict):
        yield None, f"expected an object with resourceSpans, got {json_type(data)}"
        return
    try:
        resource_spans = expect_list(data.get("resourceSpans"), "resourceSpans")
    except ShapeError as exc:
        yield None, str(exc)
        return
    for r, rs in enumerate(resource_spans):
        rpath = f"resourceSpans[{r}]"
        try:
            rs = expect_object(rs, rpath)
            res = expect_object(rs.get("resource") or {}, f"{rpath}.resource")
            resource = attributes(res.get("attributes"), f"{rpath}.resource.attributes")
            scope_spans = expect_list(rs.get("scopeSpans"), f"{rpath}.scopeSpans")
        except Exception as exc:  # noqa: BLE001 - any bad shape costs only this element
            yield None, describe_error(exc)
            continue
        for s, ss in enumerate(scope_spans):
            spath = f"{rpath}.scopeSpans[{s}]"
            try:
                spans = expect_list(expect_object(ss, spath).get("spans"), f"{spath}.spans")
            except ShapeError as exc:
                yield None, str(exc)
                continue
            for n, raw in enumerate(spans):
                path = f"{spath}.spans[{n}]"
                try:
                    yield otlp_span(raw, resource, path), None
                except Exception as exc:  # noqa: BLE001 - one bad span must not cost the batch
                    sid = raw.get("spanId") if isinstance(raw, dict) else None
                    detail = describe_error(exc)
                    if detail.startswith(path):  # a ShapeError already names the element
                        yield None, detail
                    else:
                        yield None, f"span #{n}" + (f" (spanId {sid!r})" if sid else "") + f" at {path}: {detail}"




def read_log_records(data: dict[str, Any]) -> Iterator[tuple[LogItem | None, str | None]]:
    """Yield ``(item, None)`` per valid log record and ``(None, reason)`` per rejected part of an
    ``ExportLogsServiceRequest`` in JSON; a junk element (a string where a record object belongs ...)
    costs only itself, with its JSON path in the reason.

    Raises:
        ShapeError: ``resourceLogs`` is not a list (nothing can be read).
    """
    n = 0
    resource_logs = expect_list(data.get("resourceLogs"), "resourceLogs")
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
                yield _log_record(r, f"{spath}.logRecords[{k}]", n)
                n += 1


def _log_record(r: Any, path: str, n: int) -> tuple[LogItem | None, str | None]:
    try:
        r = expect_object(r, path)
        tid, sid = str(r.get("traceId") or "").lower(), str(r.get("spanId") or "").lower()
        check_log_ids(tid, sid)
        bytes.fromhex(tid + sid)
        time_ns = int(r.get("timeUnixNano") or r.get("observedTimeUnixNano") or 0)
        event = log_event(str(r.get("eventName") or ""), time_ns, attributes(r.get("attributes"), f"{path}.attributes"),
                          any_value(r["body"], f"{path}.body") if r.get("body") else None)
    except Exception as exc:  # noqa: BLE001 - one bad record must not cost the batch
        detail = describe_error(exc)
        return None, f"log record #{n} rejected: " + (detail if detail.startswith(path) else f"{path}: {detail}")
    return (tid, sid, event), None
