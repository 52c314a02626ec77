"""The one error tree of assay.

::

    AssayError                      base of everything assay raises on purpose
    ├── UsageError                  misuse: bad arguments, unknown names (CLI exit code 2)
    │   ├── NotFoundError           a unit, signature, criterion, evaluator or run that does not exist
    │   ├── NameTaken               a new criterion given a name another one has (carries its id)
    │   ├── ConfigError             invalid assay.toml, evaluator YAML or environment value
    │   └── JudgeChanged            a run's judge is not the one its evaluator was certified with
    ├── EnvironmentProblem          something missing on the machine: an optional extra,
    │   │                           a model file (clean message, no traceback; CLI exit code 2)
    │   └── MissingDependency       an optional package is not installed (carries the install hint)
    └── RuntimeFailure              work that started and failed (CLI exit code 3)
        ├── IngestError             a file or record that cannot be read (carries path and reason)
        │   ├── ShapeError          a JSON value of the wrong type or shape; names the JSON path
        │   │                       (also a ValueError, so record readers catch it per record)
        │   └── OtlpError           an OTLP/HTTP export request refused as a whole: HTTP status,
        │                           google.rpc code, message
        ├── JudgeError              a judge call that failed (timeout, transport, unparseable reply)
        │   ├── JudgeCrashed        the local judge's process died (SIGILL, SIGSEGV, killed): cause and fix
        │   └── JudgeUnreachable    the judge's endpoint failed to connect N times in a row: the run stops
        │       │                   (circuit breaker), naming the URL and model
        │       └── JudgeNotFound   the endpoint answered HTTP 404: a wrong base_url path or model; the run
        │                           stops at once, naming the URL and model
        └── NativeCrash             a child process running native code (the embedding model) died

Every error carries its context in attributes so callers can report it without
parsing the message. Classes defined elsewhere (``UnrecognisedFile``, ``TransientJudgeError``, the
child-process errors of ``assay._util.child``) subclass one of these; ``tests/test_error_tree.py``
checks that every exception class of assay is in this tree and that this drawing matches the code.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of every error assay raises on purpose."""


class UsageError(AssayError):
    """The caller asked for something invalid (CLI exit code 2)."""


class NotFoundError(UsageError):
    """A named object (unit, signature, criterion, evaluator, run) does not exist.

    Attributes:
        kind: what was looked up, e.g. ``"evaluator"``.
        name: the name or id that was not found.
    """

    def __init__(self, kind: str, name: str, hint: str = "") -> None:
        super().__init__(f"{kind} not found: {name!r}" + (f" ({hint})" if hint else ""))
        self.kind = kind
        self.name = name


class NameTaken(UsageError):
    """A new object was given a name another one of its kind has (names are unique per workspace).

    Attributes:
        kind: what was named, e.g. ``"criterion"``.
        name: the name asked for.
        existing_id: the id of the object that has the name.
    """

    def __init__(self, kind: str, name: str, existing_id: int, detail: str = "") -> None:
        super().__init__(f"a {kind} named {name!r} exists already (id {existing_id}){detail}")
        self.kind = kind
        self.name = name
        self.existing_id = existing_id


class ConfigError(UsageError):
    """A configuration file or value is invalid.

    Attributes:
        source: the file or variable the bad value came from (may be empty).
    """

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


class JudgeChanged(UsageError):
    """An evaluator would run with another judge than the one its calibration certified (CLI exit code 2).

    Attributes:
        changes: ``{evaluator: "certified ...; would run ...; what differs"}``, one entry per evaluator.
    """

    def __init__(self, changes: dict[str, str]) -> None:
        lines = "; ".join(f"{name}: {what}" for name, what in sorted(changes.items()))
        super().__init__(f"refusing to score with a judge that was not certified ({lines}). Calibrate again with "
                         "this judge (assay calibrate NAME), or pass --allow-judge-change to run anyway (recorded "
                         "with the scores)")
        self.changes = changes


class EnvironmentProblem(AssayError):
    """The machine lacks something assay needs (a package, a model file); CLI exit code 2."""


class MissingDependency(EnvironmentProblem):
    """An optional dependency is not installed.

    Attributes:
        package: the import name that failed.
        hint: the command that installs it.
    """

    def __init__(self, package: str, hint: str) -> None:
        super().__init__(f"{package} is not installed; install it with: {hint}")
        self.package = package
        self.hint = hint


class RuntimeFailure(AssayError):
    """Work started and failed (CLI exit code 3, see ``assay._cli.exit_codes``)."""


