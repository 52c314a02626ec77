"""Read a verdict from a judge's reply text, strictly: a reply without one is unscored, never a pass or a fail.

Accepted, in order:

1. the reply is a JSON object with a ``verdict`` (a label) or ``score`` (a number in [0, 1]) field;
2. repaired (``repaired=True``): a JSON object inside a markdown code fence, after or before
   other text, with ``//``, ``/* */`` or ``#`` comments or trailing commas; when there are
   several, the last one with a verdict or score field counts;
3. repaired: no JSON object, but a ``verdict: <label>`` field (a line such as
   ``Verdict: FAIL`` or a ``"verdict": "pass"`` pair in broken JSON); the last one counts.

Before parsing, zero-width characters are removed and the text is NFKC-normalised;
keys and labels are compared lowercased. A word inside the reasoning ("no reason to
fail") is never a verdict.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
_STRING_OR_NOISE = re.compile(r'("(?:\\.|[^"\\])*")|(//[^\n]*|/\*.*?\*/|#[^\n]*|,(?=\s*[}\]]))', re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_VERDICT_FIELD = re.compile(r"""(?im)(?:^|[{,])[\s*#>_-]*["']?verdict["']?\s*\**\s*[:=]\s*\**\s*["']?([a-z][\w-]*)""")
_SCORE_FIELD = re.compile(r"""(?im)(?:^|[{,])[\s*#>_-]*["']?score["']?\s*\**\s*[:=]\s*\**\s*["']?(-?[0-9]*\.?[0-9]+)""")
_REASON_KEYS = ("reason", "reasoning", "rationale", "explanation")


@dataclass(frozen=True)
class ParsedVerdict:
    """A verdict read from a reply.

    Attributes:
        score: in [0, 1] (the label's score, or the reply's own ``score``).
        label: the verdict label, lowercased; None when the reply gave only a score.
        reason: the reply's reason ("" when it gave none).
        repaired: the reply needed repair to parse (see the module docstring).
    """

    score: float
    label: str | None
    reason: str
    repaired: bool


@dataclass(frozen=True)
class Unparsed:
    """No verdict could be read; ``problem`` says why (the caller keeps the raw reply)."""

    problem: str


def normalize_text(text: str) -> str:
    """NFKC-normalise and drop zero-width and soft-hyphen characters."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).strip()


def parse_verdict(text: str, labels: Mapping[str, float]) -> ParsedVerdict | Unparsed:
    """Read the verdict of a judge reply.

    Args:
        text: the raw reply.
        labels: allowed verdict labels (lowercase) -> score in [0, 1].

    Returns:
        :class:`ParsedVerdict`, or :class:`Unparsed` when the reply has no verdict or
        score field, a label outside ``labels``, or a score outside [0, 1].
    """
    clean = normalize_text(text)
    if not clean:
        return Unparsed("empty reply")
    found = _find_object(clean)
    if found is not None:
        obj, repaired = found
        return _from_object(obj, labels, repaired)
    return _from_fields(clean, labels)


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
    decoder = json.JSONDecoder()
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


def _from_object(obj: dict[str, Any], labels: Mapping[str, float], repaired: bool) -> ParsedVerdict | Unparsed:
    reason = next((str(obj[k]) for k in _REASON_KEYS if k in obj and obj[k] is not None), "")
    if obj.get("verdict") is not None:
        return _from_label(_label(obj["verdict"]), labels, reason, repaired)
    score = obj.get("score")
    if score is not None:
        return _from_score(score, reason, repaired)
    return Unparsed("the reply has neither a verdict nor a score field")


def _from_label(label: str, labels: Mapping[str, float], reason: str, repaired: bool) -> ParsedVerdict | Unparsed:
    if label not in labels:
        return Unparsed(f"verdict {label!r} is not one of {', '.join(labels)}")
    return ParsedVerdict(score=float(labels[label]), label=label, reason=reason, repaired=repaired)


def _from_score(value: object, reason: str, repaired: bool) -> ParsedVerdict | Unparsed:
    if isinstance(value, bool):
        return Unparsed(f"score {value!r} is not a number")
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Unparsed(f"score {value!r} is not a number")
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        return Unparsed(f"score {value!r} is outside [0, 1]")
    return ParsedVerdict(score=score, label=None, reason=reason, repaired=repaired)


def _from_fields(text: str, labels: Mapping[str, float]) -> ParsedVerdict | Unparsed:
    verdicts = list(_VERDICT_FIELD.finditer(text))
    if verdicts:
        last = verdicts[-1]
        return _from_label(_label(last.group(1)), labels, _reason_before(text, last.start()), True)
    scores = list(_SCORE_FIELD.finditer(text))
    if scores:
        last = scores[-1]
        return _from_score(last.group(1), _reason_before(text, last.start()), True)
    return Unparsed("no verdict or score field in the reply")


def _reason_before(text: str, end: int) -> str:
    head = text[:end]
    match = re.search(r"""(?is)["']?(?:reason|reasoning|rationale|explanation)["']?\s*[:=]\s*["']?(.*)""", head)
    reason = match.group(1) if match else head
    return reason.strip().strip("{},\"' \n")[-1000:]
