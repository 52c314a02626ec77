"""Fields a file record may carry besides its conversation: the ``outcome`` the source recorded and the
user's ``feedback`` (chat-log JSONL readers use them; :mod:`assay.signals.feedback` reads the feedback).

* ``outcome``: ``"pass"`` / ``"fail"`` (also ``"success"`` / ``"failure"``, ``"unknown"``), a boolean (true:
  pass), or a reward 1 / 0;
* ``feedback``: a thumbs value (``"up"`` / ``"down"``, ``"thumbs_down"``, ``"👎"``, a boolean, -1 / +1), a
  score in [0, 1], or an object ``{"thumbs" | "score": ..., "comment": "..."}``. Kept on the unit as the
  attributes ``user.feedback`` and ``user.feedback.comment``.
"""

from __future__ import annotations

from typing import Any, Literal

from assay.traces.model import Outcome

Thumbs = Literal["up", "down"]
_DOWN = frozenset({"down", "thumbs_down", "thumbsdown", "thumbs-down", "thumbs down", "negative", "bad", "false",
                   "no", "dislike", "👎"})
_UP = frozenset({"up", "thumbs_up", "thumbsup", "thumbs-up", "thumbs up", "positive", "good", "true", "yes", "like",
                 "👍"})
_OUTCOMES: dict[str, Outcome] = {"pass": "pass", "passed": "pass", "success": "pass", "fail": "fail",
                                 "failed": "fail", "failure": "fail", "unknown": "unknown"}


def feedback_value(value: object) -> tuple[Thumbs | None, float | None] | None:
    """A feedback value as ``(thumbs, score)`` (one of them set), or None when it is not one: a boolean
    (true: up), -1 (down), a number in [0, 1] (a score), or thumbs text; a 1-5 rating is not."""
    if isinstance(value, bool):
        return ("up" if value else "down"), None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _DOWN or text in _UP:
            return ("down" if text in _DOWN else "up"), None
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, int | float):
        number = float(value)
        if number == -1.0:
            return "down", None
        return (None, number) if 0.0 <= number <= 1.0 else None
    return None


def record_outcome(value: object) -> tuple[Outcome, float | None]:
    """A record's ``outcome`` field as ``(outcome, reward)``.

    Raises:
        ValueError: not one of the forms in the module docstring.
    """
    if value is None:
        return "unknown", None
    if isinstance(value, bool):
        return ("pass" if value else "fail"), float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return ("pass" if value == 1 else "fail"), float(value)
    if isinstance(value, str) and value.strip().lower() in _OUTCOMES:
        return _OUTCOMES[value.strip().lower()], None
    raise ValueError(f"outcome must be pass, fail, unknown, true/false or 1/0 (got {value!r})")


def record_feedback_attributes(value: object) -> dict[str, Any]:
    """A record's ``feedback`` field as unit attributes (empty for None).

    Raises:
        ValueError: not one of the forms in the module docstring.
    """
    if value is None:
        return {}
    comment = ""
    if isinstance(value, dict):
        comment = str(value.get("comment") or "")
        value = next((value[k] for k in ("thumbs", "score", "value") if value.get(k) is not None), None)
    if feedback_value(value) is None:
        raise ValueError(f"feedback must be up/down, a boolean, -1/+1 or a score in [0, 1], or an object with "
                         f"thumbs or score and an optional comment (got {value!r})")
    return {"user.feedback": value, **({"user.feedback.comment": comment} if comment else {})}
