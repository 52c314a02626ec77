"""The rare-severe channel: units flagged severe go to their own review queue, whatever the
size of their signature (a one-off data leak must not wait behind a thousand timeouts).

A unit is flagged by

- a rule of ``[severe]`` in ``assay.toml`` (:class:`~assay.settings.SevereRules`): a call to
  a listed tool, an error whose normalized type contains a listed text, a listed keyword
  in any step (system prompts excluded); matching is case-insensitive;
- a low user-feedback score found in the trace: a span or unit attribute named in
  ``feedback_attributes`` holding a number in 0..1 (or a boolean thumbs up/down), or an
  OpenInference annotation / evaluation whose name contains ``feedback``
  (``annotations.N.annotation.name`` + ``.score``), below ``feedback_below``;
- a person (:func:`flag_unit`).

Rule and feedback flags are recomputed whenever a unit's content or the rules change
(:func:`scan_severe` keeps a hash of both per unit); person flags are never removed.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select

from assay._store import Store
from assay._store.tables import (
    AnnotationRow,
    MemberRow,
    SevereFlagRow,
    SevereScanRow,
    SignatureRow,
    UnitRow,
    utcnow,
)
from assay.exceptions import NotFoundError, UsageError
from assay.settings import SevereRules
from assay.signals.people import flag_signal
from assay.signals.store import write_signals
from assay.signatures.impact import aware
from assay.signatures.keys import error_type
from assay.signatures.model import FlagSource, SevereFlag, SevereItem
from assay.traces.model import Step, Unit
from assay.traces.timeline import step_timeline

_SCAN_CHUNK = 200
_SOURCE_ORDER: dict[str, int] = {"person": 0, "feedback": 1, "rule": 2}
_OI_FEEDBACK = re.compile(r"^(?:(?:trace|session)\.)?(annotations|evaluations)\.(\d+)\.(?:annotation|evaluation)\."
                          r"(name|score)$")


def rules_hash(rules: SevereRules) -> str:
    """SHA-256 (hex) of the rules: a unit scanned under other rules is scanned again."""
    return hashlib.sha256(rules.model_dump_json().encode()).hexdigest()


def _as_score(value: object) -> float | None:
    """A feedback value as a 0..1 score: booleans are 0/1; numbers outside 0..1 are not scores."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip()):
        try:
            score = float(value)
        except ValueError:
            return None
        return score if 0.0 <= score <= 1.0 else None
    return None


def _openinference_feedback(attributes: dict[str, Any]) -> Iterable[tuple[str, float]]:
    entries: dict[tuple[str, str], dict[str, object]] = defaultdict(dict)
    for key, value in attributes.items():
        m = _OI_FEEDBACK.match(key)
        if m:
            prefix = key[:key.index(m.group(1))] + m.group(1)
            entries[(prefix, m.group(2))][m.group(3)] = value
    for (prefix, n), entry in sorted(entries.items()):
        score = _as_score(entry.get("score"))
        if "feedback" in str(entry.get("name", "")).lower() and score is not None:
            yield f"{prefix}.{n} ({entry['name']})", score


def feedback_scores(unit: Unit, attribute_names: Sequence[str]) -> list[tuple[str, float]]:
    """User-feedback scores (0..1) found in a unit: ``[(where, score)]``, unit attributes first,
    then spans in order (see module docstring for what counts)."""
    found: list[tuple[str, float]] = []
    for attributes in [unit.attributes, *(s.attributes for s in unit.spans)]:
        for name in attribute_names:
            score = _as_score(attributes.get(name))
            if score is not None:
                found.append((name, score))
        found.extend(_openinference_feedback(attributes))
    return found


def severe_reasons(unit: Unit, steps: list[Step], rules: SevereRules) -> list[tuple[FlagSource, str]]:
    """Why rules or feedback flag this unit severe: ``[(source, reason)]``, empty when they do not."""
    out: list[tuple[FlagSource, str]] = []
    tools = {t.lower() for t in rules.tools}
    for name in sorted({s.tool_name for s in steps if s.kind == "tool_call" and s.tool_name}):
        if name.lower() in tools:
            out.append(("rule", f"tool {name!r} called"))
    error_types = {error_type(s.text) for s in steps if s.is_error}
    for wanted in rules.error_types:
        hit = next((e for e in sorted(error_types) if wanted.lower() in e), None)
        if hit is not None:
            out.append(("rule", f"error type {hit!r} matches {wanted!r}"))
    texts = [s.text.lower() for s in steps if s.kind != "system"]
    for word in rules.keywords:
        pattern = re.compile(rf"(?<!\w){re.escape(word.lower())}(?!\w)")
        if any(pattern.search(t) for t in texts):
            out.append(("rule", f"keyword {word!r}"))
    if rules.feedback_below is not None:
        for where, score in feedback_scores(unit, rules.feedback_attributes):
            if score < rules.feedback_below:
                out.append(("feedback", f"{where} = {score:g} < {rules.feedback_below:g}"))
    return list(dict.fromkeys(out))


