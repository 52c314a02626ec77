"""Detectors of consequential actions: tool calls that change something (book, cancel, modify, refund ...).

A wrong action is the failure nobody complains about: the database ends in the wrong state and the
conversation stays smooth. These detectors look at how an action came about:

* ``unconfirmed_action``: the user turn before it holds no explicit yes (agent policies, e.g.
  tau-bench's, require one before any consequential action), or objects ("no", "wait");
* ``ungrounded_argument``: an id, amount or date in its arguments that no earlier user turn, tool
  result or system prompt contains: the agent invented or computed it in its head;
* ``action_retry``: it failed and the agent tried again with other arguments (guessing);
* ``many_actions``: the unit takes several actions, a weak risk cue (more to get wrong).

What counts as an action is :class:`~assay.signals.settings.ActionSettings` (tool-name verbs, a
generic "not read-only" rule, hand-off tools excluded). Each detector reads only the step timeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from assay.signals.conversation import matched
from assay.signals.grounding import numbers
from assay.signals.registry import Finding, UnitView, detector
from assay.signals.settings import (
    ActionCountSettings,
    ActionRetrySettings,
    ActionSettings,
    UnconfirmedActionSettings,
    UngroundedArgumentSettings,
)
from assay.signals.tool_use import paired_calls
from assay.traces.model import Step

_FIRST_WORD = re.compile(r"[_\-. /]|(?<=[a-z0-9])(?=[A-Z])")
_PASCAL = re.compile(r"[A-Z][A-Za-z0-9]*")


def is_action(tool_name: str | None, cfg: ActionSettings) -> bool:
    """True when a call to ``tool_name`` changes something (see :class:`ActionSettings`).

    The generic rule (any first word that is not read-only) skips PascalCase names without a separator
    (``WebSurfer``, ``ComputerTerminal``): those name agents or components called as tools, not
    functions, and say nothing about changing state."""
    if not tool_name or matched(cfg.ignore_tools, tool_name):
        return False
    verb = _FIRST_WORD.split(tool_name, maxsplit=1)[0].lower()
    if verb in cfg.action_verbs:
        return True
    component = _PASCAL.fullmatch(tool_name) is not None
    return cfg.generic and not component and verb not in cfg.read_only_verbs


def actions(view: UnitView, cfg: ActionSettings) -> list[tuple[Step, Step | None]]:
    """The unit's consequential actions with their result steps (None when missing), in call order."""
    return [(call, result) for call, result in paired_calls(view) if is_action(call.tool_name, cfg)]


def user_before(view: UnitView, step: Step) -> Step | None:
    """The last user turn before ``step`` (None: the user has not spoken yet)."""
    return next((s for s in reversed(view.users) if s.index < step.index), None)


def interactive(view: UnitView) -> bool:
    """True when the user speaks after an assistant turn: someone the agent could ask for a yes. An
    autonomous run (one task message, then the agent alone) has no one to confirm with."""
    first = next((s.index for s in view.steps if s.kind in ("assistant", "tool_call")), None)
    return first is not None and any(u.index > first for u in view.users)


@detector("unconfirmed_action", "2", UnconfirmedActionSettings)
def unconfirmed_action(view: UnitView, cfg: UnconfirmedActionSettings, _: Any = None) -> list[Finding]:
    """A consequential action whose last preceding user turn objects (``action_after_objection``: "no",
    "wait", "that's not what I asked", and no yes) or holds no explicit affirmative (``unconfirmed_action``:
    no "yes", "go ahead", "confirm" ...). One signal per action, at the call; interactive units only
    (:func:`interactive`)."""
    if not interactive(view):
        return []
    out = []
    for call, _result in actions(view, cfg):
        turn = user_before(view, call)
        said = turn.text if turn else ""
        if matched(cfg.affirmatives, said):
            continue
        quote = f"user said '{said}'" if turn else "before the user spoke"
        evidence = f"{call.tool_name} without a yes; {quote}"
        if matched(cfg.objections, said):
            out.append(Finding("action_after_objection", cfg.objection_strength, evidence, call))
        else:
            out.append(Finding("unconfirmed_action", cfg.strength, evidence, call))
    return out


_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_MONTH_DAY = re.compile(r"\b" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b", re.IGNORECASE)
_DAY_MONTH = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH, re.IGNORECASE)
_SLASH_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/\d{2,4})?\b")
_JOINERS = re.compile(r"[\s,$_\-#'\"]")


def month_days(text: str, prose: bool = True) -> frozenset[tuple[int, int]]:
    """Every (month, day) written in ``text``: ``2024-05-26``; in ``prose`` also ``May 26th``, ``26 May``,
    ``5/26`` (month first). Tool results are read without ``prose`` (they write ISO dates; the other
    forms cost a scan of every digit in a large JSON result)."""
    iso = frozenset((int(m), int(d)) for _, m, d in _ISO_DATE.findall(text))
    return iso | _prose_dates(text) if prose else iso


