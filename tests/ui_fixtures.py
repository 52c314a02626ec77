"""A small real workspace for the annotation-app tests: units, one signature, two accounts.

Units are built from the domain types and written through ``Store.add_units``; the
signature and its members are written as rows of the store (what ``build_signatures``
writes), so the tests need no embedding model.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow
from assay._web.auth import add_user
from assay.settings import Settings
from assay.traces import Message, Span, ToolCall, Unit

PASSWORD = "correct horse battery"
XSS_UNIT = "unit-xss"
XSS_TEXT = ('<script>window.__xss = 1</script> <img src=x onerror="window.__xss = 2"> '
            '[click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">link</a>')


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def make_unit(unit_id: str, n_tools: int = 1, user_text: str = "Please book the flight.",
              tool: str = "book_reservation") -> Unit:
    """A failed unit: a user turn, an assistant turn, ``n_tools`` calls of ``tool``, the last one an error."""
    trace = _hex(unit_id, 32)
    t = 1_700_000_000_000_000_000
    spans = [Span(trace_id=trace, span_id=_hex(unit_id + "llm", 16), name="chat", kind="llm", start_ns=t,
                  end_ns=t + 1_000_000, input_messages=(Message(role="user", content=user_text),),
                  output_messages=(Message(role="assistant", content=f"Working on {unit_id}."),))]
    for i in range(n_tools):
        start = t + (i + 2) * 1_000_000
        failed = i == n_tools - 1
        spans.append(Span(
            trace_id=trace, span_id=_hex(f"{unit_id}tool{i}", 16), name=tool, kind="tool",
            start_ns=start, end_ns=start + 500_000, status="error" if failed else "ok",
            tool_call=ToolCall(id=f"call{i}", name=tool,
                               arguments={"flight": f"HAT{i:03d}", "amount": 120 + i, "note": "<b>x</b>"}),
            tool_result="Error: payment amount does not add up" if failed else '{"ok": true}'))
    return Unit(unit_id=unit_id, kind="trace", source="test", spans=tuple(spans), outcome="fail")


def seed(store: Store, n_units: int = 6, tools_per_unit: int = 1) -> list[str]:
    """Write ``n_units`` units plus the XSS unit as one signature (id 1), and two accounts:
    ``admin`` (admin) and ``ann`` (annotator), both with :data:`PASSWORD`. Returns unit ids,
    nearest-the-centroid first (the XSS unit first)."""
    ids = [XSS_UNIT] + [f"unit-{i:02d}" for i in range(n_units)]
    units = [make_unit(XSS_UNIT, user_text=XSS_TEXT)] + [make_unit(u, tools_per_unit) for u in ids[1:]]
    store.add_units(units)
    now = datetime.now(UTC)
    with store.session() as s:
        s.add(SignatureRow(id=1, structural_key="tool=book_reservation | error=payment amount does not add up",
                           label="book_reservation: payment amount does not add up", keywords=["payment"],
                           size=len(ids), representative_unit=ids[0], status="new"))
        s.flush()
        for rank, uid in enumerate(ids):
            s.add(MemberRow(unit_id=uid, signature_id=1, structural_key="tool=book_reservation",
                            distance=rank / 10, seen_at=now, assignment="cluster"))
    add_user(store, "admin", PASSWORD, "admin")
    add_user(store, "ann", PASSWORD, "annotator")
    return ids


def settings_for(workspace: Path) -> Settings:
    """Settings of a workspace with its SQLite store."""
    return Settings(workspace=workspace, store_url=f"sqlite:///{workspace / 'assay.db'}",
                    session_secret="test-secret")


ANCHORS = ("the booking is wrong", "mostly wrong", "right but clumsy", "right, one slip", "right and clear")
PAIR_TASKS = ("task-a", "task-b", "task-c")


def seed_scales(store: Store) -> dict[str, list[str]]:
    """Beside :func:`seed`: signature 2 with a pairwise criterion ``better`` over six units, two per task
    (``task_id`` attribute), and signature 3 with an ordinal criterion ``quality`` (levels 1..5 with
    anchors) over four units. Returns the unit ids per signature name ("pairwise", "ordinal")."""
    from assay.annotations import OrdinalLevel, OrdinalScale, PairwiseScale, add_criterion

    pair_ids = [f"run-{task}-{k}" for task in PAIR_TASKS for k in (1, 2)]
    ordinal_ids = [f"graded-{i}" for i in range(4)]
    units = [make_unit(u).model_copy(update={"attributes": {"task_id": u.rsplit("-", 1)[0]}}) for u in pair_ids]
    store.add_units(units + [make_unit(u) for u in ordinal_ids])
    now = datetime.now(UTC)
    with store.session() as s:
        for sid, ids, label in ((2, pair_ids, "two runs of one task"), (3, ordinal_ids, "booking quality")):
            s.add(SignatureRow(id=sid, structural_key=f"key-{sid}", label=label, keywords=[], size=len(ids),
                               representative_unit=ids[0], status="new"))
            s.flush()
            for rank, uid in enumerate(ids):
                s.add(MemberRow(unit_id=uid, signature_id=sid, structural_key=f"key-{sid}", distance=rank / 10,
                                seen_at=now, assignment="cluster"))
    add_criterion(store, "Which run handles the booking better?", name="better", signature_id=2,
                  scale=PairwiseScale())
    add_criterion(store, "How good is the booking?", name="quality", signature_id=3,
                  scale=OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=a) for v, a in enumerate(ANCHORS, 1))))
    return {"pairwise": pair_ids, "ordinal": ordinal_ids}


POLICY = ("# Airline policy\n\nThe agent must confirm every booking with the user.\n\n"
          "## Baggage\n\nEach extra baggage costs 50 dollars.\n\n## Refunds\n\nRefunds go to the original payment.")
MARKDOWN_REPLY = ("**Origin:** SFO <script>window.__xss = 5</script> [pay](javascript:window.__xss=6) "
                  "[docs](https://example.com/fares)\n\n| fare | price |\n|:-----|------:|\n| basic | 120 |")
FLIGHTS = [{"flight": "HAT001", "price": 120, "seats": {"economy": 3, "business": 1}},
           {"flight": "HAT002", "price": 140, "seats": {"economy": 0, "business": 2}, "note": "x" * 400}]


def make_replayed_unit(unit_id: str = "replayed") -> Unit:
    """A replayed run (times numbered by the reader, as tau-bench does): a system policy, a user request, an
    assistant reply in markdown (with raw HTML and a javascript: link in it), a tool call whose result is a list
    of records, and the task instruction and outcome the source recorded."""
    trace = _hex(unit_id, 32)
    ms = 1_000_000
    system = Message(role="system", content=POLICY)
    user = Message(role="user", content="I want to fly from SFO to JFK on May 20.")
    reply = Message(role="assistant", content=MARKDOWN_REPLY)
    spans = (
        Span(trace_id=trace, span_id=_hex(unit_id + "a", 16), name="chat", kind="llm", start_ns=ms, end_ns=2 * ms,
             input_messages=(system, user), output_messages=(reply,), synthetic_time=True),
        Span(trace_id=trace, span_id=_hex(unit_id + "b", 16), name="search", kind="tool", start_ns=3 * ms,
             end_ns=4 * ms, synthetic_time=True,
             tool_call=ToolCall(id="c1", name="search_flights", arguments={"origin": "SFO", "dest": "JFK"}),
             tool_result=json.dumps(FLIGHTS)),
    )
    return Unit(unit_id=unit_id, kind="trace", source="replay-test", spans=spans, outcome="fail", reward=0.0,
                attributes={"instruction": "You are Mia. Book the cheapest flight SFO to JFK on May 20.",
                            "ended_by": "user"})


LOOP_CRITERION = "no-cancel"
LOOP_TEXT = "The agent must never call cancel_reservation without the user's explicit confirmation."


def seed_loop(store: Store, n: int = 10, annotators: tuple[str, ...] = ("ann",)) -> dict[str, list[str]]:
    """Beside :func:`seed`: signature 4 with ``n`` units that call ``search_flights`` (labelled pass) and ``n``
    that call ``cancel_reservation`` (labelled fail) by each of ``annotators``, and its criterion
    :data:`LOOP_CRITERION`, whose text names the forbidden tool, so drafting proposes a code check that agrees
    with every label. Returns the unit ids by label."""
    from assay.annotations import Annotation, add_annotations, add_criterion

    ids = {"pass": [f"loop-pass-{i:02d}" for i in range(n)], "fail": [f"loop-fail-{i:02d}" for i in range(n)]}
    store.add_units([make_unit(u, tool="search_flights") for u in ids["pass"]]
                    + [make_unit(u, tool="cancel_reservation") for u in ids["fail"]])
    now = datetime.now(UTC)
    members = [u for pair in zip(ids["fail"], ids["pass"], strict=True) for u in pair]
    with store.session() as s:
        s.add(SignatureRow(id=4, structural_key="tool=cancel_reservation", label="cancelled without asking",
                           keywords=[], size=len(members), representative_unit=members[0], status="new"))
        s.flush()
        for rank, uid in enumerate(members):
            s.add(MemberRow(unit_id=uid, signature_id=4, structural_key="tool=cancel_reservation",
                            distance=rank / 100, seen_at=now, assignment="cluster"))
    add_criterion(store, LOOP_TEXT, name=LOOP_CRITERION, signature_id=4)
    add_annotations(store, [Annotation(unit_id=u, annotator=who, label=label, criterion=LOOP_CRITERION)
                            for who in annotators for label, units in ids.items() for u in units])
    return ids
