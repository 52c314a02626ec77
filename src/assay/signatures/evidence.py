"""The failure-local text of a failed unit: what went wrong and the steps around it.

A signature should group units that fail the same way, not units that were asked the same
thing. So the text embedded and labelled for a failed unit (:func:`failure_text`) is built
from its failure signals (:mod:`assay.signals`), not from the whole run:

- for each signal that points to a step, strongest first (then earliest; risk cues such as
  ``many_actions`` after the others): the signal in
  words and its evidence, then the **failure-local context**: the step before, the step
  itself, its tool call or tool result (a call and its result belong together), and the
  agent's next turn;
- signals about the whole unit (no step) add their evidence only; the recorded outcome
  (``outcome_fail``) adds nothing: every failed unit has it and it says nothing of what
  went wrong;
- when no signal points to a step: the last steps of the unit (how it ended).

The default text of a build is shorter (:func:`evidence_text`, ``signature_text = "evidence"``):
the signal lines alone (each signal in words and its evidence, which quotes the step it points to),
strongest first, repeated lines once; the last steps when there is no signal but the outcome. The
steps around the signal are left out of the embedded text: compared against human failure categories
(``benchmarks/bench_discovery.py --part clusters``), the steps' content (products, orders, web pages)
grouped units by what they were about more than by what went wrong.

Variable parts (ids, dates, numbers, e-mails) are masked as in
:func:`~assay.signatures.keys.normalize_error`, so two units failing the same way on different
orders read the same; system prompts are left out; each step is cut at 200 characters and the
whole text at :data:`~assay.signatures.keys.KEY_TEXT_CHARS` (all-MiniLM-L6-v2 reads 256 word
pieces: the strongest signal comes first).
"""

from __future__ import annotations

from collections.abc import Sequence

from assay.exceptions import UsageError
from assay.signals.model import FailureSignal
from assay.signatures.keys import KEY_TEXT_CHARS, mask_variables, normalize_error
from assay.traces.model import Step, Unit
from assay.traces.timeline import step_timeline

SIGNAL_WORDS: dict[str, str] = {
    "outcome_fail": "failed outcome",
    "error_span": "error",
    "tool_error": "tool error",
    "thumbs_down": "thumbs down",
    "low_feedback_score": "low feedback score",
    "user_frustration": "user frustrated",
    "user_correction": "user corrects the agent",
    "user_repeat": "user repeats a request",
    "escalation": "handed off to a human",
    "refusal_loop": "agent refuses or apologises repeatedly",
    "empty_answer": "empty answer",
    "cut_off_answer": "answer cut off",
    "tool_loop": "same tool call repeated",
    "retry_after_error": "retry after a tool error",
    "unanswered_complaint": "complaint left unanswered",
    "long_session": "session far longer than usual",
    "ungrounded_number": "number stated without a source",
    "unconfirmed_action": "acted without the user's confirmation",
    "action_after_objection": "acted after the user objected",
    "ungrounded_argument": "action argument not grounded",
    "action_retry": "action retried",
    "many_actions": "many actions in one run",
    "evaluator_fail": "evaluator fail",
    "human_fail": "labelled fail by a person",
    "flag": "flagged by a person",
    "open_coding_note": "what went wrong",
}
"""Each signal kind in words, as failure texts and signature labels say it."""

LAST_STEPS = 4
"""Steps (system prompts excluded) a unit without step-pointing signals is summarized by."""

_STEP_CHARS = 200
_EVIDENCE_CHARS = 200
_POINTED_CHARS = 100  # the step itself follows, so its evidence is kept short
_SKIPPED_SOURCES = frozenset({"outcome"})
RISK_CUES = frozenset({"many_actions"})
"""Kinds that say a unit had more to get wrong, not what went wrong: after every other signal in a failure
text, whatever their strength (``many_actions`` is strong on tau-bench, yet "five actions" names no failure
mode)."""


def signal_words(kind: str) -> str:
    """A signal kind in words (:data:`SIGNAL_WORDS`; unknown kinds with ``_`` as spaces)."""
    return SIGNAL_WORDS.get(kind, kind.replace("_", " "))


def render_step(step: Step, limit: int = _STEP_CHARS) -> str:
    """One step as a short masked line without its index, e.g.
    ``tool result get_order_details [error]: order <ID> not found``. An error step shows its
    error message (:func:`~assay.signatures.normalize_error`: the exception line of a traceback,
    the message of ``{"error": ...}``) rather than the start of its text."""
    label = step.kind.replace("_", " ")
    if step.kind in ("tool_call", "tool_result") and step.tool_name:
        label += f" {step.tool_name}"
    if step.is_error:
        return f"{label} [error]: {normalize_error(step.text)}"[:limit]
    head = " ".join(step.text[:2 * limit].split())  # masking a long text whole costs more than the rest
    return f"{label}: {mask_variables(head)}"[:limit]


def _pair(steps: list[Step], at: int) -> int | None:
    """Position of the tool result of the call at ``at`` (or the call of the result), same tool."""
    step = steps[at]
    if step.kind == "tool_call":
        found = (j for j in range(at + 1, len(steps)) if steps[j].kind == "tool_result"
                 and steps[j].tool_name == step.tool_name)
    elif step.kind == "tool_result":
        found = (j for j in range(at - 1, -1, -1) if steps[j].kind == "tool_call"
                 and steps[j].tool_name == step.tool_name)
    else:
        return None
    return next(found, None)


