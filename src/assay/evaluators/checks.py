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
