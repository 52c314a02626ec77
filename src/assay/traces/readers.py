"""Read trace files of any supported format into units, rejecting bad records with reasons."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from assay.exceptions import IngestError, UsageError
from assay.traces import otlp_json, tau_bench
from assay.traces.model import Span, Unit

Format = Literal["auto", "tau-bench", "otlp-json"]
FORMATS: tuple[str, ...] = ("auto", "tau-bench", "otlp-json")


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
    """Return ``"tau-bench"`` or ``"otlp-json"`` for parsed JSON, or raise.

    Raises:
        IngestError: the content matches no known format.
    """
    if otlp_json.looks_like_otlp(data):
        return "otlp-json"
    if tau_bench.looks_like_tau_bench(data):
        return "tau-bench"
    raise IngestError("<data>", "unknown format: expected an OTLP JSON export (resourceSpans) "
                      "or tau-bench trajectories (a list of runs with task_id and traj)")


def read_file(path: Path | str, fmt: str = "auto") -> ReadResult:
    """Read one trace file.

    Args:
        path: a JSON file.
        fmt: ``auto`` (detect from content), ``tau-bench`` or ``otlp-json``.

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
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IngestError(str(p), f"cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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


def expand_paths(paths: list[Path]) -> list[Path]:
    """Expand directories into the ``*.json`` files they contain (sorted).

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
