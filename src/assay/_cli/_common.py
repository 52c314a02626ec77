"""Shared CLI plumbing: the composition root (settings + store), console, error handling."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assay._store import Store
from assay.exceptions import AssayError, EnvironmentProblem, UsageError
from assay.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What every command gets: settings loaded once, and the store opened lazily."""

    settings: Settings
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.resolved_store_url())
        return self._store

    def close(self) -> None:
        """Dispose of the store's connections (called when the command ends)."""
        if self._store is not None:
            self._store.close()
            self._store = None


def get_ctx(ctx: typer.Context) -> AppContext:
    """The AppContext built by the root callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext(settings=load_settings(Path(".")))
        ctx.find_root().obj = obj
    return obj


def handle_errors(fn: F) -> F:
    """Turn assay errors into a clean message and an exit code (2 usage, 1 otherwise)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except EnvironmentProblem as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except AssayError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar; yields ``advance(n)``. Quiet when stderr is not a terminal and not CI."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, transient=False,
                        disable=not (sys.stderr.isatty() or "CI" in __import__("os").environ))
    with progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance
