"""The ``assay`` command line: a thin layer over the public packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assay._cli import ingest as ingest_cmd
from assay._cli._common import AppContext, err_console
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
                                            help="Workspace folder (holds assay.toml, evaluators/, .assay/).")]
    = Path("."),
) -> None:
    """Load settings once for every command."""
    try:
        ctx.obj = AppContext(settings=load_settings(workspace))
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


app.command("ingest")(ingest_cmd.ingest)


def main() -> None:
    """Console-script entry point."""
    app()
