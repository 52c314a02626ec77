"""Run ``code`` evaluators: a Python check imported from ``"package.module:function"``."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from assay.exceptions import ConfigError
from assay.traces.model import Step, Unit

CodeCheck = Callable[[list[Step], Unit], Any]
"""A check: ``(steps, unit) -> score in [0, 1]`` or ``(score, reason)``."""


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
        ValueError: any other shape, NaN, or a score outside [0, 1].
    """
    reason = ""
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
