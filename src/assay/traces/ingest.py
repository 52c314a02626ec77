"""Ingest of paths: files and folders (searched recursively), the format detected per file, every
unit written to a sink (the store), and what was rejected or skipped, with the reason.

``ingest_paths`` is what ``assay ingest`` runs; from Python::

    from assay import open_store, load_settings
    from assay.traces import ingest_paths
    result = ingest_paths(["traces/"], open_store(load_settings(".")))
    print(result.units_new, result.rejected, result.skipped)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assay.exceptions import IngestError, UsageError
from assay.traces.environment import Environment, with_environment
from assay.traces.model import Unit
from assay.traces.readers import ReadResult, Rejection, UnrecognisedFile, collect_files, read_file
from assay.traces.shapes import describe_error


class WriteCounts(Protocol):
    """What one write of units changed (the store's ``IngestCounts``)."""

    units_new: int
    units_updated: int
    spans_new: int
    spans_duplicate: int


class UnitSink(Protocol):
    """Where ingested units go: :class:`assay.Store` (``add_units``), or anything with that method."""

    def add_units(self, units: list[Unit]) -> WriteCounts:
        """Write units and their spans; a span already written (trace id + span id) is not written twice."""
        ...


@dataclass
class FileIngested:
    """One file that was read: its format and what it held."""

    path: str
    format: str
    units: int
    spans: int
    rejected: int


@dataclass
class IngestResult:
    """What :func:`ingest_paths` did.

    Attributes:
        files: the files read, in order.
        units_new, units_updated, spans_new, spans_duplicate: the sink's counts, summed over files.
        units_read: units read from all files (new or already stored).
        rejected: records and files that could not be read (a file named explicitly in no known
            format is rejected).
        skipped: files found in a folder and passed over: unsupported file type, or content in no
            known format.
    """

    files: list[FileIngested] = field(default_factory=list)
    units_new: int = 0
    units_updated: int = 0
    spans_new: int = 0
    spans_duplicate: int = 0
    units_read: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[Rejection] = field(default_factory=list)

    def add(self, read: ReadResult, counts: WriteCounts) -> None:
        """Count one file that was read and written."""
        self.files.append(FileIngested(read.path, read.format, len(read.units), read.span_count, len(read.rejected)))
        self.units_read += len(read.units)
        self.units_new += counts.units_new
        self.units_updated += counts.units_updated
        self.spans_new += counts.spans_new
        self.spans_duplicate += counts.spans_duplicate
        self.rejected.extend(read.rejected)

    def nothing_ingested(self) -> str | None:
        """Why no unit was read from any file, or None when some were."""
        if self.units_read:
            return None
        n_rej, n_skip = len(self.rejected), len(self.skipped)
        if not self.files and not n_rej:
            return "no ingestible file found" + (f" ({n_skip} skipped)" if n_skip else "")
        if not n_rej:
            return "the files read hold no trace records"
        return f"every record was rejected ({n_rej} rejected, {n_skip} skipped)"

    def to_json(self) -> dict[str, Any]:
        """The summary ``assay ingest --json`` prints: files, counts, rejected and skipped ``{path, reason}``."""
        return {"files": [vars(f) for f in self.files], "units_new": self.units_new,
                "units_updated": self.units_updated, "spans_new": self.spans_new,
                "spans_duplicate": self.spans_duplicate,
                "rejected": [{"path": r.path, "reason": r.reason} for r in self.rejected],
                "skipped": [{"path": r.path, "reason": r.reason} for r in self.skipped]}


def ingest_paths(paths: Sequence[Path | str], sink: UnitSink, fmt: str = "auto",
                 progress: Callable[[int, int], None] | None = None,
                 reader: Callable[[Path], ReadResult] | None = None,
                 environment: Environment | None = None) -> IngestResult:
    """Read trace files and folders and write their units to ``sink``, one file at a time.

    Folders are searched recursively (see :func:`~assay.traces.readers.collect_files`: ``.json``,
    ``.jsonl``, ``.ndjson``, ``.log``, ``.txt``, each also gzipped); a found file in no known format is
    *skipped*, a named one *rejected*. Malformed records are rejected with a reason and the rest of
    their file is kept; an unexpected error inside a reader costs that file only.

    Args:
        paths: files and folders.
        sink: where units go, e.g. the store.
        fmt: ``auto`` (detected per file) or a format registered in :data:`~assay.traces.readers.READERS`.
        progress: called with ``(files done, files in all)``: once before the first file, then after each.
        reader: read every file with this function instead of a registered format (``fmt`` must be
            ``auto``), e.g. a reader function (:func:`assay.traces.custom.load_reader`).
        environment: the environment and release of units whose data names none
            (:func:`assay.traces.environment.with_environment`), e.g. ``Environment("evaluation")``.

    Returns:
        :class:`IngestResult`; :meth:`IngestResult.nothing_ingested` says why, when no unit was read.

    Raises:
        UsageError: a path does not exist, ``fmt`` is unknown, or both ``fmt`` and ``reader`` are given.
    """
    if reader is not None and fmt != "auto":
        raise UsageError(f"a reader function or mapping reads every file: drop --format {fmt}")
    read = reader or (lambda path: read_file(path, fmt))
    given = [Path(p) for p in paths]
    files, skipped = collect_files(given)
    explicit = {p for p in given if not p.is_dir()}
    result = IngestResult(skipped=list(skipped))
    if progress:
        progress(0, len(files))
    for n, path in enumerate(files, start=1):
        _ingest_file(path, read, sink, result, named=path in explicit, environment=environment)
        if progress:
            progress(n, len(files))
    return result


def _ingest_file(path: Path, reader: Callable[[Path], ReadResult], sink: UnitSink, result: IngestResult,
                 named: bool, environment: Environment | None = None) -> None:
    try:
        read = reader(path)
    except UnrecognisedFile as exc:
        (result.rejected if named else result.skipped).append(Rejection(str(path), exc.reason))
        return
    except IngestError as exc:
        result.rejected.append(Rejection(str(path), exc.reason))
        return
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - safety net: a reader bug costs one file, not the run
        result.rejected.append(Rejection(str(path), f"could not be read: {describe_error(exc)}"))
        return
    if environment is not None:
        read.units = [with_environment(u, environment) for u in read.units]
    result.add(read, sink.add_units(read.units))
