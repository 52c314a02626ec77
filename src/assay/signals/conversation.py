"""Detectors of conversation cues: what the user and the agent say.

Each reads only the step timeline (:class:`~assay.signals.registry.UnitView`). Word lists are
regular-expression fragments from :mod:`assay.signals.settings`, matched case-insensitively from a
word start; one signal per matching step unless the docstring says otherwise.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from assay.signals.registry import Finding, UnitView, detector
from assay.signals.settings import (
    ComplaintSettings,
    EmptyAnswerSettings,
    EscalationSettings,
    FrustrationSettings,
    RefusalSettings,
    RepeatSettings,
)
from assay.traces.model import Step


@lru_cache(maxsize=64)
def lexicon(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive regex matching any of ``patterns`` from a word start."""
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + ")", re.IGNORECASE)


def matched(patterns: tuple[str, ...], text: str) -> str | None:
    """The first text ``patterns`` match in ``text`` (None: no match)."""
    m = lexicon(patterns).search(text) if patterns else None
    return m.group(0) if m else None


@detector("user_frustration", "2", FrustrationSettings)
def user_frustration(view: UnitView, cfg: FrustrationSettings, _: Any = None) -> list[Finding]:
    """A user turn with frustration words (``user_frustration``) or, failing those, one that corrects the
    agent (``user_correction``: "that's not what I asked", "I already told you")."""
    out = []
    for step in view.users:
        word = matched(cfg.words, step.text)
        if word:
            out.append(Finding("user_frustration", cfg.strength, f"'{word}': {step.text}", step))
            continue
        fix = matched(cfg.corrections, step.text)
        if fix:
            out.append(Finding("user_correction", cfg.correction_strength, f"'{fix}': {step.text}", step))
    return out


_WORD = re.compile(r"[a-z][a-z']{2,}")
_STOP = frozenset({
    "the", "and", "you", "for", "are", "but", "not", "all", "any", "can", "had", "her", "was", "one", "our",
    "out", "has", "have", "this", "that", "with", "from", "they", "will", "would", "there", "their", "what",
    "about", "which", "when", "your", "yes", "please", "thanks", "thank", "could", "just", "like", "also",
    "been", "into", "then", "them", "than", "only", "some", "its", "it's", "i'm", "i'd", "i'll", "let", "me",
    "my",
})


def content_words(text: str) -> frozenset[str]:
    """Lower-case words of 3+ letters that are not stop words (the set a repeat is measured on)."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOP)


@detector("user_repeat", "1", RepeatSettings)
def user_repeat(view: UnitView, cfg: RepeatSettings, _: Any = None) -> list[Finding]:
    """A user turn whose content words overlap an earlier user turn's by Jaccard >= ``min_similarity``
    (both with >= ``min_words`` content words) with an assistant turn between them: the agent answered
    and the user had to ask again."""
    out: list[Finding] = []
    seen: list[tuple[Step, frozenset[str], int]] = []
    for step in view.users:
        words = content_words(step.text)
        answered = sum(1 for a in view.assistants if a.index < step.index)
        if len(words) >= cfg.min_words:
            for earlier, prev, answers in seen:
                if answered > answers and len(words & prev) / len(words | prev) >= cfg.min_similarity:
                    out.append(Finding("user_repeat", cfg.strength,
                                       f"repeats step {earlier.index}: {step.text}", step))
                    break
            seen.append((step, words, answered))
    return out


@detector("escalation", "2", EscalationSettings)
def escalation(view: UnitView, cfg: EscalationSettings, _: Any = None) -> list[Finding]:
    """A hand-off to a person: a call to a tool whose name matches ``tools``, or a user turn asking for a
    person (``text``). One signal per unit (a hand-off is usually both asked for and done), at the tool
    call when there is one (strength ``handoff_strength``: the agent did hand off), else at the user's
    first request (``strength``: the user asked and got no one)."""
    call = next((s for s in view.calls if s.tool_name and matched(cfg.tools, s.tool_name)), None)
    ask = next((s for s in view.users if matched(cfg.text, s.text)), None)
    if call is None and ask is None:
        return []
    parts = ([f"tool {call.tool_name}"] if call else []) + ([f"user asks: {ask.text}"] if ask else []) + \
        ([f"arguments: {call.text}"] if call else [])
    strength = cfg.handoff_strength if call else cfg.strength
    return [Finding("escalation", strength, " | ".join(parts), call or ask)]


@detector("refusal_loop", "2", RefusalSettings)
def refusal_loop(view: UnitView, cfg: RefusalSettings, _: Any = None) -> list[Finding]:
    """At least ``min_turns`` assistant turns that refuse or apologise: one signal at the first of them,
    stronger by ``per_extra`` per turn beyond ``min_turns`` (up to ``max_strength``)."""
    hits = [s for s in view.assistants if matched(cfg.phrases, s.text)]
    if len(hits) < cfg.min_turns:
        return []
    strength = min(cfg.max_strength, cfg.strength + cfg.per_extra * (len(hits) - cfg.min_turns))
    quotes = " | ".join(f"[{s.index}] {matched(cfg.phrases, s.text)}" for s in hits[:5])
    return [Finding("refusal_loop", strength, f"{len(hits)} refusing or apologising turns: {quotes}", hits[0])]


_DANGLING = frozenset({"a", "an", "the", "and", "or", "but", "to", "of", "with", "from", "for", "your", "our",
                       "my", "their"})


def cut_off(text: str, min_chars: int) -> bool:
    """True when ``text`` (at least ``min_chars`` long) stops where no answer ends: after a comma, on a word
    that needs a continuation (an article, conjunction, preposition: ``... and the``), or inside an unclosed
    code fence. An answer ending in a name, a number or a list item ("..., Singapore") is complete."""
    text = text.rstrip()
    if len(text) < min_chars:
        return False
    last_word = re.split(r"\s+", text)[-1].lower()
    return text.endswith(",") or last_word in _DANGLING or text.count("```") % 2 == 1


@detector("empty_answer", "1", EmptyAnswerSettings)
def empty_answer(view: UnitView, cfg: EmptyAnswerSettings, _: Any = None) -> list[Finding]:
    """The user spoke but the agent wrote no answer at all, or its last answer is shorter than
    ``min_chars`` (``empty_answer``), or its last answer stops mid-sentence (``cut_off_answer``)."""
    if not view.users:
        return []
    if not view.assistants:
        return [Finding("empty_answer", cfg.strength, "no assistant answer in the unit", view.users[-1])]
    last = view.assistants[-1]
    if len(last.text.strip()) < cfg.min_chars:
        return [Finding("empty_answer", cfg.strength, f"empty final answer: {last.text!r}", last)]
    if cut_off(last.text, cfg.min_cut_chars):
        return [Finding("cut_off_answer", cfg.cut_off_strength, f"final answer ends mid-sentence: "
                        f"…{last.text.rstrip()[-120:]}", last)]
    return []


@detector("unanswered_complaint", "1", ComplaintSettings)
def unanswered_complaint(view: UnitView, cfg: ComplaintSettings, _: Any = None) -> list[Finding]:
    """The conversation ends on a user turn that complains or corrects the agent (``phrases``) and no
    assistant turn answers it."""
    if not view.turns or view.turns[-1].kind != "user":
        return []
    last = view.turns[-1]
    cue = matched(cfg.phrases, last.text)
    return [Finding("unanswered_complaint", cfg.strength, f"'{cue}': {last.text}", last)] if cue else []
