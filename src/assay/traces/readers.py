"""Read trace files of any supported format into units, rejecting bad records with reasons."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from assay.exceptions import IngestError, UsageError
from assay.traces import chat_logs, langfuse, magentic, otlp_json, tau_bench
from assay.traces.model import Span, Unit

Format = Literal["auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat", "anthropic-messages"]
FORMATS: tuple[str, ...] = ("auto", "tau-bench", "otlp-json", "magentic-one", "langfuse", "openai-chat",
                            "anthropic-messages")
_JSONL_FORMATS = ("openai-chat", "anthropic-messages")


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
        path: a JSON file.
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
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise IngestError(str(p), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise IngestError(str(p), f"not valid JSON: {exc}") from exc
    if fmt in _JSONL_FORMATS or (fmt == "auto" and _is_jsonl(p, text)):
        return _read_jsonl(p, text, fmt)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(str(p), f"not valid JSON: {exc}") from exc
    try:
        used = detect_format(data) if fmt == "auto" else fmt
    except IngestError as exc:
        raise IngestError(str(p), exc.reason) from exc
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


def _is_jsonl(p: Path, text: str) -> bool:
    """JSON Lines: a ``.jsonl`` file, or several JSON objects on separate lines."""
    if p.suffix == ".jsonl":
        return True
    lines = [ln for ln in text.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(ln), dict) for ln in lines)
    except json.JSONDecodeError:
        return False


def _read_jsonl(p: Path, text: str, fmt: str) -> ReadResult:
    """Chat-log JSONL (one conversation per line); bad lines are rejected with their line number."""
    forced = fmt if fmt in _JSONL_FORMATS else None
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


def expand_paths(paths: list[Path]) -> list[Path]:
    """Expand directories into the ``*.json`` files they contain (sorted; name ``.jsonl`` files explicitly).

    Raises:
        UsageError: a path does not exist.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(p.rglob("*.json")))
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"no such file or directory: {p}")
    return out
