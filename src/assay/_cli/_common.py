"""Shared CLI plumbing: the composition root (settings + store), console, error handling."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assay._store import Store
from assay.exceptions import AssayError, EnvironmentProblem, UsageError
from assay.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


#: Commands that may start a workspace in a folder that does not exist yet (the store's folder is
#: created when it is first opened). Every other command refuses a missing workspace, so a mistyped
#: ``--workspace`` never leaves an empty ``.assay/assay.db`` behind and "no units match".
CREATES_WORKSPACE = frozenset({"ingest", "demo", "serve", "users", "keys"})


@dataclass
class AppContext:
    """What every command gets: settings loaded once, and the store opened lazily.

    ``may_create_workspace`` is False for commands that only read a workspace: opening the store
    then raises UsageError when the workspace folder is missing (see ``CREATES_WORKSPACE``).
    """

    settings: Settings
    _store: Store | None = None
    may_create_workspace: bool = True

    @property
    def store(self) -> Store:
        """The workspace's store, opened on first use.

        Raises:
            UsageError: the workspace is a file, or is missing and this command does not create one.
        """
        if self._store is None:
            check_workspace(self.settings.workspace, self.may_create_workspace)
            self._store = Store(self.settings.resolved_store_url())
        return self._store

    def close(self) -> None:
        """Dispose of the store's connections (called when the command ends)."""
        if self._store is not None:
            self._store.close()
            self._store = None


def check_workspace(workspace: Path, may_create: bool) -> None:
    """Refuse a workspace that is a file, or that is missing when the command may not create it.

    Raises:
        UsageError: with what to do instead.
    """
    if workspace.exists() and not workspace.is_dir():
        raise UsageError(f"workspace {workspace} is a file, not a folder (--workspace / ASSAY_WORKSPACE)")
    if not workspace.exists() and not may_create:
        raise UsageError(f"workspace {workspace} does not exist (create it, or run `assay ingest FILE` there to "
                         "start one; only " + ", ".join(sorted(CREATES_WORKSPACE)) + " create a workspace)")


def get_ctx(ctx: typer.Context) -> AppContext:
    """The AppContext built by the root callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext(settings=load_settings(Path(".")))
        ctx.find_root().obj = obj
    return obj


def handle_errors(fn: F) -> F:
    """Turn assay errors into a clean message and an exit code (2 usage, 1 otherwise).

    As a safety net an ``OSError`` (a path that is missing, a folder where a file was expected, a
    busy port) is also shown as ``error: <message>`` with exit 2. With ``ASSAY_DEBUG=1`` those
    OS errors are re-raised with their traceback, so a real bug stays visible.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            _print_error(exc)
            raise typer.Exit(2) from None
        except EnvironmentProblem as exc:
            _print_error(exc)
            raise typer.Exit(2) from None
        except AssayError as exc:
            _print_error(exc)
            raise typer.Exit(1) from None
        except OSError as exc:
            if os.environ.get("ASSAY_DEBUG", "") not in ("", "0"):
                raise
            _print_error(exc)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _print_error(exc: BaseException) -> None:
    """``error: <message>`` on stderr, the message taken literally (no Rich markup)."""
    err_console.print(f"[red]error:[/red] {escape(str(exc))}")


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A Rich progress bar; yields ``advance(n=1, total=None)`` (``total`` sets the total once it is
    known). Quiet when stderr is not a terminal and not CI."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, transient=False,
                        disable=not (sys.stderr.isatty() or "CI" in os.environ))
    with progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1, total: int | None = None) -> None:
            progress.update(task, advance=n, total=total)

        yield advance