def scan_loaded(store: Store, rules: SevereRules, units: Sequence[Unit], steps: Sequence[list[Step]]) -> int:
    """Check units already loaded (with their timelines) against the rules and bring their
    rule and feedback flags up to date: flags still found are kept (with their time), flags
    no longer found are removed. Returns the number of units flagged."""
    digest = rules_hash(rules)
    ids = [u.unit_id for u in units]
    flagged = 0
    with store.session() as s:
        hashes = dict(s.execute(select(UnitRow.unit_id, UnitRow.content_hash).where(UnitRow.unit_id.in_(ids))).all())
        old = {(r.unit_id, r.source, r.reason): r for r in s.scalars(
            select(SevereFlagRow).where(SevereFlagRow.unit_id.in_(ids), SevereFlagRow.source != "person"))}
        scans = {r.unit_id: r for r in s.scalars(select(SevereScanRow).where(SevereScanRow.unit_id.in_(ids)))}
        for unit, timeline in zip(units, steps, strict=True):
            reasons = severe_reasons(unit, timeline, rules)
            flagged += bool(reasons)
            for source, reason in dict.fromkeys((src, text[:500]) for src, text in reasons):
                if old.pop((unit.unit_id, source, reason), None) is None:
                    s.add(SevereFlagRow(unit_id=unit.unit_id, source=source, reason=reason))
            scan = scans.get(unit.unit_id) or SevereScanRow(unit_id=unit.unit_id)
            scan.content_hash, scan.rules_hash, scan.scanned_at = hashes.get(unit.unit_id, ""), digest, utcnow()
            s.add(scan)
        for stale in old.values():
            s.delete(stale)
    return flagged


def scan_severe(store: Store, rules: SevereRules, unit_ids: Sequence[str] | None = None) -> int:
    """Check units against the severe rules, skipping those already checked with the same
    content and rules, and store their rule and feedback flags.

    Args:
        store: the store.
        rules: ``settings.severe``.
        unit_ids: the units to consider (default: every unit in the store, failed or not:
            a passing run with a thumbs-down is exactly what clustering failed units misses).

    Returns:
        the number of units (re)scanned.
    """
    digest = rules_hash(rules)
    with store.session() as s:
        current = dict(s.execute(select(UnitRow.unit_id, UnitRow.content_hash)).all())
        done = {(u, h) for u, h, r in s.execute(select(SevereScanRow.unit_id, SevereScanRow.content_hash,
                                                       SevereScanRow.rules_hash)) if r == digest}
    wanted = sorted(current) if unit_ids is None else [u for u in unit_ids if u in current]
    todo = [u for u in wanted if (u, current[u]) not in done]
    for start in range(0, len(todo), _SCAN_CHUNK):
        units = store.units(todo[start:start + _SCAN_CHUNK])
        scan_loaded(store, rules, units, [step_timeline(u) for u in units])
    return len(todo)


def flag_unit(store: Store, unit_id: str, reason: str, flagged_by: str = "") -> SevereFlag:
    """A person flags a unit severe: it joins the rare-severe queue (idempotent per reason), and the flag
    is a failure signal (kind ``flag``, :func:`assay.signals.people.flag_signal`).

    Raises:
        NotFoundError: no such unit.
        UsageError: empty reason.
    """
    if not reason.strip():
        raise UsageError("a severe flag needs a reason")
    with store.session() as s:
        if s.get(UnitRow, unit_id) is None:
            raise NotFoundError("unit", unit_id)
        row = s.scalar(select(SevereFlagRow).where(SevereFlagRow.unit_id == unit_id, SevereFlagRow.source == "person",
                                                   SevereFlagRow.reason == reason.strip()[:500]))
        if row is None:
            row = SevereFlagRow(unit_id=unit_id, source="person", reason=reason.strip()[:500], flagged_by=flagged_by)
            s.add(row)
            s.flush()
            signal = flag_signal(unit_id, flagged_by, row.reason, store.signals)
            write_signals(s, [signal] if signal is not None else [])
        return SevereFlag(source="person", reason=row.reason, flagged_by=row.flagged_by,
                          created_at=aware(row.created_at))


def severe_queue(store: Store, include_reviewed: bool = False) -> list[SevereItem]:
    """The rare-severe review queue: every flagged unit, whatever its signature's size.

    Order: units a person flagged first, then low feedback, then rule hits; within those,
    the earliest flagged first (then unit id).

    Args:
        store: the store (flags come from :func:`scan_severe`, the signature builds and
            :func:`flag_unit`).
        include_reviewed: also list units a human annotated after they were first flagged.
    """
    with store.session() as s:
        flags = list(s.scalars(select(SevereFlagRow).order_by(SevereFlagRow.created_at, SevereFlagRow.id)))
        ids = {f.unit_id for f in flags}
        last_human = dict(s.execute(select(AnnotationRow.unit_id, func.max(AnnotationRow.created_at))
                                    .where(AnnotationRow.annotator_kind == "human", AnnotationRow.unit_id.in_(ids))
                                    .group_by(AnnotationRow.unit_id)).all())
        member = dict(s.execute(select(MemberRow.unit_id, MemberRow.signature_id)
                                .where(MemberRow.unit_id.in_(ids))).all())
        sizes = dict(s.execute(select(SignatureRow.id, SignatureRow.size)).all())
    by_unit: dict[str, list[SevereFlagRow]] = defaultdict(list)
    for f in flags:
        by_unit[f.unit_id].append(f)
    items = []
    for unit_id, rows in by_unit.items():
        reviewed = unit_id in last_human and last_human[unit_id] >= rows[0].created_at
        if reviewed and not include_reviewed:
            continue
        sid = member.get(unit_id)
        items.append(SevereItem(
            unit_id=unit_id, signature_id=sid, signature_size=sizes.get(sid, 0) if sid is not None else 0,
            reviewed=reviewed,
            flags=[SevereFlag(source=r.source, reason=r.reason, flagged_by=r.flagged_by,
                              created_at=aware(r.created_at)) for r in rows]))
    return sorted(items, key=lambda i: (min(_SOURCE_ORDER[f.source] for f in i.flags),
                                        min(f.created_at for f in i.flags if f.created_at), i.unit_id))
