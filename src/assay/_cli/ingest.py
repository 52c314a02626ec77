"""``assay ingest``: read trace files into the store (a shell over :func:`assay.traces.ingest_paths`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import AppContext, console, err_console, get_ctx, handle_errors, progress_bar
from assay._cli.exit_codes import ExitCode
from assay._cli.online import print_carried
from assay._store.store import IngestCounts
from assay.evaluators import load_evaluators
from assay.evaluators.carried import CarriedImport, carried_in, import_carried
from assay.exceptions import ConfigError, UsageError
from assay.signals import DetectingSink
from assay.traces import Unit
from assay.traces.custom import load_reader
from assay.traces.environment import Environment
from assay.traces.evaluations import CarriedEvaluation
from assay.traces.ingest import IngestResult, UnitSink, WriteCounts, ingest_paths
from assay.traces.mapping import mapping_reader
from assay.traces.readers import FORMATS, SUFFIXES


@handle_errors
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        help=f"Trace files or folders. Folders are searched recursively for {', '.join(SUFFIXES)} files "
             "(also gzipped, e.g. .jsonl.gz); other files and files in no known format are skipped "
             "with a reason.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}; auto detects from content.",
                                     envvar="ASSAY_INGEST_FORMAT")] = "auto",
    reader: Annotated[str | None, typer.Option(
        "--reader", help="Read every file with your own Python function instead of a built-in format: "
        "module:function or path/to/file.py:function, called with each file's path, returning a list of "
        "assay.traces.Unit (or a ReadResult).", envvar="ASSAY_INGEST_READER")] = None,
    mapping: Annotated[Path | None, typer.Option(
        "--mapping", help="Read every file with a declarative mapping (a YAML file: where the records, ids, "
        "messages, roles, tool calls, outcome, feedback, times and usage are, and regular expressions that turn "
        "text actions into tool calls); see docs/mappings.md.", envvar="ASSAY_INGEST_MAPPING")] = None,
    env: Annotated[str | None, typer.Option("--env", envvar="ASSAY_INGEST_ENV", show_default=False, help=(
        "The environment of units whose data names none (no deployment.environment.name resource attribute, "
        "no environment field): e.g. --env evaluation for an evaluation batch, so it stays out of production "
        "signatures, samples and drift."))] = None,
    release: Annotated[str | None, typer.Option("--release", envvar="ASSAY_INGEST_RELEASE", show_default=False,
                                                help="The release (app version) of units whose data names "
                                                     "none (service.version).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    signals: Annotated[bool, typer.Option("--signals/--no-signals", envvar="ASSAY_INGEST_SIGNALS",
                                          help="Detect the failure signals of the units read, while they are in "
                                               "memory (default); --no-signals leaves them to `assay signals "
                                               "update` or the worker.")] = True,
) -> None:
    """Ingest trace files: OTLP JSON (OTel GenAI / OpenInference), Langfuse exports, chat-log JSONL
    (OpenAI, Anthropic), tau-bench trajectories, Magentic-One logs.

    Re-ingesting adds nothing twice (a span is identified by trace id + span id).

    Each unit gets the environment and release its data names (OTel resource attributes
    deployment.environment.name and service.version, a record's environment and release fields),
    else --env and --release; a unit named in none counts as the default environment (production).

    Malformed records are rejected with a reason; the rest of the file is kept.

    The failure signals of the units read (their recorded outcome, error spans, conversation and
    behaviour cues, the feedback they carry) are detected and stored as they are ingested.

    Files found in a folder whose content is in no known format are skipped, listed with the reason.

    Evaluation results carried in the traces (OTel gen_ai.evaluation.result events, OpenInference
    annotations, Langfuse scores) are imported as scores of the `external` evaluators that name them
    (see `assay scores import`); the others are counted, with what to add to import them.

    Exit code: 0 when at least one unit was read (new or already stored); 1 when nothing could be
    ingested (every record rejected, or no ingestible file in the folders given), so a CI step
    fails instead of passing silently; 2 for usage errors (unknown --format, missing path, a --reader
    that cannot be imported, an invalid --mapping file); 3 a failure.
    """
    if reader and mapping:
        raise UsageError("give --reader or --mapping, not both")
    file_reader = load_reader(reader) if reader else mapping_reader(mapping) if mapping else None
    app = get_ctx(ctx)
    inner: UnitSink = DetectingSink(lambda: app.store, app.settings.signals) if signals else _StoreOnFirstWrite(app)
    sink = _KeepCarried(app, inner)
    with progress_bar("ingesting", None) as advance:
        result = ingest_paths(paths, sink, fmt, progress=lambda done, total: advance(int(done > 0), total),
                              reader=file_reader, environment=Environment(env or None, release or None))
    carried = _import_carried(sink, [str(p) for p in paths])
    found = inner.report if isinstance(inner, DetectingSink) else None
    if as_json:
        console.print_json(json.dumps({**result.to_json(), **({"evaluations": carried.model_dump(mode="json")}
                                                              if carried is not None else {})}))
    else:
        _print_result(result)
        if found is not None and found.units:
            console.print(f"signals: {found.signals} new on {found.units} units scanned, {found.feedback} feedback "
                          f"items, {found.attached} pending feedback attached (list them: assay signals)")
        if carried is not None:
            print_carried(carried)
    why = result.nothing_ingested()
    if why:
        err_console.print(f"[red]error:[/red] nothing ingested: {escape(why)}")
        raise typer.Exit(ExitCode.CHECK_FAILED)


class _StoreOnFirstWrite:
    """The workspace's store, opened (and created) only when there is a unit to write: a missing path or
    a folder with nothing ingestible leaves no empty store behind."""

    def __init__(self, app: AppContext) -> None:
        self.app = app

    def add_units(self, units: list[Unit]) -> IngestCounts:
        return self.app.store.add_units(units)


class _KeepCarried:
    """Writes units through ``inner`` and keeps the evaluation results they carry (imported after the ingest)."""

    def __init__(self, app: AppContext, inner: UnitSink) -> None:
        self.app, self.inner = app, inner
        self.carried: list[tuple[str, CarriedEvaluation]] = []

    def add_units(self, units: list[Unit]) -> WriteCounts:
        counts = self.inner.add_units(units)
        self.carried.extend(carried_in(units))
        return counts


def _import_carried(sink: _KeepCarried, paths: list[str]) -> CarriedImport | None:
    """Import the carried evaluation results for the workspace's external evaluators (None: none carried).
    An invalid evaluator file does not fail the ingest: the results wait for ``assay scores import
    --from-traces``."""
    if not sink.carried:
        return None
    try:
        evaluators = load_evaluators(sink.app.settings.evaluators_path())
    except ConfigError as exc:
        err_console.print("[yellow]warning[/yellow]: evaluation results in the traces not imported: "
                          + escape(str(exc)))
        evaluators = []
    return import_carried(sink.app.store, sink.carried, evaluators, "ingest: " + ", ".join(paths))


def _print_result(result: IngestResult) -> None:
    table = Table("file", "format", "units", "spans", "rejected", title="ingest")
    for f in result.files:
        table.add_row(escape(f.path), f.format, str(f.units), str(f.spans), str(f.rejected))
    console.print(table)
    console.print(f"units: {result.units_new} new, {result.units_updated} updated; "
                  f"spans: {result.spans_new} new, {result.spans_duplicate} already stored; "
                  f"rejected: {len(result.rejected)}")
    for r in result.rejected[:20]:
        console.print(f"  [yellow]rejected[/yellow] {escape(r.path)}: {escape(r.reason)}")
    if result.skipped:
        console.print(f"skipped: {len(result.skipped)} file(s) in no supported format")
    for r in result.skipped[:20]:
        console.print(f"  [dim]skipped[/dim] {escape(r.path)}: {escape(r.reason)}")
