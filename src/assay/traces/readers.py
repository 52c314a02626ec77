"""Read trace files of any supported format into units, rejecting bad records with reasons.

Each format is a :class:`TraceReader` registered in :data:`READERS`; the built-ins
(:mod:`assay.traces.formats`) register with :func:`trace_reader` as a package's reader does
through the entry-point group ``assay.readers``::

    [project.entry-points."assay.readers"]
    phoenix = "my_package.readers"     # a module whose import calls @trace_reader("phoenix")
"""

from __future__ import annotations

import gzip
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, TypeGuard, TypeVar

from assay._util.registry import Registry
from assay.exceptions import IngestError, UsageError
from assay.traces.model import Unit
from assay.traces.shapes import describe_error

Format = Literal["auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat", "anthropic-messages"]
FORMATS: tuple[str, ...] = ("auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat",
                            "anthropic-messages")
"""The built-in formats (``auto`` detects); packages add more (:data:`READERS`)."""
SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".log", ".txt")
"""File types a folder is searched for (each also gzip-compressed, e.g. ``.jsonl.gz``)."""
_LINES_SUFFIXES = (".jsonl", ".ndjson")
R = TypeVar("R", bound="TraceReader")
Read = tuple[Unit | None, str | None]
"""``(unit, None)`` for a record read, ``(None, reason)`` for one rejected."""
Layout = Literal["document", "lines", "either"]


class UnrecognisedFile(IngestError):
    """A file whose content is no trace format assay reads (not JSON / JSON Lines, or no known format):
    skipped when found by searching a folder, rejected when named explicitly."""


@dataclass
class Rejection:
    """One record that could not be read: where and why."""

    path: str
    reason: str


@dataclass
class ReadResult:
    """What a file yielded: units, the format used, and the records rejected with reasons."""

    path: str
    format: str
    units: list[Unit] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def span_count(self) -> int:
        """Number of spans across all units."""
        return sum(len(u.spans) for u in self.units)

    def add(self, reads: Iterable[Read]) -> ReadResult:
        """Append each read unit, and each rejection with this file's path; returns self."""
        for unit, reason in reads:
            if unit is not None:
                self.units.append(unit)
            else:
                self.rejected.append(Rejection(self.path, str(reason)))
        return self


class TraceReader(ABC):
    """One trace format, registered in :data:`READERS` under its name (the ``--format`` value).

    ``layout`` says how its files hold records: one JSON ``document`` (the default), JSON
    ``lines`` (one record per line, also when the file is one line) or ``either``. Readers run
    in the worker of ``assay ingest`` and must keep no state between files.
    """

    layout: ClassVar[Layout] = "document"

    @abstractmethod
    def detect(self, data: object) -> bool:
        """True when ``data`` (a parsed JSON document, or the first record of a JSON Lines file) is this format."""

    @abstractmethod
    def read(self, data: object, path: Path, name: str) -> ReadResult:
        """Read a parsed JSON document; ``name`` is the format's registered name (the result's ``format``).

        Raises:
            IngestError: the document as a whole has the wrong shape (bad records are rejected instead).
        """

    def read_lines(self, text: str, path: Path, name: str, auto: bool) -> ReadResult:
        """Read a JSON Lines file, one record per line; ``auto``: the format was detected from the first record.

        The default reads each line with :meth:`read`; a line that fails is rejected as ``line N: reason``.
        """
        result = ReadResult(path=str(path), format=name)
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                one = self.read(json.loads(line), path, name)
            except Exception as exc:  # noqa: BLE001 - one bad line must not cost the file
                result.rejected.append(Rejection(str(path), f"line {n}: {describe_error(exc)}"))
                continue
            result.units += one.units
            result.rejected += [Rejection(r.path, f"line {n}: {r.reason}") for r in one.rejected]
        return result


def _is_reader(obj: object) -> TypeGuard[TraceReader]:
    return isinstance(obj, TraceReader)


READERS: Registry[TraceReader] = Registry("assay.readers", "trace format", _is_reader,
                                          builtins="assay.traces.formats")
"""The trace formats: name -> reader; auto-detection tries them in registration order (built-ins first)."""