def local_context(steps: list[Step], at: int) -> list[Step]:
    """The failure-local context of the step at position ``at`` of ``steps`` (system prompts
    already removed): the step before, the step, its paired tool call or result, and the next
    assistant turn after them; in timeline order, without repeats."""
    window = {at}
    pair = _pair(steps, at)
    if pair is not None:
        window.add(pair)
    if min(window) > 0:
        window.add(min(window) - 1)
    after = next((j for j in range(max(window) + 1, len(steps)) if steps[j].kind == "assistant"), None)
    if after is not None:
        window.add(after)
    return [steps[j] for j in sorted(window)]


def _ordered(signals: Sequence[FailureSignal]) -> list[FailureSignal]:
    """Signals worth a text, risk cues (:data:`RISK_CUES`) last, strongest first, then earliest step
    (step-less last), then kind."""
    kept = [s for s in signals if s.source not in _SKIPPED_SOURCES]
    return sorted(kept, key=lambda s: (s.kind in RISK_CUES, -s.strength, s.step is None, s.step or 0, s.kind))


def lead_kind(signals: Sequence[FailureSignal]) -> str | None:
    """The kind of the signal a unit's failure text starts with (its strongest, then earliest
    step; a risk cue only when it has no other); None when the unit has none but the recorded outcome."""
    ordered = _ordered(signals)
    return ordered[0].kind if ordered else None


def failure_text(unit: Unit, signals: Sequence[FailureSignal], steps: list[Step] | None = None,
                 max_chars: int = KEY_TEXT_CHARS) -> str:
    """The text embedded and labelled for a failed unit: its signals and the failure-local
    context around the steps they point to (see module docstring).

    Args:
        unit: the unit.
        signals: its failure signals (any order; those of other units are an error).
        steps: its step timeline when already built (:func:`~assay.traces.step_timeline`).
        max_chars: bound of the text, in characters.

    Returns:
        at most ``max_chars`` characters, e.g.::

            tool error: modify_pending_order_address: error: non-pending order cannot be modified
            tool result modify_pending_order_items: {"order_id": "<ID>", "user_id": "<ID>", ...
            tool call modify_pending_order_address: {"order_id":"<ID>", ...
            tool result modify_pending_order_address [error]: non-pending order cannot be modified
            assistant: the jigsaw puzzle in your order has been successfully switched to ...
            user corrects the agent: 'that's not correct': yes, i'd like to switch to ...

    Raises:
        UsageError: a signal of another unit, or one pointing past the end of the timeline.
    """
    steps = step_timeline(unit) if steps is None else steps
    shown = [s for s in steps if s.kind != "system"]
    position = {s.index: j for j, s in enumerate(shown)}
    lines: list[str] = []
    done: set[int] = set()
    for signal in signals:
        _check(signal, unit, steps)
    for signal in _ordered(signals):
        at = position.get(signal.step) if signal.step is not None else None
        evidence = mask_variables(" ".join(signal.evidence[:2 * _EVIDENCE_CHARS].split()))
        lines.append(f"{signal_words(signal.kind)}: {evidence[:_EVIDENCE_CHARS if at is None else _POINTED_CHARS]}")
        for step in local_context(shown, at) if at is not None else []:
            if step.index not in done:
                done.add(step.index)
                lines.append(render_step(step))
        if sum(len(line) + 1 for line in lines) >= max_chars:
            break
    if not done:
        lines.append("how it ended:")
        lines.extend(render_step(s) for s in shown[-LAST_STEPS:])
    return "\n".join(lines)[:max_chars]


def evidence_text(unit: Unit, signals: Sequence[FailureSignal], steps: list[Step] | None = None,
                  max_chars: int = KEY_TEXT_CHARS) -> str:
    """The signal evidence of a failed unit, the default text a build embeds (see module docstring).

    Args:
        unit: the unit.
        signals: its failure signals (any order; those of other units are an error).
        steps: its step timeline when already built (:func:`~assay.traces.step_timeline`).
        max_chars: bound of the text, in characters.

    Returns:
        at most ``max_chars`` characters, one line per signal (a repeated line once), e.g.::

            tool error: modify_pending_order_address: error: non-pending order cannot be modified
            user corrects the agent: 'that's not correct': yes, i'd like to switch to ...

        or, with no signal but the recorded outcome, ``how it ended:`` and the last steps.

    Raises:
        UsageError: a signal of another unit, or one pointing past the end of the timeline.
    """
    steps = step_timeline(unit) if steps is None else steps
    for signal in signals:
        _check(signal, unit, steps)
    lines: list[str] = []
    for signal in _ordered(signals):
        evidence = mask_variables(" ".join(signal.evidence[:2 * _EVIDENCE_CHARS].split()))
        line = f"{signal_words(signal.kind)}: {evidence[:_EVIDENCE_CHARS]}"
        if line not in lines:
            lines.append(line)
    if not lines:
        lines = ["how it ended:", *(render_step(s) for s in [s for s in steps if s.kind != "system"][-LAST_STEPS:])]
    return "\n".join(lines)[:max_chars]


def _check(signal: FailureSignal, unit: Unit, steps: list[Step]) -> None:
    if signal.unit_id != unit.unit_id:
        raise UsageError(f"signal of unit {signal.unit_id!r} passed for unit {unit.unit_id!r}")
    if signal.step is not None and steps and signal.step > steps[-1].index:
        raise UsageError(f"signal {signal.kind} points to step {signal.step}, past the end of unit "
                         f"{unit.unit_id!r} ({steps[-1].index} steps)")
