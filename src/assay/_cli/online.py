"""``assay worker`` (online scoring of production) and ``assay scores export``."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from assay._cli._common import AllowJudgeChangeOpt, console, err_console, get_ctx, handle_errors
from assay._cli.exit_codes import ExitCode
from assay.exceptions import UsageError

if TYPE_CHECKING:
    from assay._store.store import Store
    from assay.evaluators import EvaluatorDef
    from assay.evaluators.carried import CarriedImport
    from assay.evaluators.imports import ImportResult
    from assay.suite.online import PassReport

scores_app = typer.Typer(help="Scores with their lineage: export them, import a judge's verdicts.",
                         no_args_is_help=True)


def log_line(text: str) -> None:
    """A timestamped progress line on stderr (markup in ``text`` is escaped)."""
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(text)}", highlight=False)


class _GracefulStop:
    """SIGINT / SIGTERM set the stop flag once (work in hand finishes); a second Ctrl-C aborts. ``interrupted``
    says whether a SIGINT (Ctrl-C) asked for the stop: the command then exits 130, as every interrupted
    command does."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict[int, Any] = {}
        self.interrupted = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.interrupted = signum == signal.SIGINT
        self.stop.set()
        log_line("stopping after the units in hand (Ctrl-C again to abort)")

    def __enter__(self) -> _GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _watch_parent(pid: int, stop: threading.Event, interval_s: float = 1.0) -> None:
    """Set ``stop`` once this process's parent is no longer ``pid`` (it exited or was killed)."""
    while not stop.wait(interval_s):
        if os.getppid() != pid:
            log_line(f"server process {pid} is gone: stopping")
            stop.set()