def trace_reader(name: str) -> Callable[[type[R]], type[R]]:
    """Class decorator registering an instance of a :class:`TraceReader` as format ``name`` (built-ins use it too).

    Raises:
        ConfigError: see :meth:`assay._util.registry.Registry.register`.
    """
    def add(cls: type[R]) -> type[R]:
        READERS.register(name)(cls())
        return cls

    return add


def detect_format(data: object) -> str:
    """Return the name of the first format whose reader recognises parsed JSON, or raise.

    The built-ins are tried first, in the order ``otlp-json``, ``tau-bench``, ``magentic-one``,
    ``langfuse``, ``openai-chat`` / ``anthropic-messages``.

    Raises:
        IngestError: the content matches no known format.
    """
    for name, reader in READERS.items():
        if reader.detect(data):
            return name
    raise IngestError("<data>", "unknown format: expected an OTLP JSON export (resourceSpans) "
                      "or tau-bench trajectories (a list of runs with task_id and traj) "
                      "or a Magentic-One log (a list of {role, content} with Orchestrator roles) "
                      "or a Langfuse export ({trace, observations}) or a chat log (one {messages} conversation "
                      "per line, or a JSON document holding one conversation or a list of them)"
                      + _extensions_named())


def _extensions_named() -> str:
    more = [n for n in READERS.names() if n not in FORMATS]
    return f" or a format of an extension ({', '.join(more)})" if more else ""


