"""Read a verdict from a judge's reply text, strictly: a reply without one is unscored, never a pass or a fail.

Accepted, in order:

1. the reply is a JSON object with a ``verdict`` (a label) or ``score`` field (a number on the
   declared scale, default [0, 1], normalised to [0, 1]; one outside the scale is an *error*);
2. repaired (``repaired=True``): a JSON object inside a markdown code fence, after or before
   other text, with ``//``, ``/* */`` or ``#`` comments, trailing commas or raw newlines (control
   characters) inside its strings; when there are several, the last one with a verdict or score field
   counts, with its reason;
3. repaired: no JSON object, but a ``verdict: <label>`` field (a line such as
   ``Verdict: FAIL``, ``Verdict: 4`` for a level, or a ``"verdict": "pass"`` pair in broken JSON); the last
   one counts.

Before parsing, zero-width characters are removed and the text is NFKC-normalised;
keys and labels are compared lowercased. A word inside the reasoning ("no reason to
fail") is never a verdict. A verdict ``n/a`` (or ``not_applicable``) that is not one of the
rubric's labels makes the result *not applicable*: excluded from rates, counted beside them.

Flagged, not rejected (``ParsedVerdict.warnings``): a score given as a numeric string
(coerced), and a score that contradicts the stated verdict (the verdict counts).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
_STRING_OR_NOISE = re.compile(r'("(?:\\.|[^"\\])*")|(//[^\n]*|/\*.*?\*/|#[^\n]*|,(?=\s*[}\]]))', re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_VERDICT_FIELD = re.compile(  # a label starts with a letter, a level with a digit
    r"""(?im)(?:^|[{,])[\s*#>_-]*["']?verdict["']?\s*\**\s*[:=]\s*\**\s*["']?([a-z0-9][\w/-]*)""")
_SCORE_FIELD = re.compile(r"""(?im)(?:^|[{,])[\s*#>_-]*["']?score["']?\s*\**\s*[:=]\s*\**\s*["']?(-?[0-9]*\.?[0-9]+)""")
_REASON_KEYS = ("reason", "reasoning", "rationale", "explanation")
_NOT_APPLICABLE = frozenset({"n/a", "na", "not_applicable", "not-applicable", "not-relevant"})
Scale = tuple[float, float]


@dataclass(frozen=True)
class ParsedVerdict:
    """A verdict read from a reply.

    Attributes:
        score: in [0, 1] (the label's score, or the reply's own ``score``).
        label: the verdict label, lowercased; None when the reply gave only a score.
        reason: the reply's reason ("" when it gave none).
        repaired: the reply needed repair to parse (see the module docstring).
        warnings: what was accepted but flagged (a coerced numeric string, a score that
            contradicts the verdict).
    """

    score: float
    label: str | None
    reason: str
    repaired: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unparsed:
    """No verdict could be read; ``problem`` says why (the caller keeps the raw reply).

    ``status``: ``"unscored"`` (no readable verdict), ``"error"`` (a score outside the declared
    scale: the judge broke the rubric's contract) or ``"not_applicable"`` (the judge said n/a).
    """

    problem: str
    status: Literal["unscored", "error", "not_applicable"] = "unscored"


def normalize_text(text: str) -> str:
    """NFKC-normalise and drop zero-width and soft-hyphen characters."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).strip()


def parse_verdict(text: str, labels: Mapping[str, float], scale: Scale | None = None,
                  pass_score: float = 0.5) -> ParsedVerdict | Unparsed:
    """Read the verdict of a judge reply.

    Args:
        text: the raw reply.
        labels: allowed verdict labels (lowercase) -> score in [0, 1].
        scale: (low, high) of the rubric's score scale, e.g. (1, 10); a score is mapped
            linearly to [0, 1]. None: scores are already in [0, 1].
        pass_score: a normalised score >= this is a pass (to flag a score that contradicts
            the stated verdict).

    Returns:
        :class:`ParsedVerdict`, or :class:`Unparsed`: unscored when the reply has no verdict
        or score field or a label outside ``labels``; error when a score lies outside the
        scale; not applicable when the verdict is n/a.
    """
    clean = normalize_text(text)
    if not clean:
        return Unparsed("empty reply")
    rules = _Rules(labels, scale or (0.0, 1.0), pass_score)
    found = _find_object(clean)
    if found is not None:
        obj, repaired = found
        return _from_object(obj, rules, repaired)
    return _from_fields(clean, rules)


@dataclass(frozen=True)
class _Rules:
    labels: Mapping[str, float]
    scale: Scale
    pass_score: float


def _find_object(text: str) -> tuple[dict[str, Any], bool] | None:
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return _lower_keys(whole), False
    candidates = [_lower_keys(o) for source in (*_FENCE.findall(text), text) for o in _objects(_strip_noise(source))]
    if not candidates:
        return None
    with_verdict = [o for o in candidates if "verdict" in o or "score" in o]
    return (with_verdict or candidates)[-1], True


def _objects(text: str) -> Iterator[dict[str, Any]]:
    """Top-level JSON objects embedded in text, in order."""
    decoder = json.JSONDecoder(strict=False)  # control characters (raw newlines) inside strings: repaired
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        pos = text.find("{", end)


def _strip_noise(text: str) -> str:
    """Remove comments and trailing commas outside JSON strings."""
    return _STRING_OR_NOISE.sub(lambda m: m.group(1) or "", text)


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _label(value: object) -> str:
    return str(value).strip().strip("\"'`*.!").strip().lower()


def _from_object(obj: dict[str, Any], rules: _Rules, repaired: bool) -> ParsedVerdict | Unparsed:
    reason = next((str(obj[k]) for k in _REASON_KEYS if k in obj and obj[k] is not None), "")
    score = obj.get("score")
    if obj.get("verdict") is not None:
        return _checked(_from_label(_label(obj["verdict"]), rules, reason, repaired), score, rules)
    if score is not None:
        return _from_score(score, rules, reason, repaired)
    return Unparsed("the reply has neither a verdict nor a score field")


def _from_label(label: str, rules: _Rules, reason: str, repaired: bool) -> ParsedVerdict | Unparsed:
    if label not in rules.labels:
        if label in _NOT_APPLICABLE:
            return Unparsed(f"the judge found the criterion not applicable ({label})", "not_applicable")
        return Unparsed(f"verdict {label!r} is not one of {', '.join(rules.labels)}")
    return ParsedVerdict(score=float(rules.labels[label]), label=label, reason=reason, repaired=repaired)


def _checked(parsed: ParsedVerdict | Unparsed, score: object, rules: _Rules) -> ParsedVerdict | Unparsed:
    """Flag a score beside the verdict that says the opposite (the verdict counts)."""
    if score is None or not isinstance(parsed, ParsedVerdict):
        return parsed
    side = _from_score(score, rules, "", False)
    if not isinstance(side, ParsedVerdict):
        return replace(parsed, warnings=(*parsed.warnings, f"ignored the score beside the verdict: {side.problem}"))
    if (side.score >= rules.pass_score) != (parsed.score >= rules.pass_score):
        note = f"score {score!r} contradicts the verdict {parsed.label!r}; the verdict counts"
        return replace(parsed, warnings=(*parsed.warnings, *side.warnings, note))
    return parsed


def _from_score(value: object, rules: _Rules, reason: str, repaired: bool) -> ParsedVerdict | Unparsed:
    if isinstance(value, bool):
        return Unparsed(f"score {value!r} is not a number")
    warnings: tuple[str, ...] = ()
    if isinstance(value, str):
        warnings = (f"score given as the string {value!r}, read as a number",)
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Unparsed(f"score {value!r} is not a number")
    low, high = rules.scale
    if math.isnan(score) or not low <= score <= high:
        return Unparsed(f"score {value!r} is outside the scale [{low:g}, {high:g}]", "error")
    normalised = (score - low) / (high - low)
    return ParsedVerdict(score=normalised, label=None, reason=reason, repaired=repaired, warnings=warnings)


def _from_fields(text: str, rules: _Rules) -> ParsedVerdict | Unparsed:
    verdicts = list(_VERDICT_FIELD.finditer(text))
    scores = list(_SCORE_FIELD.finditer(text))
    if verdicts:
        last = verdicts[-1]
        parsed = _from_label(_label(last.group(1)), rules, _reason_before(text, last.start()), True)
        return _checked(parsed, float(scores[-1].group(1)) if scores else None, rules)
    if scores:
        last = scores[-1]
        return _from_score(float(last.group(1)), rules, _reason_before(text, last.start()), True)
    return Unparsed("no verdict or score field in the reply")


def _reason_before(text: str, end: int) -> str:
    head = text[:end]
    match = re.search(r"""(?is)["']?(?:reason|reasoning|rationale|explanation)["']?\s*[:=]\s*["']?(.*)""", head)
    reason = match.group(1) if match else head
    return reason.strip().strip("{},\"' \n")[-1000:]
