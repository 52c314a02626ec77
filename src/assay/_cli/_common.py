"""Shared CLI plumbing: the composition root (settings + store), console, error handling."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assay._cli.exit_codes import ExitCode, exit_code_for
from assay._store import Store
from assay.exceptions import AssayError, UsageError
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
            self._store = Store(self.settings.resolved_store_url(), self.settings.signals, self.settings.environments)
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


AllowJudgeChangeOpt = Annotated[bool, typer.Option(
    "--allow-judge-change", help="Score even when an evaluator's judge (provider, model, base URL, sampling "
    "parameters) is not the one its calibration certified; without it such a run refuses (exit 2) and names both "
    "judges. The change is recorded with the scores.", envvar="ASSAY_ALLOW_JUDGE_CHANGE")]
RefreshOpt = Annotated[bool, typer.Option(
    "--refresh", help="Ask the judge again instead of reading its cached replies, and replace them (a judge fixed "
    "behind the same model name and endpoint cannot be told apart by the cache).", envvar="ASSAY_REFRESH")]


def get_ctx(ctx: typer.Context) -> AppContext:
    """The AppContext built by the root callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext(settings=load_settings(Path(".")))
        ctx.find_root().obj = obj
    return obj


def handle_errors(fn: F) -> F:
    """Turn every exception of a command into a clean message and the exit code of
    :func:`~assay._cli.exit_codes.exit_code_for` (2 usage/config/environment, 3 runtime failure).

    Assay's own errors and ``OSError`` (a path that is missing, a folder where a file was expected, a
    busy port) print ``error: <message>`` without a traceback. Any other exception is a bug: its
    traceback is printed, then the error line, and the exit code is 3, so a crash is never read as a
    check's "no" (exit 1). With ``ASSAY_DEBUG=1`` OS errors and bugs are re-raised as they are.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):  # the CLI framework's own exits
            raise
        except AssayError as exc:
            _print_error(exc)
            raise typer.Exit(exit_code_for(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:  # the reader stopped early (`| head`): not an error of the command
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise typer.Exit(ExitCode.OK) from None
        except Exception as exc:
            if os.environ.get("ASSAY_DEBUG", "") not in ("", "0"):
                raise
            if not isinstance(exc, OSError):
                err_console.print(escape(traceback.format_exc().rstrip()), highlight=False)
                _print_error(RuntimeError(f"unexpected {type(exc).__name__} (a bug in assay): {exc}"))
            else:
                _print_error(exc)
            raise typer.Exit(exit_code_for(exc)) from None

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
