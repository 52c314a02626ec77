"""Native code in a child process: a crash there (SIGILL, SIGSEGV, out of memory, killed) becomes an error.

llama.cpp and PyTorch run compiled kernels; when a kernel uses an instruction the CPU (or the
virtual machine) does not permit, the process dies with ``SIGILL`` and takes everything with it.
:class:`ChildProcess` runs such code in ``python -m assay._util.child_main`` and talks to it over
its stdin/stdout, one JSON object per line:

- init: ``{"factory": "module:function", "config": {...}}`` -> ``{"ready": info}`` or ``{"error": ...}``
- call: ``{"op": "method", "kwargs": {...}}`` -> ``{"ok": result}`` or ``{"error": {...}}``

The child exits when its stdin closes (the parent ended). Its stderr goes to a temporary file whose
tail is quoted when it dies. Per call the round trip costs well under a millisecond (see
``benchmarks/bench_local_judge.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import IO, Any

from assay.exceptions import RuntimeFailure


class ChildDied(RuntimeFailure):
    """The child process ended while it was needed.

    Attributes:
        component: what ran in it, e.g. ``"local judge"``.
        exitcode: the process's exit status (negative: killed by that signal number).
        signal_name: ``"SIGILL"`` etc. when a signal ended it, else None.
        stderr_tail: the last lines it wrote to stderr.
    """

    def __init__(self, component: str, exitcode: int | None, stderr_tail: str, while_doing: str) -> None:
        self.component = component
        self.exitcode = exitcode
        self.signal_name = signal_name(exitcode)
        self.stderr_tail = stderr_tail
        how = f"killed by {self.signal_name}" if self.signal_name else f"exited with code {exitcode}"
        tail = f"; its last words: {stderr_tail.strip()[-300:]}" if stderr_tail.strip() else ""
        super().__init__(f"the {component} process was {how} while {while_doing}{tail}")


class ChildTimeout(RuntimeFailure):
    """The child did not answer in time (it was killed)."""


class ChildFailed(RuntimeFailure):
    """The child answered with an error raised inside it.

    Attributes:
        error_type: the exception class name inside the child, e.g. ``"MissingDependency"``.
        attrs: extra attributes it carried (``package``, ``hint`` ...).
    """

    def __init__(self, error_type: str, message: str, attrs: dict[str, Any]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.attrs = attrs


def signal_name(exitcode: int | None) -> str | None:
    """``"SIGILL"`` for an exit code of ``-4`` (a process ended by a signal), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _shut(proc: subprocess.Popen[bytes], stderr: IO[bytes], grace_s: float) -> None:
    """Close the child's stdin (it exits on its own), kill it after ``grace_s``, close every file."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _terminate(proc)
    if proc.stdout is not None:
        proc.stdout.close()
    stderr.close()


class ChildProcess:
    """One long-lived child process serving calls on an object built by ``factory(config)``.

    Args:
        factory: ``"module:function"`` importable in the child; called with ``config`` (a JSON
            object) it returns the object whose methods :meth:`call` invokes by name.
        config: JSON-serialisable settings for the factory.
        component: a name for messages (``"local judge"``).
        start_timeout_s: seconds the child may take to build its object (model load).
        env: extra environment variables for the child.

    Calls are serialised by a lock. Not started until the first :meth:`call` (or :meth:`start`).
    """

    def __init__(self, factory: str, config: dict[str, Any], component: str, start_timeout_s: float = 300.0,
                 env: dict[str, str] | None = None) -> None:
        self.factory, self.config, self.component = factory, config, component
        self.start_timeout_s = start_timeout_s
        self.env = env or {}
        self.info: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._lock = threading.RLock()
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> Any:
        """Start the child and build its object; returns what the factory's object reported as ``info``.

        Raises:
            ChildDied: the child died while loading.
            ChildTimeout: loading took longer than ``start_timeout_s``.
            ChildFailed: the factory raised (e.g. a missing package).
        """
        with self._lock:
            if self.pid is not None:
                return self.info
            self.close()  # a dead child's pipes and files
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self._proc = subprocess.Popen([sys.executable, "-m", "assay._util.child_main"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          env={**os.environ, **self.env}, bufsize=0)
            # closes the pipes and the stderr file even when the owner is dropped without close()
            self._finalizer = weakref.finalize(self, _shut, self._proc, self._stderr, 2.0)
            self._buffer = b""
            reply = self._exchange({"factory": self.factory, "config": self.config}, self.start_timeout_s,
                                   "loading")
            self.info = reply.get("ready")
            return self.info

    def call(self, op: str, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Call ``op(**kwargs)`` on the child's object and return its JSON result.

        Starts the child when it is not running (again, after a crash).

        Raises:
            ChildDied: the child died during the call (its exit code and signal say how).
            ChildTimeout: no answer within ``timeout_s`` seconds; the child is killed.
            ChildFailed: the call raised inside the child.
        """
        with self._lock:
            self.start()
            reply = self._exchange({"op": op, "kwargs": kwargs}, timeout_s, f"running {op}")
            return reply.get("ok")

    def _exchange(self, message: dict[str, Any], timeout_s: float | None, doing: str) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(doing) from None
        line = self._read_line(timeout_s, doing)
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            err = reply["error"]
            raise ChildFailed(err.get("type", "Exception"), err.get("message", ""), err.get("attrs") or {})
        return reply

    def _read_line(self, timeout_s: float | None, doing: str) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                _terminate(proc)
                raise ChildTimeout(f"the {self.component} did not answer within {timeout_s:g} s while {doing}; "
                                   "its process was stopped")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died(doing)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _died(self, doing: str) -> ChildDied:
        proc = self._proc
        assert proc is not None
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            code = proc.returncode
        return ChildDied(self.component, code, self._stderr_tail(), doing)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 2000))
        return self._stderr.read().decode("utf-8", errors="replace")

    def close(self) -> None:
        """Stop the child (closing its stdin first, so it exits on its own when it can) and close its files."""
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._proc = self._stderr = None
            if finalizer is not None:
                finalizer()  # runs _shut once; a no-op when it already ran