def read_file(path: Path | str, fmt: str = "auto") -> ReadResult:
    """Read one trace file.

    Args:
        path: a JSON or JSON Lines file (``.gz`` compressed too).
        fmt: ``auto`` (detect from content), ``tau-bench``, ``otlp-json``, ``magentic-one``
            (one run per file; the run id is the file name without ``.json``), ``langfuse`` (a Langfuse
            export, or a list of them), ``openai-chat`` or ``anthropic-messages`` (JSONL, one conversation
            per line, or a JSON document holding one conversation, a list of them, or a bare list of
            messages; a ``.jsonl`` file or several JSON objects on lines is read as JSONL under ``auto``,
            unless it is one JSON document over several lines), or a format a package registers
            (entry-point group ``assay.readers``).

    Returns:
        :class:`ReadResult`; malformed records are in ``rejected``, the rest in ``units``.

    Raises:
        UsageError: unknown ``fmt``.
        IngestError: the file cannot be read or parsed as JSON, or its format is unknown.
    """
    if fmt != "auto" and fmt not in READERS.names():
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(('auto', *READERS.names()))}")
    p = Path(path)
    text = _read_text(p)
    if not text.strip():
        raise IngestError(str(p), "empty file")
    inner = _inner_suffix(p)
    named = READERS.get(fmt) if fmt != "auto" else None
    if named is not None and named.layout == "lines":
        return named.read_lines(text, p, fmt, auto=False)
    if named is None and _is_jsonl(inner, text):
        return _read_jsonl(p, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if inner in (".log", ".txt") and fmt == "auto":
            raise UnrecognisedFile(str(p), f"not JSON or JSON Lines ({exc})") from exc
        raise IngestError(str(p), f"not valid JSON: {exc}") from exc
    except RecursionError:
        raise IngestError(str(p), "JSON nested too deeply to read") from None
    try:
        used = detect_format(data) if fmt == "auto" else fmt
    except IngestError as exc:
        raise UnrecognisedFile(str(p), exc.reason) from exc
    reader = READERS.get(used)
    if reader.layout == "lines":
        return reader.read_lines(text, p, used, auto=fmt == "auto")
    return reader.read(data, p, used)


def json_documents(path: Path | str) -> tuple[list[tuple[str, object]], list[Rejection]]:
    """The JSON documents of a file, for readers that take any JSON shape (a mapping, your own function).

    Returns:
        ``([("", value)], [])`` for a JSON file (gzipped too), or ``([("line N", value), ...], rejected)``
        for JSON Lines (see :func:`read_file` for how they are told apart), a line that is not JSON
        rejected as ``line N: reason``.

    Raises:
        IngestError: the file cannot be read, is empty, or is not JSON (UnrecognisedFile for a .log or
            .txt file, which a folder search then skips).
    """
    p = Path(path)
    text = _read_text(p)
    if not text.strip():
        raise IngestError(str(p), "empty file")
    if _is_jsonl(_inner_suffix(p), text):
        docs: list[tuple[str, object]] = []
        rejected: list[Rejection] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    docs.append((f"line {n}", json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as exc:
                    rejected.append(Rejection(str(p), f"line {n}: not JSON: {describe_error(exc)}"))
        return docs, rejected
    try:
        return [("", json.loads(text))], []
    except json.JSONDecodeError as exc:
        if _inner_suffix(p) in (".log", ".txt"):
            raise UnrecognisedFile(str(p), f"not JSON or JSON Lines ({exc})") from exc
        raise IngestError(str(p), f"not valid JSON: {exc}") from exc
    except RecursionError:
        raise IngestError(str(p), "JSON nested too deeply to read") from None


def _read_text(p: Path) -> str:
    """The file's text (UTF-8), gunzipped when it ends in ``.gz``.

    Raises:
        IngestError: unreadable; UnrecognisedFile: not text, or not gzip despite the name.
    """
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise IngestError(str(p), f"cannot read: {exc.strerror or exc}") from exc
    if p.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnrecognisedFile(str(p), f"not a gzip file: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnrecognisedFile(str(p), f"not UTF-8 text: {exc}") from exc


def _inner_suffix(p: Path) -> str:
    """The suffix that says the content type: ``x.jsonl.gz`` → ``.jsonl``."""
    return Path(p.stem).suffix.lower() if p.suffix == ".gz" else p.suffix.lower()


def _is_jsonl(suffix: str, text: str) -> bool:
    """JSON Lines: a ``.jsonl`` / ``.ndjson`` file (unless it is one JSON document over several lines),
    or several JSON objects on separate lines."""
    if suffix in _LINES_SUFFIXES:
        return json_document(text) is None
    lines = [ln for ln in text.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(ln), dict) for ln in lines)
    except (json.JSONDecodeError, RecursionError):
        return False


def json_document(text: str) -> object | None:
    """The parsed value when ``text`` is one JSON document rather than JSON Lines: a value spread over
    several lines (pretty-printed: its first line is no JSON value of its own), or a single line holding
    a list; None otherwise (JSON Lines, a single-line object, or not JSON at all)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        first = json.loads(lines[0])
        return first if len(lines) == 1 and isinstance(first, list) else None
    except (json.JSONDecodeError, RecursionError):
        pass
    if len(lines) == 1:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _read_jsonl(p: Path, text: str) -> ReadResult:
    """A JSON Lines file under ``auto``: the first format that reads lines and recognises the first record."""
    first = _first_record(text)
    for name, reader in READERS.items():
        if reader.layout != "document" and reader.detect(first):
            return reader.read_lines(text, p, name, auto=True)
    raise UnrecognisedFile(str(p), "JSON Lines, but the first record is neither an OTLP export "
                           "(resourceSpans) nor a chat log ({messages})" + _extensions_named())


def _first_record(text: str) -> object:
    for line in text.splitlines():
        if line.strip():
            try:
                return json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return None
    return None


def is_supported(p: Path) -> bool:
    """True when the file name ends in one of :data:`SUFFIXES`, optionally followed by ``.gz``."""
    return _inner_suffix(p) in SUFFIXES


def collect_files(paths: list[Path]) -> tuple[list[Path], list[Rejection]]:
    """Expand folders, recursively, into the files :func:`read_file` may read (sorted).

    A folder yields every file ending in one of :data:`SUFFIXES` (``.json``, ``.jsonl``, ``.ndjson``,
    ``.log``, ``.txt``, each also as ``.gz``); other files are returned as skipped with a reason;
    hidden files and folders (``.git``, ``.assay`` ...) are passed over silently. Files named
    explicitly are always taken, whatever their name.

    Returns:
        ``(files to read, skipped files with reasons)``.

    Raises:
        UsageError: a path does not exist.
    """
    out: list[Path] = []
    skipped: list[Rejection] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if not f.is_file() or any(part.startswith(".") for part in rel):
                    continue
                if is_supported(f):
                    out.append(f)
                else:
                    skipped.append(Rejection(str(f), f"unsupported file type {''.join(f.suffixes) or '(none)'}: "
                                             f"folders are searched for {', '.join(SUFFIXES)} (and .gz)"))
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"no such file or directory: {p}")
    return out, skipped


def expand_paths(paths: list[Path]) -> list[Path]:
    """The files of :func:`collect_files`, without the skipped ones.

    Raises:
        UsageError: a path does not exist.
    """
    return collect_files(paths)[0]