class IngestError(RuntimeFailure):
    """A trace file or record could not be read.

    Attributes:
        path: the file (or ``"<record>"``) being read.
        reason: why it was rejected.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ShapeError(IngestError, ValueError):
    """A JSON value of a trace record has the wrong type or shape.

    The message names the JSON path and what was expected, e.g.
    ``resourceSpans[0].scopeSpans[0].spans[0]: expected an object, got string``; it is the whole
    ``str()`` of the error (readers put it verbatim in a rejection reason). Also a ``ValueError``,
    so code that rejects a record on ``ValueError`` (and pydantic validators) treat it as bad input.

    Attributes:
        path: ``"<record>"`` (the file is named by whoever reads the record).
        reason: the message.
    """

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.path = "<record>"
        self.reason = reason


class OtlpError(IngestError):
    """An OTLP/HTTP export request refused as a whole (OTLP/HTTP spec: a failure response).

    Attributes:
        http_status: 400 undecodable body, 401 missing or wrong API key, 413 body over the limit,
            415 unsupported content type or encoding, 503 store unavailable (retryable).
        rpc_code: the ``google.rpc.Code`` sent in the ``Status`` body (3 INVALID_ARGUMENT,
            8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE, 16 UNAUTHENTICATED).
        message: what was wrong (also ``reason`` and the ``str()`` of the error).
        path: ``"<request>"``.
    """

    def __init__(self, http_status: int, rpc_code: int, message: str) -> None:
        Exception.__init__(self, message)
        self.path = "<request>"
        self.reason = message
        self.http_status = http_status
        self.rpc_code = rpc_code
        self.message = message


class JudgeError(RuntimeFailure):
    """A judge-model call failed: transport error, timeout, or a reply with no verdict.

    Attributes:
        model: the judge model name.
        raw: the raw reply text, when there was one.
    """

    def __init__(self, message: str, model: str = "", raw: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.raw = raw


class JudgeCrashed(JudgeError):
    """The process running the local judge model died (a signal or an exit) while answering.

    The message names the cause and the fix (for ``SIGILL``: llama-cpp-python was compiled for CPU
    features this machine lacks, and the command that rebuilds it portably).

    Attributes:
        signal_name: ``"SIGILL"``, ``"SIGKILL"`` ... when a signal ended it, else None.
        exitcode: the process's exit status (negative: the signal number), None when unknown.
    """

    def __init__(self, message: str, model: str = "", signal_name: str | None = None,
                 exitcode: int | None = None) -> None:
        super().__init__(message, model)
        self.signal_name = signal_name
        self.exitcode = exitcode


class JudgeUnreachable(JudgeError):
    """The judge's endpoint failed to answer ``failures`` calls in a row (connection errors or timeouts, retries
    counted): the circuit breaker is open, so the run stops instead of failing every unit the same way.
    Batch scoring (:func:`assay.evaluators.evaluate_many`) lets it through rather than recording it per unit.

    Attributes:
        url: the endpoint called (e.g. ``https://api.openai.com/v1``).
        failures: the consecutive connection failures that opened the breaker.
        last_error: the last failure's message.
    """

    def __init__(self, url: str, model: str, failures: int, last_error: str) -> None:
        super().__init__(f"judge {model} at {url} is unreachable: {failures} attempts in a row got no answer "
                         f"(last: {last_error}); is the server up and [judge] base_url right? (assay doctor checks "
                         "it)", model)
        self.url = url
        self.failures = failures
        self.last_error = last_error


class JudgeNotFound(JudgeUnreachable):
    """The judge's endpoint answered HTTP 404 Not Found: ``base_url`` has a wrong path (OpenAI-compatible servers
    serve ``.../v1/chat/completions``) or the server has no such model. Every call would get the same answer, so
    the run stops at the first one, as when the endpoint is unreachable (batch scoring lets it through).

    Attributes:
        url: the endpoint called.
        failures: 1 (the call that got the 404).
        last_error: the call's error message.
    """

    def __init__(self, url: str, model: str, last_error: str) -> None:
        JudgeError.__init__(self, f"judge {model} at {url} answered HTTP 404 Not Found ({last_error}); is [judge] "
                                  "base_url right (an OpenAI-compatible server's usually ends in /v1) and does the "
                                  "server have this model? (assay doctor checks it)", model)
        self.url = url
        self.failures = 1
        self.last_error = last_error


class NativeCrash(RuntimeFailure):
    """A child process running native code (the embedding model's PyTorch kernels) died.

    Attributes:
        component: what ran in it, e.g. ``"embedding model"``.
        signal_name: ``"SIGILL"`` ... when a signal ended it, else None.
    """

    def __init__(self, message: str, component: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.component = component
        self.signal_name = signal_name
