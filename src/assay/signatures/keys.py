"""Structural keys and key texts of failed units.

A unit's *structural key* says where it failed in words a machine can group on: the
tool whose call failed (a tool result with error status or an error-looking text), else
the last tool called before the end, plus the error type (the error message normalized:
ids, dates and numbers masked, first clause only). Example::

    tool=book_reservation | error=payment amount does not add up
    tool=transfer_to_human_agents | error=none

The unit's *key text* is what gets embedded and what c-TF-IDF labels are computed from:
the key in words, the failing step, the final assistant answer and the steps around the
failing step, bounded in length, system prompt excluded.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict

from assay.traces.model import Step, Unit
from assay.traces.timeline import render_timeline, step_timeline

KEY_TEXT_CHARS = 1500
"""Default bound of a key text, in characters (all-MiniLM-L6-v2 reads 256 word pieces)."""

_STEP_CHARS = 300
_CONTEXT_CHARS = 200
_ERROR_CHARS = 80

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?z?\b"), "<DATE>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<TIME>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<EMAIL>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<ID>"),
    (re.compile(r"#?\b(?=\w*\d)(?=\w*[a-z_])\w{3,}\b"), "<ID>"),
    (re.compile(r"#\d+\b"), "<ID>"),
    (re.compile(r"\b\d{6,}\b"), "<ID>"),
    (re.compile(r"[-+]?\b\d+(?:[.,]\d+)*\b"), "<NUM>"),
)
_PREFIX = re.compile(r"^\s*(?:error|exception|failed)\s*[:\-]\s*", re.IGNORECASE)
_CLAUSE = re.compile(r"[,;]\s|\.\s|\.$|\n")


class StructuralKey(BaseModel):
    """Where a unit failed: the tool (None when no tool was called) and the error type.

    ``error`` is None when the unit ended without any error step.
    """

    model_config = ConfigDict(frozen=True)

    tool: str | None
    error: str | None

    @property
    def text(self) -> str:
        """The key string stored and grouped on, e.g. ``tool=book_reservation | error=none``."""
        return f"tool={self.tool or 'none'} | error={self.error or 'none'}"

    @property
    def words(self) -> str:
        """The key as a phrase, e.g. ``book_reservation failed: payment amount does not add up``."""
        if self.error and self.tool:
            return f"{self.tool} failed: {self.error}"
        if self.error:
            return f"failed: {self.error}"
        if self.tool:
            return f"ended after {self.tool} without a tool error"
        return "ended without calling a tool"


def _error_message(text: str) -> str:
    """The message inside a JSON ``{"error": ...}`` or the last line of a traceback."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("error"):
            return str(obj["error"])
    if stripped.lower().startswith("traceback"):
        lines = [line for line in stripped.splitlines() if line.strip()]
        return lines[-1] if lines else stripped
    return stripped


def normalize_error(text: str) -> str:
    """Normalize an error message so that runs failing the same way compare equal.

    Lower-cases, drops an ``Error:`` prefix, unwraps ``{"error": ...}`` and tracebacks (last
    line), and masks variable parts: dates ``<DATE>``, times ``<TIME>``, e-mails ``<EMAIL>``,
    identifiers with digits (``HAT030``, ``gift_card_8190333``, ``#W2378156``) and long
    digit runs ``<ID>``, other numbers ``<NUM>``.

    Example: ``"Error: flight HAT030 not available on date 2024-05-20"`` ->
    ``"flight <ID> not available on date <DATE>"``.
    """
    message = _PREFIX.sub("", _error_message(text)).lower()
    for pattern, mask in _MASKS:
        message = pattern.sub(mask, message)
    return " ".join(message.split())


def error_type(text: str) -> str:
    """The first clause of the normalized message (at most 80 chars): the error's type.

    Example: ``"Error: payment amount does not add up, total price is 375, but paid 299"``
    -> ``"payment amount does not add up"``.
    """
    message = normalize_error(text)
    first = _CLAUSE.split(message, maxsplit=1)[0].strip() or message
    return first[:_ERROR_CHARS].rstrip()


def failing_step(steps: list[Step]) -> Step | None:
    """The step where the unit failed: the last error step, else the last tool call, else
    the last assistant turn; None for an empty timeline."""
    tests = (lambda s: s.is_error, lambda s: s.kind == "tool_call", lambda s: s.kind == "assistant")
    return next((s for test in tests for s in reversed(steps) if test(s)), None)


def key_from_steps(steps: list[Step]) -> StructuralKey:
    """The structural key of a step timeline (see module docstring)."""
    errors = [s for s in steps if s.is_error]
    if errors:
        return StructuralKey(tool=errors[-1].tool_name, error=error_type(errors[-1].text) or "unknown")
    calls = [s for s in steps if s.kind == "tool_call"]
    return StructuralKey(tool=calls[-1].tool_name if calls else None, error=None)


def structural_key(unit: Unit) -> StructuralKey:
    """The structural key of a unit; ``structural_key(u).text`` is the stored string."""
    return key_from_steps(step_timeline(unit))


def _render(step: Step, limit: int = _STEP_CHARS) -> str:
    return render_timeline([step])[:limit]


def key_text(unit: Unit, max_chars: int = KEY_TEXT_CHARS) -> str:
    """The text embedded for a unit (at most ``max_chars`` characters).

    In order of importance, since the embedding model truncates at 256 word pieces: the
    structural key in words, the failing step, the final assistant answer, then the three
    steps before and two after the failing step. System prompts are left out; each step
    is cut at 300 characters.
    """
    return key_text_from_steps(step_timeline(unit), max_chars)


def _window(steps: list[Step], fail: Step) -> tuple[list[Step], list[Step]]:
    """(the failing step with its tool result, the three steps before and two after them)."""
    start = steps.index(fail)
    end = start + 1
    if fail.kind == "tool_call" and end < len(steps) and steps[end].kind == "tool_result":
        end += 1
    return steps[start:end], steps[max(0, start - 3):start] + steps[end:end + 2]


def key_text_from_steps(steps: list[Step], max_chars: int = KEY_TEXT_CHARS) -> str:
    """:func:`key_text` of a step timeline already built."""
    steps = [s for s in steps if s.kind != "system"]
    parts = [key_from_steps(steps).words + "."]
    fail = failing_step(steps)
    core, around = _window(steps, fail) if fail is not None else ([], [])
    if core:
        parts.append("Failing step: " + "\n".join(_render(s) for s in core))
    answers = [s for s in steps if s.kind == "assistant" and s.text.strip() and s not in core]
    if answers:
        parts.append("Final answer: " + answers[-1].text[:_STEP_CHARS])
    if around:
        parts.append("Context:\n" + "\n".join(_render(s, _CONTEXT_CHARS) for s in around))
    return "\n".join(parts)[:max_chars]
