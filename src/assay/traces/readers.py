"""Read trace files of any supported format into units, rejecting bad records with reasons."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from assay.exceptions import IngestError, UsageError
from assay.traces import chat_logs, langfuse, magentic, tau_bench
from assay.traces import otlp as otlp_json
from assay.traces.model import Span, Unit
from assay.traces.shapes import describe_error

Format = Literal["auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat", "anthropic-messages"]
FORMATS: tuple[str, ...] = ("auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat",
                            "anthropic-messages")
_JSONL_FORMATS = ("openai-chat", "anthropic-messages")
SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".log", ".txt")
"""File types a folder is searched for (each also gzip-compressed, e.g. ``.jsonl.gz``)."""
_LINES_SUFFIXES = (".jsonl", ".ndjson")


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


def detect_format(data: object) -> str:
    """Return ``"tau-bench"``, ``"otlp-json"`` or ``"magentic-one"`` for parsed JSON, or raise.

    Raises:
        IngestError: the content matches no known format.
    """
    if otlp_json.looks_like_otlp(data):
        return "otlp-json"
    if tau_bench.looks_like_tau_bench(data):
        return "tau-bench"
    if magentic.looks_like_magentic(data):
        return "magentic-one"
    if langfuse.looks_like_langfuse(data):
        return "langfuse"
    chat = chat_logs.detect_chat_format(data)
    if chat is not None:
        return chat
    raise IngestError("<data>", "unknown format: expected an OTLP JSON export (resourceSpans) "
                      "or tau-bench trajectories (a list of runs with task_id and traj) "
                      "or a Magentic-One log (a list of {role, content} with Orchestrator roles) "
                      "or a Langfuse export ({trace, observations}) or chat-log JSONL (one {messages} per line)")


def read_file(path: Path | str, fmt: str = "auto") -> ReadResult:
    """Read one trace file.

    Args:
        path: a JSON or JSON Lines file (``.gz`` compressed too).
        fmt: ``auto`` (detect from content), ``tau-bench``, ``otlp-json``, ``magentic-one``
            (one run per file; the run id is the file name without ``.json``), ``langfuse`` (a Langfuse
            export), ``openai-chat`` or ``anthropic-messages`` (JSONL, one conversation per line; a
            ``.jsonl`` file or several JSON objects on lines is read as JSONL under ``auto``).

    Returns:
        :class:`ReadResult`; malformed records are in ``rejected``, the rest in ``units``.

    Raises:
        UsageError: unknown ``fmt``.
        IngestError: the file cannot be read or parsed as JSON, or its format is unknown.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    p = Path(path)
    text = _read_text(p)
    if not text.strip():
        raise IngestError(str(p), "empty file")
    inner = _inner_suffix(p)
    if fmt in _JSONL_FORMATS or (fmt == "auto" and _is_jsonl(inner, text)):
        return _read_jsonl(p, text, fmt)
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
    result = ReadResult(path=str(p), format=used)
    source = f"{used}:{p.name}"
    if used == "tau-bench":
        if not isinstance(data, list | dict):
            raise IngestError(str(p), "tau-bench file must hold a list of runs")
        for unit, reason in tau_bench.read_runs(data, source):
            if unit is not None:
                result.units.append(unit)
            else:
                result.rejected.append(Rejection(str(p), str(reason)))
    elif used == "langfuse":
        if not langfuse.looks_like_langfuse(data):
            raise IngestError(str(p), "Langfuse export must hold an object with trace and observations")
        for unit, reason in langfuse.read_export(data, source):
            if unit is not None:
                result.units.append(unit)
            else:
                result.rejected.append(Rejection(str(p), str(reason)))
    elif used in _JSONL_FORMATS:
        return _read_jsonl(p, text, used)
    elif used == "magentic-one":
        for unit, reason in magentic.read_runs(data, p.stem, source):
            if unit is not None:
                result.units.append(unit)
            else:
                result.rejected.append(Rejection(str(p), str(reason)))
    else:
        if not isinstance(data, dict):
            raise IngestError(str(p), "OTLP JSON file must hold an object with resourceSpans")
        spans: list[Span] = []
        for span, reason in otlp_json.read_spans(data):
            if span is not None:
                spans.append(span)
            else:
                result.rejected.append(Rejection(str(p), str(reason)))
        result.units = otlp_json.group_units(spans, source)
    return result


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
    """JSON Lines: a ``.jsonl`` / ``.ndjson`` file, or several JSON objects on separate lines."""
    if suffix in _LINES_SUFFIXES:
        return True
    lines = [ln for ln in text.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(ln), dict) for ln in lines)
    except (json.JSONDecodeError, RecursionError):
        return False


def _read_jsonl(p: Path, text: str, fmt: str) -> ReadResult:
    """Chat-log JSONL (one conversation per line); bad lines are rejected with their line number."""
    forced = fmt if fmt in _JSONL_FORMATS else None
    if forced is None:
        first = _first_record(text)
        if otlp_json.looks_like_otlp(first):
            return _read_otlp_lines(p, text)
        if chat_logs.detect_chat_format(first) is None:
            raise UnrecognisedFile(str(p), "JSON Lines, but the first record is neither an OTLP export "
                                   "(resourceSpans) nor a chat log ({messages})")
    result = ReadResult(path=str(p), format=forced or "chat-jsonl")
    formats: set[str] = set()
    for unit, reason in chat_logs.read_jsonl(text, forced, f"{forced or 'chat'}:{p.name}"):  # type: ignore[arg-type]
        if unit is not None:
            result.units.append(unit)
            formats.add(str(unit.attributes.get("format")))
        else:
            result.rejected.append(Rejection(str(p), str(reason)))
    if not result.units and not result.rejected:
        raise IngestError(str(p), "empty JSONL file")
    if len(formats) == 1:
        result.format = formats.pop()
    return result


def _first_record(text: str) -> object:
    for line in text.splitlines():
        if line.strip():
            try:
                return json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return None
    return None


def _read_otlp_lines(p: Path, text: str) -> ReadResult:
    """OTLP JSON Lines, one ``ExportTraceServiceRequest`` per line (the OpenTelemetry Collector's
    file exporter); spans of all lines are grouped into units together."""
    result = ReadResult(path=str(p), format="otlp-json")
    spans: list[Span] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not otlp_json.looks_like_otlp(data):
                raise ValueError("not an OTLP export (no resourceSpans)")
            for span, reason in otlp_json.read_spans(data):
                if span is not None:
                    spans.append(span)
                else:
                    result.rejected.append(Rejection(str(p), f"line {n}: {reason}"))
        except Exception as exc:  # noqa: BLE001 - one bad line must not cost the file
            result.rejected.append(Rejection(str(p), f"line {n}: {describe_error(exc)}"))
    result.units = otlp_json.group_units(spans, f"otlp-json:{p.name}")
    return result


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
