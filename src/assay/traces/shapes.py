"""Shape checks and readable rejection reasons for the trace readers.

Readers parse JSON from files and HTTP bodies that may hold any shape. They check each level with
:func:`expect_object` / :func:`expect_list` (a wrong type becomes a :class:`~assay.exceptions.ShapeError` naming the
JSON path, e.g. ``resourceSpans[0].scopeSpans[0].spans[0]: expected an object, got string``) and
turn any exception of a record into a one-line reason with :func:`describe_error`, so that no
``TypeError``/``AttributeError`` escapes a reader and no Python internals reach the user.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from assay.exceptions import ShapeError

__all__ = ["MAX_DEPTH", "ShapeError", "describe_error", "expect_list", "expect_object", "json_type"]

MAX_DEPTH = 64
"""Deepest nesting of an attribute value (OTLP ``AnyValue`` arrays / kvlists) a reader accepts."""


def json_type(value: object) -> str:
    """The JSON name of a Python value's type: ``object``, ``array``, ``string``, ``number``,
    ``boolean`` or ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def expect_object(value: object, path: str) -> dict[str, Any]:
    """``value`` when it is a JSON object.

    Raises:
        ShapeError: ``"<path>: expected an object, got <type>"``.
    """
    if not isinstance(value, dict):
        raise ShapeError(f"{path}: expected an object, got {json_type(value)}")
    return value


def expect_list(value: object, path: str, *, optional: bool = True) -> list[Any]:
    """``value`` when it is a JSON array; ``[]`` for a missing/null value when ``optional``.

    Raises:
        ShapeError: ``"<path>: expected a list, got <type>"``.
    """
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise ShapeError(f"{path}: expected a list, got {json_type(value)}")
    return value


def describe_error(exc: BaseException) -> str:
    """One line saying what was wrong, without Python internals.

    pydantic errors become ``field: message`` (all errors, ``; ``-joined); a missing key becomes
    ``missing field 'x'``; too-deep nesting ``nested too deeply``; a TypeError/AttributeError (a
    shape no check caught) ``unexpected value type``; others their first message line.
    """
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
        return "; ".join(parts)
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    if isinstance(exc, RecursionError):
        return f"nested too deeply (more than {MAX_DEPTH} levels)"
    if isinstance(exc, ShapeError):
        return str(exc)
    if isinstance(exc, TypeError | AttributeError | IndexError):
        return "unexpected value type or shape"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
