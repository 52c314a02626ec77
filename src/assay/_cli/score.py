"""``assay score``: backfill scores of one evaluator over stored units, locally or on a Ray cluster."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assay._cli._common import AllowJudgeChangeOpt, AppContext, console, err_console, get_ctx, handle_errors
from assay.exceptions import UsageError
from assay.suite import UnitSelection

if TYPE_CHECKING:
    from assay.suite.executor import ScoreSummary

ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="Where the work runs: local (this process, the default) or ray (a Ray cluster; "
    "pip install 'assay\\[ray]'). Default from \\[executor] kind or ASSAY_EXECUTOR.", show_default=False)]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 (default from \\[executor] "
    "ray_address or ASSAY_RAY_ADDRESS; none starts a local Ray).", show_default=False)]


def executor_choice(app: AppContext, executor: str | None, ray_address: str | None) -> tuple[str, str | None]:
    """The executor and Ray address: the options, else the ``[executor]`` settings.

    Raises:
        UsageError: an executor other than local or ray.
    """
    kind = executor or app.settings.executor.kind
    if kind not in ("local", "ray"):
        raise UsageError(f"--executor takes local or ray, got {kind!r}")
    return kind, ray_address or app.settings.executor.ray_address


@contextmanager
def batch_progress(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A Rich bar on stderr showing units done / total and failures; yields ``advance(done, failed)``."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("failures: {task.fields[failures]}"), TimeElapsedColumn(), console=err_console,
                        disable=not (sys.stderr.isatty() or "CI" in __import__("os").environ))
    with progress:
        task = progress.add_task(description, total=total, failures=0)
        failures = 0

        def advance(done: int, failed: int) -> None:
            nonlocal failures
            failures += failed
            progress.update(task, advance=done, failures=failures)

        yield advance


@handle_errors
def score_cmd(
    ctx: typer.Context,
    evaluator: Annotated[str, typer.Option("--evaluator", "-e", help="Evaluator name (a file in evaluators/).")],
    units: Annotated[str, typer.Option("--units", "-u", help=f"Unit selection: {UnitSelection.usage()} "
                                       "(comma = and).")] = "all",
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Write into this run (created when missing); "
                                               "units it already scored are skipped, so a stopped backfill "
                                               "resumes. Default: a new backfill-... run.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Units per batch (one Ray task each).")] = 50,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Ray actors (default: the cluster's "
                                                "CPUs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    allow_judge_change: AllowJudgeChangeOpt = False,
) -> None:
    """Score stored units with one evaluator (a backfill) and write the scores with lineage.

    Every score row records run id, evaluator version, judge model and dataset version, and is
    written once per (run, unit, evaluator version): a retried batch or a re-run with the same
    --run-id adds no second score. Failures (unscored replies, errors) are listed per unit.
    With --executor ray the units are read from the shared store by Ray actors (use PostgreSQL
    when the cluster has more than one machine); the judge's rpm/tpm limits are divided among the actors.
    A calibrated evaluator whose judge is not the certified one is refused (exit 2) unless
    --allow-judge-change (recorded in the run's summary).
    """
    from assay._cli.evaluate import find_evaluator
    from assay._store.scores import finish_run
    from assay.calibration.calibrate import evaluator_record
    from assay.calibration.certified import judge_change_of, refuse_judge_changes
    from assay.suite.executor import score_with_executor

    selection = UnitSelection.parse(units)
    app = get_ctx(ctx)
    kind, address = executor_choice(app, executor, ray_address)
    defn = find_evaluator(app, evaluator)
    unit_ids = app.store.select_unit_ids(selection)
    if not unit_ids:
        raise UsageError(f"no units match selection {units!r}")
    record = evaluator_record(app.store, defn)
    dataset_version = record.dataset_version if record else None
    change = judge_change_of(app.store, defn, None, app.settings.judge)
    refuse_judge_changes({defn.name: change} if change else {}, allow_judge_change)
    try:
        with batch_progress(f"scoring {defn.name} ({kind})", len(unit_ids)) as advance:
            summary = score_with_executor(app.store, defn, unit_ids, app.settings.judge, run_id=run_id,
                                          dataset_version=dataset_version, executor=kind, ray_address=address,
                                          progress=advance, batch_size=batch_size, workers=workers)
        data = summary_data(summary)
        if change:
            data["judge_change"] = change
        finish_run(app.store, summary.run_id, {k: v for k, v in data.items() if k != "failures"})
    finally:
        app.store.close()  # a backfill is the whole command: hand the pooled connections back
    if as_json:
        console.print_json(json.dumps(data))
        return
    print_summary(summary, data)


def summary_data(summary: ScoreSummary) -> dict[str, Any]:
    """``ScoreSummary.as_dict()`` plus ``already_scored`` (units a previous attempt of the run scored),
    with ``units_per_s`` over the units scored now only (None when nothing new was scored)."""
    data = summary.as_dict()
    already = max(summary.n_units - summary.written, 0)
    data["already_scored"] = already
    if already:
        data["units_per_s"] = (round(summary.written / summary.seconds, 2)
                               if summary.written and summary.seconds > 0 else None)
    return data


def print_summary(summary: ScoreSummary, data: dict[str, Any]) -> None:
    """The human summary: run and evaluator on their own lines (never cut at 80 columns), then the counts."""
    console.print(f"run {escape(summary.run_id)}", highlight=False, soft_wrap=True)
    console.print(f"evaluator {escape(summary.evaluator)} @ {summary.evaluator_version}, executor "
                  f"{summary.executor} x{summary.workers}", highlight=False, soft_wrap=True)
    already = data["already_scored"]
    if already:
        console.print(f"{already} already scored in run {escape(summary.run_id)}, {summary.written} new",
                      highlight=False, soft_wrap=True)
    table = Table("units", "new", "scored", "pass", "unscored", "errors", "units/s", title="score")
    table.add_row(str(summary.n_units), str(summary.written), str(summary.n_scored), str(summary.n_pass),
                  str(summary.count("unscored")), str(summary.count("error")),
                  "-" if data["units_per_s"] is None else str(data["units_per_s"]))
    console.print(table)
    for f in summary.failures[:20]:
        console.print(f"  [yellow]{f.status}[/yellow] {escape(f.unit_id)}: {escape(f.error[:200])}")
    if len(summary.failures) > 20:
        console.print(f"  ... and {len(summary.failures) - 20} more (--json lists all)")
