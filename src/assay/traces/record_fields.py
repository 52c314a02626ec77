"""Fields a file record may carry besides its conversation: the ``outcome`` the source recorded and the
user's ``feedback`` (chat-log JSONL readers use them; :mod:`assay.signals.feedback` reads the feedback).

* ``outcome``: ``"pass"`` / ``"fail"`` (also ``"success"`` / ``"failure"``, ``"unknown"``), a boolean (true:
  pass), or a reward 1 / 0;
* ``feedback``: a thumbs value (``"up"`` / ``"down"``, ``"thumbs_down"``, ``"👎"``, a boolean, -1 / +1), a
  score in [0, 1], or an object ``{"thumbs" | "score": ..., "comment": "..."}`` (:func:`parse_feedback`).
  Kept on the unit as the attributes ``user.feedback`` (``up`` / ``down`` or the score) and
  ``user.feedback.comment``.
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


FeedbackField = Literal["thumbs", "score", "feedback"]
"""What a feedback value is given as: ``thumbs``, ``score`` or either (``feedback``)."""
_MUST = {
    "thumbs": "thumbs must be 'up' or 'down' (or true / false, -1 / +1)",
    "score": "score must be a number in [0, 1]",
    "feedback": "feedback must be a score in [0, 1] or thumbs ('up' / 'down', true / false, -1 / +1)",
}


def parse_feedback(value: object, field: FeedbackField = "feedback") -> tuple[Thumbs | None, float | None]:
    """A feedback value as ``(thumbs, score)``, one of them set: the one parser of every channel (the REST
    API's ``thumbs`` / ``score``, OTel span, event and log-record attributes, a chat-log record's ``feedback``).

    * thumbs: ``up`` / ``down`` (also ``thumbs_down``, ``👎``, ``negative`` ...), a boolean (true: up), -1 / +1;
    * score: a number (not text, not a boolean) in [0, 1];
    * ``feedback`` (either): a thumbs value, or a number in [0, 1] as a score (-1: thumbs down).

    Raises:
        ValueError: anything else (a 1-5 rating, ``"high"``, ``"0.2"`` as text), with the reason:
            ``score must be a number in [0, 1], got 7``.
    """
    if field != "score":
        if isinstance(value, bool):
            return ("up" if value else "down"), None
        text = value.strip().lower() if isinstance(value, str) else None
        if text is not None and (text in _DOWN or text in _UP):
            return ("down" if text in _DOWN else "up"), None
        if _number(value) and value in ((-1, 1) if field == "thumbs" else (-1,)):
            return ("up" if value == 1 else "down"), None
    if field != "thumbs" and _number(value) and 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        return None, float(value)  # type: ignore[arg-type]
    raise ValueError(f"{_MUST[field]}, got {value!r}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def feedback_value(value: object) -> tuple[Thumbs | None, float | None] | None:
    """:func:`parse_feedback` of either kind, or None when the value is no feedback value."""
    try:
        return parse_feedback(value)
    except ValueError:
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
    comment, field = "", "feedback"
    if isinstance(value, dict):
        comment = str(value.get("comment") or "")
        field = next((k for k in ("thumbs", "score", "value") if value.get(k) is not None), "")
        if not field:
            raise ValueError(f"feedback must be an object with thumbs or score (and an optional comment), "
                             f"got {value!r}")
        value = value[field]
    try:
        thumbs, score = parse_feedback(value, "feedback" if field == "value" else field)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"feedback.{field}: {exc}" if field != "feedback" else str(exc)) from None
    return {"user.feedback": thumbs or score, **({"user.feedback.comment": comment} if comment else {})}
