"""The OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs``.

HTTP only: routes, the API key, reading the body under the size cap, status codes. Decoding (both
encodings, gzip, partial success, the response messages) is :mod:`assay.traces.otlp`.

Spec: OTLP/HTTP (opentelemetry-proto ``docs/specification.md``): bodies are
``application/x-protobuf`` or ``application/json``, optionally ``Content-Encoding: gzip``; the
response uses the request's content type. Valid spans are stored and invalid ones rejected with a
count and a message in ``partialSuccess``; a response is sent only after the store committed.
Failures answer a ``google.rpc.Status`` (``{code, message}`` in JSON): 400 undecodable body, 401
missing/wrong API key, 413 body over ``max_body_bytes`` (compressed or not), 415 other content types,
503 store unavailable (retryable). A stored API key may be bound to an environment (``assay keys create
--env NAME``): units sent with it whose resource names no ``deployment.environment.name`` get it.

User feedback in spans (attributes, events) and log records is recorded as it arrives
(:mod:`assay.signals.feedback`): attached to its unit, or kept pending until its trace arrives. The
detectors run later, off the request path, once a unit is complete (the online worker, or
``assay signals update``), so ingestion does not wait for them.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from assay._store import Store
from assay.exceptions import OtlpError
from assay.settings import ServerSettings
from assay.signals import feedback
from assay.traces import otlp
from assay.traces.environment import Environment
from assay.traces.model import Span
from assay.traces.otlp import Encoding, LogItem, Signal

_MEDIA = {"protobuf": "application/x-protobuf", "json": "application/json"}


def check_api_key(request: Request, api_key: str | None, store: Store | None = None) -> Environment | None:
    """Raises OtlpError 401 unless ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` matches.

    Keys are required when ``[server] api_key`` is configured or the store holds API keys
    (``assay keys create``); either kind is accepted.

    Returns:
        the environment a stored key is bound to (``assay keys create --env NAME``), else None.
    """
    from assay._web.auth import has_api_keys, stored_api_key

    keys_stored = store is not None and has_api_keys(store)
    if not api_key and not keys_stored:
        return None
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if given and api_key and secrets.compare_digest(given.encode(), api_key.encode()):
        return None
    info = stored_api_key(store, given) if given and store is not None and keys_stored else None
    if info is not None:
        return Environment(info.env) if info.env else None
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
    return otlp.decompress(bytes(buf), request.headers.get("content-encoding"), max_bytes)


def error_response(exc: OtlpError, encoding: Encoding) -> Response:
    """An OTLP failure response in the request's encoding."""
    return Response(otlp.encode_status(exc, encoding), exc.http_status, media_type=_MEDIA[encoding])


@dataclass
class Receiver:
    """The receiver's state: settings, the store, and one lock so writes go through one path."""

    settings: ServerSettings
    store: Store
    lock: threading.Lock

    def write_spans(self, spans: list[Span], environment: Environment | None = None) -> list[str]:
        """Store spans (committed on return), then the feedback they carry and pending feedback naming their
        traces or sessions (:mod:`assay.signals.feedback`); the clock-skew warnings. ``environment`` is the
        API key's, for units whose resource names none."""
        cfg = self.store.signals
        with self.lock:
            warnings = self.store.add_spans(spans, "otlp-http", environment).warnings
            problems: list[str] = []
            items = [item for sp in spans for item in feedback.from_span(sp, cfg, problems)]
            warnings += [f"feedback not read: {p}" for p in problems]
            if items:
                feedback.record_feedback(self.store, items, cfg)
            feedback.attach_pending(self.store, cfg, trace_ids={sp.trace_id for sp in spans},
                                    session_ids={sp.session_id for sp in spans if sp.session_id})
            return warnings

    def write_logs(self, items: list[LogItem]) -> list[str]:
        """Store log records (committed on return) and the feedback they carry (pending when their trace is
        not stored yet); a record whose feedback attribute holds no feedback value is rejected: its reason
        is returned (:func:`assay.signals.feedback.check_log_records`)."""
        items, rejected = feedback.check_log_records(items, self.store.signals)
        if not items:
            return rejected
        with self.lock:
            self.store.add_log_records(items)
            found = feedback.from_log_records(items, self.store.signals)
            if found:
                feedback.record_feedback(self.store, found, self.store.signals)
        return rejected


async def _handle(request: Request, receiver: Receiver, signal: Signal) -> Response:
    encoding: Encoding = "json" if "json" in request.headers.get("content-type", "") else "protobuf"
    try:
        environment = await run_in_threadpool(check_api_key, request, receiver.settings.api_key, receiver.store)
        encoding = otlp.request_encoding(request.headers.get("content-type"))
        body = await read_body(request, receiver.settings.max_body_bytes)
        warnings: list[str] = []
        if signal == "traces":
            spans, rejected = await run_in_threadpool(otlp.decode_spans, body, encoding)
            if spans:
                warnings = otlp.utf8_warnings(spans) + await run_in_threadpool(receiver.write_spans, spans,
                                                                               environment)
        else:
            items, rejected = await run_in_threadpool(otlp.decode_logs, body, encoding)
            if items:
                rejected += await run_in_threadpool(receiver.write_logs, items)
    except OtlpError as exc:
        return error_response(exc, encoding)
    except SQLAlchemyError as exc:
        return error_response(OtlpError(503, 14, f"store unavailable, retry: {type(exc).__name__}"), encoding)
    message = otlp.partial_success_message(rejected, warnings)
    return Response(otlp.encode_export_response(signal, len(rejected), message, encoding), 200,
                    media_type=_MEDIA[encoding])


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
