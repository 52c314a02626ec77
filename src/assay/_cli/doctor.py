"""``assay doctor``: check the machine and the workspace, each check with its fix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors
from assay.doctor import exit_code, run_checks

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


@handle_errors
def doctor_cmd(
    ctx: typer.Context,
    dev: Annotated[bool, typer.Option("--dev", envvar="ASSAY_DOCTOR_DEV",
                                      help="Also check what the test suite needs (Debian's Chromium).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check that this machine and workspace can run assay, in a few seconds per check: the store
    (reachable, migrations at head, WAL on SQLite), the embedding model (loads offline, embeds a
    text), the local judge (answers a 600-token prompt in its own process; tokens/s), a configured API
    judge (one minimal call; skipped without a key), and with --dev Chromium. Prints status, what was
    measured and the fix. Exit 0 when every check that applies passes, 1 otherwise. Never creates a
    workspace or a store."""
    checks = run_checks(get_ctx(ctx).settings, dev=dev)
    code = exit_code(checks)
    if as_json:
        console.print_json(json.dumps({"ok": code == 0, "checks": [c.model_dump() for c in checks]}))
    else:
        table = Table("check", "status", "measured", "fix", "s", title="assay doctor")
        for c in checks:
            style = _STYLE[c.status]
            table.add_row(c.name, f"[{style}]{c.status}[/{style}]", escape(c.measured), escape(c.fix),
                          f"{c.seconds:.1f}")
        console.print(table)
        console.print("[green]ready[/green]" if code == 0 else
                      "[red]not ready[/red]: fix the failed checks above, then run `assay doctor` again")
    raise typer.Exit(code)
