"""``assay ingest``: read trace files into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, err_console, get_ctx, handle_errors, progress_bar
from assay.exceptions import IngestError, UsageError
from assay.traces.readers import FORMATS, SUFFIXES, UnrecognisedFile, collect_files, read_file
from assay.traces.shapes import describe_error


@handle_errors
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        help=f"Trace files or folders. Folders are searched recursively for {', '.join(SUFFIXES)} files "
             "(also gzipped, e.g. .jsonl.gz); other files and files in no known format are skipped "
             "with a reason.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}; auto detects from content.",
                                     envvar="ASSAY_INGEST_FORMAT")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest trace files: OTLP JSON (OTel GenAI / OpenInference), Langfuse exports, chat-log JSONL
    (OpenAI, Anthropic), tau-bench trajectories, Magentic-One logs.

    Re-ingesting adds nothing twice (a span is identified by trace id + span id).

    Malformed records are rejected with a reason; the rest of the file is kept.

    Files found in a folder whose content is in no known format are skipped, listed with the reason.

    Exit code: 0 when at least one unit was read (new or already stored); 1 when nothing could be
    ingested (every record rejected, or no ingestible file in the folders given), so a CI step
    fails instead of passing silently; 2 for usage errors (unknown --format, missing path).
    """
    app = get_ctx(ctx)
    files, skipped = collect_files(paths)
    explicit = {p for p in paths if not p.is_dir()}
    summary: dict[str, object] = {"files": [], "units_new": 0, "units_updated": 0, "spans_new": 0,
                                  "spans_duplicate": 0, "rejected": [],
                                  "skipped": [{"path": r.path, "reason": r.reason} for r in skipped]}
    ingested = 0
    with progress_bar("ingesting", len(files)) as advance:
        for path in files:
            try:
                result = read_file(path, fmt)
            except UnrecognisedFile as exc:
                key = "rejected" if path in explicit else "skipped"
                summary[key].append({"path": exc.path, "reason": exc.reason})  # type: ignore[attr-defined]
                advance(1)
                continue
            except IngestError as exc:
                summary["rejected"].append({"path": exc.path, "reason": exc.reason})  # type: ignore[attr-defined]
                advance(1)
                continue
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - safety net: a reader bug costs one file, not the run
                summary["rejected"].append({"path": str(path),  # type: ignore[attr-defined]
                                            "reason": f"could not be read: {describe_error(exc)}"})
                advance(1)
                continue
            counts = app.store.add_units(result.units)
            ingested += len(result.units)
            summary["files"].append({"path": str(path), "format": result.format,  # type: ignore[attr-defined]
                                     "units": len(result.units), "spans": result.span_count,
                                     "rejected": len(result.rejected)})
            for key in ("units_new", "units_updated", "spans_new", "spans_duplicate"):
                summary[key] = int(summary[key]) + getattr(counts, key)  # type: ignore[call-overload]
            summary["rejected"].extend({"path": r.path, "reason": r.reason}  # type: ignore[attr-defined]
                                       for r in result.rejected)
            advance(1)
    if as_json:
        console.print_json(json.dumps(summary))
        _fail_if_nothing(ingested, summary)
        return
    table = Table("file", "format", "units", "spans", "rejected", title="ingest")
    for f in summary["files"]:  # type: ignore[attr-defined]
        table.add_row(escape(f["path"]), f["format"], str(f["units"]), str(f["spans"]), str(f["rejected"]))
    console.print(table)
    console.print(f"units: {summary['units_new']} new, {summary['units_updated']} updated; "
                  f"spans: {summary['spans_new']} new, {summary['spans_duplicate']} already stored; "
                  f"rejected: {len(summary['rejected'])}")  # type: ignore[arg-type]
    for r in summary["rejected"][:20]:  # type: ignore[index]
        console.print(f"  [yellow]rejected[/yellow] {escape(r['path'])}: {escape(r['reason'])}")
    if summary["skipped"]:
        console.print(f"skipped: {len(summary['skipped'])} file(s) in no supported format")  # type: ignore[arg-type]
    for r in summary["skipped"][:20]:  # type: ignore[index]
        console.print(f"  [dim]skipped[/dim] {escape(r['path'])}: {escape(r['reason'])}")
    _fail_if_nothing(ingested, summary)


def _fail_if_nothing(ingested: int, summary: dict[str, object]) -> None:
    """Exit 1 (message on stderr) when no unit was read from any file, so a CI step fails loudly."""
    if ingested:
        return
    n_rej, n_skip = len(summary["rejected"]), len(summary["skipped"])  # type: ignore[arg-type]
    if not summary["files"] and not n_rej:
        why = "no ingestible file found" + (f" ({n_skip} skipped)" if n_skip else "")
    elif not n_rej:
        why = "the files read hold no trace records"
    else:
        why = f"every record was rejected ({n_rej} rejected, {n_skip} skipped)"
    err_console.print(f"[red]error:[/red] nothing ingested: {escape(why)}")
    raise typer.Exit(1)
