"""Detectors of tool use: tool errors and error spans, the same call repeated, retries after errors.

Each reads only the step timeline (:class:`~assay.signals.registry.UnitView`). A tool call is
paired with the first later ``tool_result`` step of the same tool not already paired.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from assay.signals.registry import Finding, UnitView, detector
from assay.signals.settings import RetrySettings, ToolErrorSettings, ToolLoopSettings
from assay.traces.model import Step


def paired_calls(view: UnitView) -> list[tuple[Step, Step | None]]:
    """Every tool call with its result step (None when the result is missing), in call order."""
    pending: dict[str | None, deque[int]] = defaultdict(deque)
    out: list[tuple[Step, Step | None]] = []
    for step in view.steps:
        if step.kind == "tool_call":
            pending[step.tool_name].append(len(out))
            out.append((step, None))
        elif step.kind == "tool_result" and pending[step.tool_name]:
            n = pending[step.tool_name].popleft()
            out[n] = (out[n][0], step)
    return out


def call_key(call: Step) -> str:
    """Tool name and arguments of a call, canonical (sorted JSON keys): equal for identical calls."""
    args = json.dumps(call.arguments, sort_keys=True, ensure_ascii=False) if call.arguments is not None \
        else call.text.strip()
    return f"{call.tool_name}({args})"


@detector("tool_error", "2", ToolErrorSettings)
def tool_error(view: UnitView, cfg: ToolErrorSettings, _: Any = None) -> list[Finding]:
    """Each tool result that is an error (the span's error status, ``Error: ...``, a traceback,
    ``{"error": ...}``: see :func:`assay.traces.looks_like_error`) as ``tool_error``, with its text (the
    span's error, :attr:`~assay.traces.model.Step.error`, when the result is empty), and each error span that
    is not a tool as ``error_span``, with its text."""
    out = []
    for step in view.steps:
        if step.kind == "tool_result" and step.is_error:
            said = step.text.strip() or step.error or ""
            out.append(Finding("tool_error", cfg.strength, f"{step.tool_name}: {said}", step))
        elif step.kind == "error":
            out.append(Finding("error_span", cfg.error_span_strength, step.text, step))
    return out


@detector("tool_loop", "2", ToolLoopSettings)
def tool_loop(view: UnitView, cfg: ToolLoopSettings, _: Any = None) -> list[Finding]:
    """The same call (tool and arguments) made again although the earlier one did not fail, so that it is
    made ``min_repeats`` times or more: one signal per looping call, at its first repeat, stronger by
    ``per_extra`` per call beyond ``min_repeats`` (up to ``max_strength``)."""
    counts: dict[str, list[Step]] = {}
    last_failed: dict[str, bool] = {}
    for call, result in paired_calls(view):
        if call.tool_name in cfg.ignore_tools:
            continue
        key = call_key(call)
        if key in counts and not last_failed[key]:
            counts[key].append(call)
        counts.setdefault(key, [call])
        last_failed[key] = bool(result and result.is_error)
    out = []
    for key, calls in counts.items():
        if len(calls) >= cfg.min_repeats:
            strength = min(cfg.max_strength, cfg.strength + cfg.per_extra * (len(calls) - cfg.min_repeats))
            out.append(Finding("tool_loop", strength, f"{key} called {len(calls)} times", calls[1]))
    return out


@detector("retry_after_error", "2", RetrySettings)
def retry_after_error(view: UnitView, cfg: RetrySettings, _: Any = None) -> list[Finding]:
    """A call to a tool within ``window`` calls after that tool returned an error: one signal per error
    that was retried, at the retry, with the error text."""
    pairs = paired_calls(view)
    out = []
    for n, (call, result) in enumerate(pairs):
        if result is None or not result.is_error:
            continue
        retry = next((c for c, _ in pairs[n + 1:n + 1 + cfg.window] if c.tool_name == call.tool_name), None)
        if retry is not None:
            out.append(Finding("retry_after_error", cfg.strength,
                               f"{call.tool_name} retried after error: {result.text}", retry))
    return out
