"""``assay serve``: run the OTLP/HTTP receiver (FastAPI on uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from assay._cli._common import err_console, get_ctx, handle_errors
from assay.exceptions import MissingDependency


@handle_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", envvar="ASSAY_SERVER__HOST",
                                             help="Interface to bind (default 127.0.0.1, loopback only).")] = None,
    port: Annotated[int | None, typer.Option("--port", envvar="ASSAY_SERVER__PORT",
                                             help="TCP port (default 4318, the OTLP/HTTP port).")] = None,
    max_body_bytes: Annotated[int | None, typer.Option("--max-body-bytes", envvar="ASSAY_SERVER__MAX_BODY_BYTES",
                                                       help="Largest request body in bytes (default 64 MiB).")]
    = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="ASSAY_SERVER__API_KEY",
                                                help="Require this key (Authorization: Bearer KEY).")] = None,
) -> None:
    """Receive traces over OTLP/HTTP: POST /v1/traces and /v1/logs, protobuf or JSON, gzip or not.

    Point an OpenTelemetry or OpenInference instrumented app at it with
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318. Each span is acknowledged once committed.
    """
    try:
        import uvicorn

        from assay._web.app import create_app
    except ImportError as exc:
        raise MissingDependency(exc.name or "fastapi", "pip install 'assay[serve]'") from exc
    app_ctx = get_ctx(ctx)
    overrides = {k: v for k, v in {"host": host, "port": port, "max_body_bytes": max_body_bytes,
                                   "api_key": api_key}.items() if v is not None}
    server = app_ctx.settings.server.model_copy(update=overrides)
    settings = app_ctx.settings.model_copy(update={"server": server})
    err_console.print(f"assay: OTLP/HTTP receiver on http://{server.host}:{server.port} "
                      f"(store {settings.resolved_store_url()})")
    uvicorn.run(create_app(settings, app_ctx.store), host=server.host, port=server.port, log_level="warning",
                access_log=False)
