"""The signal mix of a signature: how many of its members carry each kind of failure signal.

``{"escalation": 31, "thumbs_down": 12, "evaluator_fail": 4}`` reads "31 escalations, 12 thumbs-down,
4 evaluator fails" (:func:`mix_text`): each count is a number of **member units** with at least one
(not retracted) signal of that kind, so a unit with three tool errors counts once, and one unit
counts under each kind it has. A member the detectors never ran on counts by what its source
recorded (``outcome_fail`` for outcome ``fail``, ``error_span`` for an error span), as *failed*
does (:mod:`assay._store.signal_rows`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import select

from assay._store import Store
from assay._store.tables import MemberRow, SignalRow, SignalScanRow, UnitRow

MIX_NOUNS: dict[str, tuple[str, str]] = {
    "outcome_fail": ("recorded failure", "recorded failures"),
    "error_span": ("error span", "error spans"),
    "tool_error": ("tool error", "tool errors"),
    "thumbs_down": ("thumbs-down", "thumbs-down"),
    "low_feedback_score": ("low feedback score", "low feedback scores"),
    "user_frustration": ("frustrated user", "frustrated users"),
    "user_correction": ("user correction", "user corrections"),
    "user_repeat": ("repeated request", "repeated requests"),
    "escalation": ("escalation", "escalations"),
    "refusal_loop": ("refusal loop", "refusal loops"),
    "empty_answer": ("empty answer", "empty answers"),
    "cut_off_answer": ("cut-off answer", "cut-off answers"),
    "tool_loop": ("tool loop", "tool loops"),
    "retry_after_error": ("retry after an error", "retries after errors"),
    "unanswered_complaint": ("unanswered complaint", "unanswered complaints"),
    "long_session": ("overlong session", "overlong sessions"),
    "ungrounded_number": ("unsourced number", "unsourced numbers"),
    "unconfirmed_action": ("unconfirmed action", "unconfirmed actions"),
    "action_after_objection": ("action after an objection", "actions after objections"),
    "ungrounded_argument": ("ungrounded argument", "ungrounded arguments"),
    "action_retry": ("retried action", "retried actions"),
    "many_actions": ("run with many actions", "runs with many actions"),
    "evaluator_fail": ("evaluator fail", "evaluator fails"),
    "human_fail": ("human fail label", "human fail labels"),
    "flag": ("person's flag", "people's flags"),
    "open_coding_note": ("open-coding note", "open-coding notes"),
}
"""Each signal kind as a countable noun, singular and plural."""


def mix_text(mix: Mapping[str, int], limit: int | None = None) -> str:
    """The mix in words, in its order, e.g. ``"31 escalations, 12 thumbs-down, 4 evaluator fails"``;
    ``limit`` kinds at most (the rest summed as ``"N more"``); ``""`` for an empty mix."""
    items = list(mix.items())
    shown = items if limit is None else items[:limit]
    words = []
    for kind, n in shown:
        one, many = MIX_NOUNS.get(kind, (kind.replace("_", " "), kind.replace("_", " ")))
        words.append(f"{n} {one if n == 1 else many}")
    rest = sum(n for _, n in items[len(shown):])
    return ", ".join(words + ([f"{rest} more"] if rest else []))


def ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Kinds by count, most first, then by name."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def unit_kinds(store: Store) -> dict[str, set[str]]:
    """``{unit id: kinds of its (not retracted) signals}`` of every unit with one; a unit the detectors
    never ran on counts what its source recorded (see module docstring)."""
    kinds: dict[str, set[str]] = defaultdict(set)
    with store.session() as s:
        q = select(SignalRow.unit_id, SignalRow.kind).where(SignalRow.retracted_at.is_(None)).distinct()
        for unit_id, kind in s.execute(q):
            kinds[unit_id].add(kind)
        scanned = select(SignalScanRow.unit_id).where(SignalScanRow.unit_id == UnitRow.unit_id).exists()
        q2 = select(UnitRow.unit_id, UnitRow.outcome, UnitRow.has_error).where(~scanned)
        for unit_id, outcome, has_error in s.execute(q2):
            if outcome == "fail":
                kinds[unit_id].add("outcome_fail")
            elif outcome == "unknown" and has_error:
                kinds[unit_id].add("error_span")
    return dict(kinds)


def signal_mixes(store: Store) -> dict[int, dict[str, int]]:
    """``{signature id: {signal kind: member units with it}}`` of every signature with members,
    each mix most frequent first (see module docstring)."""
    with store.session() as s:
        members = {u: sid for u, sid in s.execute(select(MemberRow.unit_id, MemberRow.signature_id)
                                                  .where(MemberRow.signature_id.is_not(None))) if sid is not None}
    kinds = unit_kinds(store)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for unit_id, sid in members.items():
        for kind in kinds.get(unit_id, ()):
            counts[sid][kind] += 1
    return {sid: ordered(c) for sid, c in counts.items()}
