"""Text actions to tool calls: the ``actions`` of a mapping applied to one text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from assay.traces.mapping.model import ActionRule
from assay.traces.model import ToolCall


@dataclass(frozen=True)
class Action:
    """One tool call found in a text; ``result`` is its result when the rule says ``rest``."""

    call: ToolCall
    mode: Literal["next", "rest", "none"]
    result: str | None = None


@dataclass(frozen=True)
class _Rule:
    rule: ActionRule
    regex: re.Pattern[str]


def compile_actions(rules: list[ActionRule]) -> list[_Rule]:
    """The rules with their patterns compiled (multi-line mode)."""
    return [_Rule(r, re.compile(r.pattern, re.MULTILINE)) for r in rules]


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _call(rule: ActionRule, m: re.Match[str]) -> ToolCall:
    groups = {k: v for k, v in m.groupdict().items() if v is not None}
    name = rule.tool.format_map({k: groups.get(k, "") for k in m.re.groupindex})
    arguments = {k: _value(v, k in rule.as_json) for k, v in groups.items()}
    return ToolCall(name=name or "action", arguments=arguments,
                    arguments_raw=json.dumps(arguments, ensure_ascii=False), arguments_flag="object")


def find_actions(text: str, rules: list[_Rule]) -> tuple[list[Action], str]:
    """The tool calls the rules find in ``text``, in text order, and the text left when the matches
    (and ``rest`` results) are taken out.

    Matches of all rules are collected; where two overlap, the one starting first wins (on a tie, the
    rule listed first). A ``rest`` result runs from the end of its match to the next match.
    """
    found: list[tuple[int, int, int, _Rule, re.Match[str]]] = []
    for order, r in enumerate(rules):
        found += [(m.start(), order, m.end(), r, m) for m in r.regex.finditer(text) if m.end() > m.start()]
    found.sort(key=lambda f: (f[0], f[1]))
    kept: list[tuple[int, int, _Rule, re.Match[str]]] = []
    for start, _, end, r, m in found:
        if not kept or start >= kept[-1][1]:
            kept.append((start, end, r, m))
    actions: list[Action] = []
    left: list[str] = []
    pos = 0
    for n, (start, end, r, m) in enumerate(kept):
        left.append(text[pos:start])
        pos = end
        result = None
        if r.rule.result == "rest":
            stop = kept[n + 1][0] if n + 1 < len(kept) else len(text)
            result, pos = text[end:stop].strip(), stop
        actions.append(Action(_call(r.rule, m), r.rule.result, result))
    left.append(text[pos:])
    return actions, "".join(left).strip()
