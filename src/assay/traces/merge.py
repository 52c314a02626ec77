"""Copies of one span (same trace id and span id) merged into one: the most complete copy wins,
field by field.

Emitters send a span more than once: an in-progress copy (no end time, part of its attributes) and the
final one, or a retried batch. Whatever the order the copies arrive in (within one batch or across
requests), :func:`merge_copies` gives the same span:

* the *primary* copy is the most complete one: ended (``end_ns`` > 0) before in progress, then a set
  status before ``unset``, then more attributes, more events, the later end time (ties broken by the
  content itself, so the choice never depends on arrival order);
* every field takes the primary's value, or the other copy's where the primary has none (no end time,
  status ``unset``, no messages, no tool result, unknown tokens ...); the status message follows the
  status it belongs to;
* attributes are the union (the primary's value wins a conflict); events are the union, in time order;
* flags are the union, except ``content_not_captured`` (kept only when no copy carried content) and the
  tree flags ``orphan`` / ``clock_skew`` (the store sets those); when the copies differed the span is
  flagged ``merged``.

Copies that differ only in their flags, or only in what joined log records added, are the same copy
(a retried batch is not a merge).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from assay.traces.model import Span, SpanEvent

_TREE_FLAGS = frozenset({"orphan", "clock_skew"})
_OWN = frozenset({"trace_id", "span_id", "attributes", "events", "flags", "status", "status_message"})


def _event_key(ev: SpanEvent) -> str:
    return json.dumps(ev.model_dump(mode="json"), sort_keys=True, default=str)


def _wire(span: Span) -> str:
    """What a copy says, as canonical JSON: no flags, no joined log records (and then none of the messages
    they may have filled)."""
    logs = any(e.source == "log_record" for e in span.events)
    data = span.model_dump(mode="json", exclude={"flags", "events", *(("input_messages", "output_messages")
                                                                      if logs else ())})
    data["events"] = [e.model_dump(mode="json") for e in span.events if e.source == "span_event"]
    return json.dumps(data, sort_keys=True, default=str)


def same_copy(a: Span, b: Span) -> bool:
    """True when two copies of a span say the same (flags and joined log records aside)."""
    return _wire(a) == _wire(b)


def _completeness(span: Span) -> tuple[Any, ...]:
    return (span.end_ns > 0, span.status != "unset", len(span.attributes), len(span.events), span.end_ns,
            _wire(span))


def _empty(name: str, value: Any) -> bool:
    """A field the primary copy leaves unknown: no value, no end time, no messages, kind ``other``."""
    if isinstance(value, bool):
        return False
    return value is None or value == "" or value == 0 or value == () or (name == "kind" and value == "other")


def _merge_two(p: Span, o: Span) -> Span:
    fields = {name: getattr(o if _empty(name, getattr(p, name)) else p, name)
              for name in Span.model_fields if name not in _OWN}
    status, message = (p.status, p.status_message) if p.status != "unset" else (o.status, o.status_message)
    if message is None and o.status == status:
        message = o.status_message
    seen: dict[str, SpanEvent] = {}
    for ev in (*p.events, *o.events):
        seen.setdefault(_event_key(ev), ev)
    flags = (set(p.flags) | set(o.flags)) - _TREE_FLAGS - {"content_not_captured"}
    if "content_not_captured" in p.flags and "content_not_captured" in o.flags:
        flags.add("content_not_captured")
    return p.model_copy(update={**fields, "status": status, "status_message": message,
                                "attributes": {**o.attributes, **p.attributes},
                                "events": tuple(sorted(seen.values(), key=lambda e: e.time_ns)),
                                "flags": tuple(sorted(flags))})


def merge_copies(copies: Sequence[Span]) -> tuple[Span, bool]:
    """Merge copies of one span (module docstring).

    Args:
        copies: at least one span, all with the same trace id and span id, in any order.

    Returns:
        ``(the merged span, whether the copies differed)``; with identical copies the first is returned
        (flags of all copies joined) and False.

    Raises:
        ValueError: no copies, or copies of different spans.
    """
    if not copies:
        raise ValueError("merge_copies needs at least one span")
    if len({(c.trace_id, c.span_id) for c in copies}) != 1:
        raise ValueError("merge_copies got copies of different spans")
    distinct: dict[str, Span] = {}
    for c in copies:
        distinct.setdefault(_wire(c), c)
    if len(distinct) == 1:
        flags = tuple(sorted({f for c in copies for f in c.flags}))
        first = copies[0]
        return (first if flags == first.flags else first.model_copy(update={"flags": flags})), False
    ranked = sorted(copies, key=_completeness, reverse=True)
    merged = ranked[0]
    for other in ranked[1:]:
        merged = _merge_two(merged, other)
    return merged.model_copy(update={"flags": tuple(sorted({*merged.flags, "merged"}))}), True
