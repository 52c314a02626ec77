"""A small real workspace for the annotation-app tests: units, one signature, two accounts.

Units are built from the domain types and written through ``Store.add_units``; the
signature and its members are written as rows of the store (what ``build_signatures``
writes), so the tests need no embedding model.
"""

from __future__ import annotations

import hashlib
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


def make_unit(unit_id: str, n_tools: int = 1, user_text: str = "Please book the flight.") -> Unit:
    """A failed unit: a user turn, an assistant turn, ``n_tools`` tool calls, the last one an error."""
    trace = _hex(unit_id, 32)
    t = 1_700_000_000_000_000_000
    spans = [Span(trace_id=trace, span_id=_hex(unit_id + "llm", 16), name="chat", kind="llm", start_ns=t,
                  end_ns=t + 1_000_000, input_messages=(Message(role="user", content=user_text),),
                  output_messages=(Message(role="assistant", content=f"Working on {unit_id}."),))]
    for i in range(n_tools):
        start = t + (i + 2) * 1_000_000
        failed = i == n_tools - 1
        spans.append(Span(
            trace_id=trace, span_id=_hex(f"{unit_id}tool{i}", 16), name="book_reservation", kind="tool",
            start_ns=start, end_ns=start + 500_000, status="error" if failed else "ok",
            tool_call=ToolCall(id=f"call{i}", name="book_reservation",
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