@lru_cache(maxsize=256)
def _prose_dates(text: str) -> frozenset[tuple[int, int]]:
    """Month-name and slash dates of a user turn or system prompt (cached: a prompt is shared by units)."""
    out = {(_MONTHS.index(m.lower()[:3]) + 1, int(d)) for m, d in _MONTH_DAY.findall(text)}
    out |= {(_MONTHS.index(m.lower()[:3]) + 1, int(d)) for d, m in _DAY_MONTH.findall(text)}
    return frozenset(out | {(int(m), int(d)) for m, d in _SLASH_DATE.findall(text)})


def leaves(value: Any) -> Iterator[Any]:
    """Every scalar inside nested dicts and lists of call arguments."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from leaves(item)
    else:
        yield value


class _Sources:
    """What the agent has been told so far (user turns, tool results, system prompts). The numbers, dates
    and joined-up text they hold are computed only when an argument needs them, each source once."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.lower: list[str] = []
        self._numbers: set[float] = set()
        self._dates: set[tuple[int, int]] = set()
        self._joined: list[str] = []
        self._seen = {"numbers": 0, "dates": 0, "joined": 0}

    def add(self, step: Step) -> None:
        self.steps.append(step)
        self.lower.append(step.text.lower())

    def _new(self, what: str) -> list[Step]:
        new, self._seen[what] = self.steps[self._seen[what]:], len(self.steps)
        return new

    def numbers(self) -> set[float]:
        for step in self._new("numbers"):
            self._numbers |= numbers(step.text)
        return self._numbers

    def dates(self) -> set[tuple[int, int]]:
        for step in self._new("dates"):
            self._dates |= month_days(step.text, prose=step.kind != "tool_result")
        return self._dates

    def joined(self) -> list[str]:
        self._joined += [_JOINERS.sub("", step.text.lower()) for step in self._new("joined")]
        return self._joined

    def grounded(self, value: Any, cfg: UngroundedArgumentSettings) -> bool:
        """True when ``value`` needs no source (no digit, too short or small) or appears in the sources."""
        if isinstance(value, bool) or value is None:
            return True
        if isinstance(value, int | float):
            return abs(value) < cfg.min_value or float(value) in self.numbers()
        raw = str(value).strip()
        if not re.search(r"\d", raw) or len(raw) < cfg.min_chars:
            return True  # a choice (cabin, reason, flight type), not a fact
        date = _ISO_DATE.fullmatch(raw)
        if date:
            return (int(date[2]), int(date[3])) in self.dates()
        if any(raw.lower() in text for text in self.lower):
            return True
        bare = _JOINERS.sub("", raw.lower())
        return any(bare in text for text in self.joined())


@detector("ungrounded_argument", "2", UngroundedArgumentSettings)
def ungrounded_argument(view: UnitView, cfg: UngroundedArgumentSettings, _: Any = None) -> list[Finding]:
    """A consequential action with an argument holding a fact (a value with a digit: an id, an amount, a
    date; numbers >= ``min_value``) that no earlier user turn, tool result or system prompt contains (ids
    and amounts compared without spaces, commas, ``$ _ - #``; dates by month and day in any common
    format). One signal per such call, listing the values."""
    sources = _Sources()
    out = []
    for step in view.steps:
        if step.kind == "tool_call" and step.arguments and is_action(step.tool_name, cfg):
            new = [v for v in leaves(step.arguments) if not sources.grounded(v, cfg)]
            if new:
                shown = ", ".join(str(v) for v in new[:6])
                out.append(Finding("ungrounded_argument", cfg.strength,
                                   f"{step.tool_name} with values from no earlier step: {shown}", step))
        if step.kind in ("user", "tool_result", "system"):
            sources.add(step)
    return out


@detector("action_retry", "2", ActionRetrySettings)
def action_retry(view: UnitView, cfg: ActionRetrySettings, _: Any = None) -> list[Finding]:
    """A consequential action that returned an error and whose next call of the same tool has other
    arguments: the agent guessed again instead of asking. One signal per failed call, at the retry."""
    done = actions(view, cfg)
    out = []
    for n, (call, result) in enumerate(done):
        if result is None or not result.is_error:
            continue
        retry = next((c for c, _ in done[n + 1:] if c.tool_name == call.tool_name), None)
        if retry is not None and retry.arguments != call.arguments:
            out.append(Finding("action_retry", cfg.strength,
                               f"{call.tool_name} failed ({result.text}) and was retried with other arguments",
                               retry))
    return out


@detector("many_actions", "2", ActionCountSettings)
def many_actions(view: UnitView, cfg: ActionCountSettings, _: Any = None) -> list[Finding]:
    """A unit with at least ``min_actions`` consequential actions: more to get wrong, and a wrong action
    raises no error. A risk cue rather than evidence of a failure: one signal at the last action, stronger by
    ``per_extra`` per action beyond ``min_actions`` (up to ``max_strength``); with the defaults it reaches
    ``fail_at`` alone from four actions on."""
    done = [call for call, _ in actions(view, cfg)]
    if len(done) < cfg.min_actions:
        return []
    strength = min(cfg.max_strength, cfg.strength + cfg.per_extra * (len(done) - cfg.min_actions))
    names = ", ".join(c.tool_name or "" for c in done[:8])
    return [Finding("many_actions", strength, f"{len(done)} consequential actions: {names}", done[-1])]
