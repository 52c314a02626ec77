"""Code checks: a Python function imported from ``"package.module:function"``, and what it may return.

A check takes ``(steps, unit, **args)`` and returns its decision:

* a score in [0, 1] (a bool counts as 1.0 / 0.0) or ``(score, reason)``: the unit is scored;
* :class:`NotApplicable` ``(reason)``: the criterion does not apply; not scored, counted beside;
* ``None`` or :class:`Defer` ``(reason)``, in a ``hybrid`` evaluator only: the judge decides.

On a criterion with a non-binary scale the check returns a value on it instead of a score: a level,
a class name, or ``"first"``/``"second"``/``"tie"`` (or ``(value, reason)``); see :func:`check_value`.
A check of a pairwise criterion is called with both units: ``(steps, unit, second_steps, second, **args)``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assay.annotations.scale import Scale, ScaleValue
from assay.exceptions import ConfigError
from assay.traces.model import Step, Unit

CodeCheck = Callable[..., Any]
"""A check: ``(steps, unit, **args) -> decision``; on a pairwise criterion ``(steps, unit, second_steps, second,
**args)`` (see the module docstring)."""


@dataclass(frozen=True)
class NotApplicable:
    """A check's decision that the criterion does not apply to the unit (e.g. no refund was made)."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """A hybrid evaluator's code part hands the unit to the judge (returning ``None`` does the same)."""

    reason: str = ""


Decision = tuple[float, str] | NotApplicable | Defer
"""A check's return value, read: ``(score, reason)``, :class:`NotApplicable` or :class:`Defer`."""


def resolve_callable(path: str) -> CodeCheck:
    """Import ``"package.module:function"`` (the function may be a dotted attribute path).

    Raises:
        ConfigError: the module or attribute does not exist or is not callable.
    """
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {path!r}: {exc}", "code.callable") from exc
    if not callable(target):
        raise ConfigError(f"{path!r} is not callable", "code.callable")
    check: CodeCheck = target
    return check


def check_output(value: object) -> tuple[float, str]:
    """Validate a check's return value into ``(score in [0, 1], reason)``.

    Accepts a number (bools count as 1.0 / 0.0) or a ``(number, reason)`` pair.

    Raises:
        ValueError: any other shape (:class:`Defer` too), NaN, or a score outside [0, 1].
    """
    reason = ""
    if isinstance(value, Defer):
        raise ValueError("the check deferred: only a hybrid evaluator hands units to a judge")
    if isinstance(value, tuple):
        pair: tuple[object, ...] = value
        if len(pair) != 2:
            raise ValueError(f"a check returns a score or (score, reason), got a {len(pair)}-tuple")
        value, reason = pair[0], str(pair[1])
    if not isinstance(value, int | float):
        raise ValueError(f"a check returns a number in [0, 1], got {type(value).__name__}")
    score = float(value)
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"check score {value!r} is outside [0, 1]")
    return score, reason


def check_value(value: object, scale: Scale) -> tuple[ScaleValue, str]:
    """Validate a check's return value on a non-binary scale into ``(value, reason)``.

    Accepts a value of ``scale`` (a level, a class name, first/second/tie) or a ``(value, reason)`` pair.

    Raises:
        ValueError: any other shape, or a value that is not on the scale (the message names the allowed ones).
    """
    reason = ""
    if isinstance(value, Defer):
        raise ValueError("the check deferred: only a hybrid evaluator hands units to a judge")
    if isinstance(value, tuple):
        pair: tuple[object, ...] = value
        if len(pair) != 2:
            raise ValueError(f"a check returns a value or (value, reason), got a {len(pair)}-tuple")
        value, reason = pair[0], str(pair[1])
    return scale.parse(value), reason


def check_decision(value: object) -> Decision:
    """Read a check's return value: ``None`` / :class:`Defer` / :class:`NotApplicable` as they are, else
    :func:`check_output`'s ``(score, reason)``.

    Raises:
        ValueError: as :func:`check_output`.
    """
    if value is None:
        return Defer()
    if isinstance(value, Defer | NotApplicable):
        return value
    return check_output(value)


def run_check(check: CodeCheck, steps: list[Step], unit: Unit, args: dict[str, Any]) -> Decision:
    """Call ``check(steps, unit, **args)`` and read its decision.

    Raises:
        whatever the check raises; ValueError for a return value of the wrong shape.
    """
    return check_decision(check(steps, unit, **args))