@handle_errors
def worker(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Score everything complete now, then exit (a cron job, CI).",
                                       envvar="ASSAY_WORKER_ONCE")] = False,
    poll_interval: Annotated[float | None, typer.Option(
        "--poll-interval", min=0.1, envvar="ASSAY_ONLINE__POLL_INTERVAL_S",
        help="Seconds between passes when there is nothing to score (default 5, \\[online] poll_interval_s).")]
    = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, envvar="ASSAY_ONLINE__BATCH_SIZE",
        help="Units per evaluator per pass (default 32, \\[online] batch_size).")] = None,
    niceness: Annotated[int, typer.Option(
        "--niceness", min=0, max=19, envvar="ASSAY_WORKER_NICENESS",
        help="Lower this process's CPU priority by N (POSIX nice), so ingestion on the same machine wins "
             "the cores; `assay serve --worker` uses \\[online] niceness (default 19).")] = 0,
    env: Annotated[str | None, typer.Option("--env", envvar="ASSAY_WORKER_ENV", show_default=False, help=(
        "The environment whose units are sampled (default: \\[environments] production; 'all': every unit). "
        "Evaluation and simulation units stay out of the production sample unless asked for."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
    allow_judge_change: AllowJudgeChangeOpt = False,
) -> None:
    """Score production online: each active evaluator scores its sample (sample_rate in its YAML,
    default 10%, deterministic by unit id) of completed units, once per evaluator version.

    A trace is complete when its root span has ended (\\[online] settle_s after), a session after
    \\[online] idle_timeout_s (default 300 s) without new spans. Scores go to one run of kind
    'online' with their lineage; \\[online] audit_share (default 2%) of them go to the judge-audit
    queue (/audit in the app). Runs until Ctrl-C (finishes the units in hand; twice aborts), or
    with --once until nothing complete is left. `assay serve --worker` runs the same loop beside
    the receiver.

    Each pass also detects the failure signals of complete units not scanned yet (see `assay signals`);
    every failed score is a failure signal.
    """
    from assay.suite.online import OnlineWorker

    app = get_ctx(ctx)
    online = app.settings.online.model_copy(update={k: v for k, v in {
        "poll_interval_s": poll_interval, "batch_size": batch_size}.items() if v is not None})
    settings = app.settings.model_copy(update={"online": online})
    scope = app.store.env_scope(env)
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    stop = threading.Event()
    parent = os.environ.get("ASSAY_WORKER_PARENT_PID", "")
    if parent.isdigit():  # started by `assay serve --worker`: stop when that server is gone
        threading.Thread(target=_watch_parent, args=(int(parent), stop), daemon=True, name="assay-parent").start()
    worker_ = OnlineWorker(app.store, settings, log=log_line, env=env, allow_judge_change=allow_judge_change)
    with _GracefulStop(stop) as graceful:  # before the first line: once it shows, Ctrl-C stops gracefully
        log_line(f"worker: store {settings.resolved_store_url()}, evaluators in {settings.evaluators_path()}, "
                 f"environment {scope.name if scope else 'all'}"
                 + (" (drain once)" if once else f", polling every {online.poll_interval_s:g} s"))
        totals = worker_.run(stop, once=once)
    _report(totals, as_json)
    if graceful.interrupted:  # stopped gracefully, but on Ctrl-C: exit 130 (README's exit codes)
        raise typer.Exit(ExitCode.INTERRUPTED)


def _report(totals: PassReport, as_json: bool) -> None:
    """The worker's summary: JSON, or a line per what it did."""
    summary = {"run_id": totals.run_id, "passes": totals.passes, "scored": totals.scored, "failed": totals.failed,
               "audited": totals.audited, "signals_scanned": totals.signals_scanned,
               "evaluators": [e.model_dump() for e in totals.evaluators]}
    if as_json:
        console.print_json(json.dumps(summary))
        return
    if totals.signals_scanned:
        console.print(f"failure signals detected on {totals.signals_scanned} complete units", highlight=False)
    if totals.run_id is None:
        console.print("nothing to score (no complete, sampled unit waiting for an active evaluator)", highlight=False)
        return
    console.print(f"online run {escape(str(totals.run_id))}: {totals.scored} scored, {totals.failed} not scored, "
                  f"{totals.audited} sent to audit in {totals.passes} pass(es)", highlight=False)


@scores_app.command("export")
@handle_errors
def export(
    ctx: typer.Context,
    otel: Annotated[bool, typer.Option("--otel", help="OTel gen_ai.evaluation.result events: OTLP JSON Lines, "
                                       "one ExportLogsServiceRequest per line (POST a line to /v1/logs).")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Plain JSON Lines: one score per line with its lineage.")]
    = False,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's scores (default: every run).",
                                            envvar="ASSAY_SCORES_RUN")] = None,
    evaluator: Annotated[str | None, typer.Option("--evaluator", help="Only this evaluator's scores.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Export scores with lineage (evaluator name and version, judge model and parameters, ground-truth
    dataset version, run id) as OTel GenAI evaluation events (--otel) or plain JSON Lines (--jsonl).

    Events are parented to the unit's root span (trace and span id) where the unit has one.
    """
    from assay.suite.score_export import score_records, write_jsonl, write_otel

    if otel == jsonl:
        raise UsageError("choose one format: --otel or --jsonl")
    records = score_records(get_ctx(ctx).store, run, evaluator)
    write = write_otel if otel else write_jsonl
    if output is None:
        write(records, sys.stdout)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as fh:
            write(records, fh)
        err_console.print(f"wrote {len(records)} score(s) to {escape(str(output))}", highlight=False)



@scores_app.command("import")
@handle_errors
def import_cmd(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="JSON Lines or CSV: unit (or trace), evaluator, value, label, "
                                                     "reason, model, version, time; or OTLP JSON Lines of "
                                                     "gen_ai.evaluation.result events.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto (.csv is CSV; resourceLogs lines are OTel events; else "
                                     "JSON Lines), jsonl, csv or otel.", envvar="ASSAY_SCORES_IMPORT_FORMAT")] = "auto",
    from_traces: Annotated[bool, typer.Option(
        "--from-traces", help="Instead of a file: the evaluation results carried in stored traces (OTel "
        "gen_ai.evaluation.result events, OpenInference annotations, Langfuse scores).",
        envvar="ASSAY_SCORES_IMPORT_FROM_TRACES")] = False,
    units: Annotated[str, typer.Option("--units", help="With --from-traces: the units to read (a selection).",
                                       envvar="ASSAY_SCORES_IMPORT_UNITS")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import the verdicts of a judge the team runs elsewhere as scores of `external` evaluators.

    Each row names the evaluator as the source calls it; an evaluator file with `kind: external` (its
    `external.name`, else its own name) says how to read the values. A value that does not fit (a label it
    does not know, a number outside its scale, text) is stored unscored with the reason and the raw value,
    never as pass or fail. Rows naming no or an unknown unit or trace, or no external evaluator, are
    rejected with the reason. Then `assay calibrate NAME` measures the external judge like any other.
    `assay ingest` imports the results carried in the traces it reads; --from-traces reads stored ones
    (for an evaluator defined after its traces came in). Exit 0 when something was imported, 1 when
    nothing was (the first reasons are printed), 2 on a usage error.
    """
    from assay.evaluators import load_evaluators
    from assay.evaluators.imports import import_file

    if (path is None) == (not from_traces):
        raise UsageError("give a FILE or --from-traces (one of them)")
    app = get_ctx(ctx)
    evaluators = load_evaluators(app.settings.evaluators_path())
    if path is None:
        _import_from_traces(app.store, evaluators, units, as_json)
        return
    result = import_file(app.store, path, evaluators, fmt)
    if as_json:
        typer.echo(json.dumps({**result.model_dump(mode="json"), "imported": result.imported}, indent=2))
    else:
        _print_import(result)
    if not result.imported:
        raise typer.Exit(1)


def _import_from_traces(store: Store, evaluators: list[EvaluatorDef], units: str, as_json: bool) -> None:
    from assay.evaluators.carried import carried_in, import_carried

    found = carried_in(store.units(store.select_unit_ids(units)))
    carried = import_carried(store, found, evaluators, f"traces ({units})")
    if as_json:
        typer.echo(json.dumps(carried.model_dump(mode="json"), indent=2))
    else:
        print_carried(carried)
    if carried.result is None or not carried.result.imported:
        raise typer.Exit(1)


def print_carried(carried: CarriedImport) -> None:
    """What the evaluation results carried in traces came to (``assay ingest``, ``scores import --from-traces``)."""
    console.print(f"evaluation results in the traces: {carried.found} found, {carried.human} people's annotations "
                  f"left out (labels, not verdicts), {carried.unchanged} already imported", highlight=False)
    if carried.unmatched:
        names = ", ".join(f"{escape(n)} x{k}" for n, k in sorted(carried.unmatched.items()))
        console.print(f"  no external evaluator takes {names}: add evaluators/NAME.yaml with kind: external (and "
                      "external: {name: ...}), then assay scores import --from-traces", highlight=False)
    if carried.result is not None:
        _print_import(carried.result)


def _print_import(result: ImportResult) -> None:
    if result.imported:
        per = ", ".join(f"{n}: {result.scored.get(n, 0)} scored, {result.unscored.get(n, 0)} unscored"
                        for n in sorted({*result.scored, *result.unscored}))
        console.print(f"imported {result.imported} verdicts into run {escape(str(result.run_id))} ({escape(per)}); "
                      f"rejected {len(result.rejected)}", highlight=False)
    else:
        err_console.print(f"[red]nothing imported[/red] from {escape(result.source)}: "
                          f"{len(result.rejected)} row(s) rejected", highlight=False)
    for reason in result.unscored_reasons[:5]:
        console.print(f"  [yellow]unscored[/yellow] {escape(reason)}", highlight=False)
    for where, why in result.rejected[:5]:
        (console if result.imported else err_console).print(f"  rejected {escape(where)}: {escape(why)}",
                                                            highlight=False)
    if len(result.rejected) > 5:
        console.print(f"  ... and {len(result.rejected) - 5} more rejected (--json lists all)")
