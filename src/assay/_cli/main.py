"""The ``assay`` command line: a thin layer over the public packages."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from assay._cli import agreement as agreement_cmd
from assay._cli import dataset as dataset_cmd
from assay._cli import demo as demo_cmd
from assay._cli import doctor as doctor_cmd
from assay._cli import drift as drift_cmd
from assay._cli import evaluate, labels
from assay._cli import ingest as ingest_cmd
from assay._cli import online as online_cmd
from assay._cli import score as score_cmd
from assay._cli import serve as serve_cmd
from assay._cli import signals as signals_cmd
from assay._cli import signatures as signatures_cmd
from assay._cli import users as users_cmd
from assay._cli._common import CREATES_WORKSPACE, AppContext, console, err_console, get_ctx, handle_errors
from assay._cli.exit_codes import ExitCode
from assay.exceptions import ConfigError
from assay.settings import load_settings

app = typer.Typer(
    name="assay",
    help="Human-aligned LLM evaluation: capture traces, cluster failure signatures, collect expert "
    "labels, calibrate evaluators against them, and gate changes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="ASSAY_WORKSPACE",
                                            help="Workspace folder (holds assay.toml, evaluators/, .assay/). "
                                            "Only ingest, serve, demo, users and keys create it when missing; "
                                            "other commands refuse a missing workspace (exit 2).")]
    = Path("."),
) -> None:
    """Load settings once for every command."""
    try:
        ctx.obj = AppContext(settings=load_settings(workspace),
                             may_create_workspace=ctx.invoked_subcommand in CREATES_WORKSPACE)
        ctx.call_on_close(ctx.obj.close)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(ExitCode.USAGE) from None


app.command("ingest")(ingest_cmd.ingest)
app.command("serve")(serve_cmd.serve)
app.command("worker")(online_cmd.worker)
app.add_typer(online_cmd.scores_app, name="scores")
app.add_typer(signals_cmd.signals_app, name="signals")
app.add_typer(signatures_cmd.signatures_app, name="signatures")
app.command("queue")(signatures_cmd.queue_cmd)
app.add_typer(labels.labels_app, name="labels")
app.add_typer(labels.criteria_app, name="criteria")
app.command("agreement")(agreement_cmd.agreement_cmd)
app.add_typer(dataset_cmd.dataset_app, name="dataset")
app.add_typer(evaluate.evaluators_app, name="evaluators")
app.command("calibrate")(evaluate.calibrate_cmd)
app.command("gate")(evaluate.gate_cmd)
app.command("drift")(drift_cmd.drift_cmd)
app.command("score")(score_cmd.score_cmd)
app.command("demo")(demo_cmd.demo)
app.command("doctor")(doctor_cmd.doctor_cmd)
app.add_typer(users_cmd.users_app, name="users")
app.add_typer(users_cmd.keys_app, name="keys")


@app.command("report")
@handle_errors
def report(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    env: Annotated[str | None, typer.Option("--env", envvar="ASSAY_REPORT_ENV", show_default=False, help=(
        "The environment of the production sections (default: \\[environments] production; 'all': every "
        "unit)."))] = None,
) -> None:
    """Write a self-contained HTML report (opens without a network): drift alerts, scores over
    time per evaluator, pass rates corrected for judge error, judge-human agreement over time,
    signature volumes and map, calibration confusion matrices, the latest gate, evaluator redundancy."""
    from assay.reports import write_report

    app_ctx = get_ctx(ctx)
    console.print(f"wrote {write_report(app_ctx.store, output, drift=app_ctx.settings.drift, env=env)}")


def main() -> None:
    """Console-script entry point. An exception that escapes every command's handler (a bug outside a
    command) exits 3 with its traceback, never Python's default 1, which means "the check said no"."""
    try:
        app()
    except Exception:
        traceback.print_exc()
        sys.exit(ExitCode.FAILURE)
