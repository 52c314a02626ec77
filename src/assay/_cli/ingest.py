"""``assay ingest``: read trace files into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors, progress_bar
from assay.exceptions import IngestError
from assay.traces.readers import FORMATS, expand_paths, read_file


@handle_errors
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Trace files or folders (folders: every *.json inside).")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}; auto detects from content.",
                                     envvar="ASSAY_INGEST_FORMAT")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest trace files (tau-bench trajectories, OTLP JSON with OTel GenAI / OpenInference attributes).

    Re-ingesting a file adds nothing twice: a span is identified by trace id + span id.
    Malformed records are rejected with a reason; the rest of the file is kept.
    """
    app = get_ctx(ctx)
    files = expand_paths(paths)
    summary: dict[str, object] = {"files": [], "units_new": 0, "units_updated": 0, "spans_new": 0,
                                  "spans_duplicate": 0, "rejected": []}
    with progress_bar("ingesting", len(files)) as advance:
        for path in files:
            try:
                result = read_file(path, fmt)
            except IngestError as exc:
                summary["rejected"].append({"path": exc.path, "reason": exc.reason})  # type: ignore[attr-defined]
                advance(1)
                continue
            counts = app.store.add_units(result.units)
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
        return
    table = Table("file", "format", "units", "spans", "rejected", title="ingest")
    for f in summary["files"]:  # type: ignore[attr-defined]
        table.add_row(f["path"], f["format"], str(f["units"]), str(f["spans"]), str(f["rejected"]))
    console.print(table)
    console.print(f"units: {summary['units_new']} new, {summary['units_updated']} updated; "
                  f"spans: {summary['spans_new']} new, {summary['spans_duplicate']} already stored; "
                  f"rejected: {len(summary['rejected'])}")  # type: ignore[arg-type]
    for r in summary["rejected"][:20]:  # type: ignore[index]
        console.print(f"  [yellow]rejected[/yellow] {r['path']}: {r['reason']}")
