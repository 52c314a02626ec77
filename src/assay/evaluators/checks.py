"""Built-in code checks. Each takes ``(steps, unit)`` and returns ``(score in [0, 1], reason)``.

Use one in an evaluator file as ``code: {callable: "assay.evaluators.checks:<name>"}``.
"""

from __future__ import annotations

from assay.traces.model import Step, Unit


def no_tool_errors(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """Pass (1.0) when no tool result in the timeline is an error; else fail (0.0).

    A tool result is an error when the timeline marks it so (``Error: ...``, a traceback,
    ``{"error": ...}``, or an error span status). The reason names the first failing tool,
    its step and its message, and how many tool errors there were.
    """
    errors = [s for s in steps if s.kind == "tool_result" and s.is_error]
    if not errors:
        calls = sum(1 for s in steps if s.kind == "tool_call")
        return 1.0, f"all {calls} tool calls succeeded"
    first = errors[0]
    message = " ".join(first.text.split())[:200]
    more = f" (and {len(errors) - 1} more tool errors)" if len(errors) > 1 else ""
    return 0.0, f"tool {first.tool_name} failed at step {first.index}: {message}{more}"


def tool_called(steps: list[Step], unit: Unit, tool: str, expected: bool = True) -> tuple[float, str]:
    """Pass when ``tool`` is called (``expected=True``) or never called (``expected=False``).

    Args:
        tool: the tool name, compared case-insensitively.
        expected: whether the criterion requires the call or forbids it.
    """
    calls = [s for s in steps if s.kind == "tool_call" and (s.tool_name or "").lower() == tool.lower()]
    if expected:
        return (1.0, f"{tool} called at step {calls[0].index}") if calls else (0.0, f"{tool} was never called")
    return (0.0, f"{tool} called at step {calls[0].index} ({len(calls)} calls)") if calls else (
        1.0, f"{tool} was not called")


def phrase_present(steps: list[Step], unit: Unit, phrase: str) -> tuple[float, str]:
    """Pass when an assistant turn contains ``phrase`` (case-insensitive)."""
    for s in steps:
        if s.kind == "assistant" and phrase.lower() in s.text.lower():
            return 1.0, f"phrase found at step {s.index}"
    return 0.0, f"no assistant turn says {phrase!r}"
