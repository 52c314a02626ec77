"""Built-in code checks. Each takes ``(steps, unit)`` and returns ``(score in [0, 1], reason)``;
:func:`tool_precheck`, the code part of a ``hybrid`` evaluator, may also say not applicable or defer.

Use one in an evaluator file as ``code: {callable: "assay.evaluators.checks:<name>"}``.
"""

from __future__ import annotations

from assay.evaluators.code import Defer, NotApplicable
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


def tool_precheck(steps: list[Step], unit: Unit, tools: str | list[str] | None = None
                  ) -> tuple[float, str] | NotApplicable | Defer:
    """The code part of a ``hybrid`` evaluator: decides the plain cases of a criterion about tool use, defers the rest.

    In order:

    1. none of ``tools`` is called (names compared case-insensitively; None: any tool):
       :class:`NotApplicable` (e.g. no refund tool called: a refund criterion does not apply);
    2. a tool error is left unhandled, i.e. no assistant turn follows it (the run ended on the
       error and the user never heard of it): fail (0.0), naming the tool and its step;
    3. otherwise :class:`Defer`: the judge reads the timeline.

    Args:
        tools: the tool name(s) the criterion is about.
    """
    wanted = {t.lower() for t in ([tools] if isinstance(tools, str) else tools or [])}
    calls = [s for s in steps if s.kind == "tool_call" and (not wanted or (s.tool_name or "").lower() in wanted)]
    if not calls:
        return NotApplicable(f"none of {', '.join(sorted(wanted))} was called" if wanted else "no tool was called")
    last_answer = max((s.index for s in steps if s.kind == "assistant"), default=-1)
    unhandled = [s for s in steps if s.kind == "tool_result" and s.is_error and s.index > last_answer]
    if unhandled:
        first = unhandled[0]
        message = " ".join(first.text.split())[:160]
        return 0.0, (f"tool error left unhandled: {first.tool_name} failed at step {first.index} ({message}) "
                     "and no assistant turn follows")
    return Defer(f"{calls[0].tool_name} called at step {calls[0].index}, no unhandled tool error")
