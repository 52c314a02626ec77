"""``assay serve``: run the OTLP/HTTP receiver (FastAPI on uvicorn), optionally with the online worker."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from assay._cli._common import err_console, get_ctx, handle_errors
from assay._cli.exit_codes import ExitCode
from assay.exceptions import MissingDependency, UsageError
from assay.settings import Settings


@handle_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", envvar="ASSAY_SERVER__HOST",
                                             help="Interface to bind (default 127.0.0.1, loopback only).")] = None,
    port: Annotated[int | None, typer.Option("--port", envvar="ASSAY_SERVER__PORT", min=0, max=65535,
                                             help="TCP port, 0..65535 (default 4318, the OTLP/HTTP port).")]
    = None,
    max_body_bytes: Annotated[int | None, typer.Option("--max-body-bytes", envvar="ASSAY_SERVER__MAX_BODY_BYTES",
                                                       help="Largest request body in bytes (default 64 MiB).")]
    = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="ASSAY_SERVER__API_KEY",
                                                help="Require this key (Authorization: Bearer KEY).")] = None,
    worker: Annotated[bool, typer.Option("--worker", envvar="ASSAY_SERVE_WORKER",
                                         help="Also score production online (as `assay worker`) in a separate, "
                                              "lower-priority process, so scoring never slows ingestion.")]
    = False,
) -> None:
    """Receive traces over OTLP/HTTP: POST /v1/traces and /v1/logs, protobuf or JSON, gzip or not.

    Point an OpenTelemetry or OpenInference instrumented app at it with
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318. Each span is acknowledged once committed.
    With --worker, `assay worker` runs beside it in its own lower-priority process (stopped with the server).
    Ctrl-C stops it gracefully (requests in flight finish), then exits 130.
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
    check_bindable(server.host, server.port)
    err_console.print(f"assay: OTLP/HTTP receiver on http://{server.host}:{server.port} "
                      f"(store {settings.resolved_store_url()})")
    proc = _start_worker(settings) if worker else None
    if proc is not None:  # uvicorn re-raises SIGTERM after its shutdown: exit through `finally`, not around it
        signal.signal(signal.SIGTERM, _exit_on_signal)
    interrupt = _Interrupt()
    signal.signal(signal.SIGINT, interrupt.handle)
    try:
        uvicorn.run(create_app(settings, app_ctx.store), host=server.host, port=server.port, log_level="warning",
                    access_log=False)
    finally:
        if proc is not None:
            _stop_worker(proc)
    if interrupt.seen:  # stopped gracefully, but on Ctrl-C: exit 130 (README's exit codes)
        err_console.print("assay: receiver stopped (interrupted)")
        raise typer.Exit(ExitCode.INTERRUPTED)


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` once and release it, so a busy port fails before the receiver is announced.

    Uses ``SO_REUSEADDR`` as uvicorn does (a port in TIME_WAIT is free for both).

    Raises:
        UsageError: the port is in use, the host is not an address of this machine, or binding is
            not permitted (a port below 1024 without privileges).
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise UsageError(f"cannot listen on {host}:{port}: {reason} (choose another with --port or "
                         "ASSAY_SERVER__PORT)") from exc


class _Interrupt:
    """The SIGINT handler around uvicorn: uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal under
    the handler it found, and ``uvicorn.run`` swallows the ``KeyboardInterrupt``; this one remembers it (``seen``)
    so the command can exit 130. Before uvicorn takes over, Ctrl-C interrupts at once. (Installed explicitly: a
    shell's background job inherits SIGINT ignored, which would make a ``kill -INT`` exit 0.)"""

    def __init__(self) -> None:
        self.seen = False

    def handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.seen = True
        raise KeyboardInterrupt


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``assay worker`` on the same workspace and store as a child process.

    A process, not a thread: scoring is CPU work (the local llama.cpp judge, code checks, timeline
    rendering, JSON parsing of stored spans) that in a thread would share the server's interpreter
    lock and slow every request; a process has its own interpreter, runs at lowered priority
    (``[online] niceness``, so the kernel gives ingestion the cores first), and its crash or its
    model's memory stays out of the receiver. It is the ``assay worker`` command itself (not a
    ``multiprocessing`` child, which would re-run ``python -m assay`` on import and copy nothing
    useful): one code path, its own log lines on the same stderr, stopped with SIGTERM (graceful),
    and stopping by itself should this server die without stopping it (``ASSAY_WORKER_PARENT_PID``).

    Raises:
        UsageError: an in-memory SQLite store, which another process cannot open.
    """
    url = settings.resolved_store_url()
    if url.startswith("sqlite:///:memory:") or url in ("sqlite://", "sqlite:///"):
        raise UsageError("--worker needs a store another process can open, not an in-memory SQLite database")
    cmd = [sys.executable, "-m", "assay", "--workspace", str(Path(settings.workspace).resolve()), "worker",
           "--niceness", str(settings.online.niceness)]
    env = {**os.environ, "ASSAY_STORE_URL": url, "ASSAY_WORKER_PARENT_PID": str(os.getpid())}
    return subprocess.Popen(cmd, env=env)


def _stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Ask the worker to stop after the units in hand (SIGTERM); kill it if it does not within ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        err_console.print("assay: worker did not stop in time; killing it")
        proc.kill()
        proc.wait(10)
