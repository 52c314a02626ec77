"""Signatures read the store's failure signals: feedback, failed evaluator scores, human labels and
open-coding notes shape the failure-local text; population detectors count; a never-scanned unit
adds what the detectors find on it alone; each signature carries its signal mix. Real tau-bench
retail runs, a real SQLite file; the build uses the real embedding model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assay._store import Store
from assay.annotations import Annotation, add_annotations
from assay.settings import Settings
from assay.signals import (
    FailureSignal,
    FeedbackLineage,
    JudgeLineage,
    add_signals,
    detect,
    list_signals,
    update_signals,
)
from assay.signatures import build_signatures, failure_text, list_signatures
from assay.signatures.build import signals_for
from assay.signatures.mix import mix_text, signal_mixes
from assay.signatures.stored import scanned_units, within
from assay.traces import read_file, step_timeline
from tests.conftest import RETAIL

SETTINGS = Settings.model_validate({"min_cluster_size": 3})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    st = Store("sqlite:///" + str(tmp_path_factory.mktemp("sigsig") / "a.db"))
    st.add_units(read_file(RETAIL).units)
    yield st
    st.close()


def _failed(store: Store) -> list[str]:
    return store.select_unit_ids("failed")


def test_a_never_scanned_unit_adds_what_the_detectors_find_and_keeps_what_the_store_has(store: Store) -> None:
    unit_id = _failed(store)[0]
    unit = store.unit(unit_id)
    steps = step_timeline(unit)
    note = FailureSignal(unit_id=unit_id, source="feedback", kind="thumbs_down", strength=0.7,
                         evidence="user comment: you refused my refund although the parcel was late", step=None,
                         time_ns=0, lineage=FeedbackLineage(channel="api"))
    add_signals(store, [note])
    assert unit_id not in scanned_units(store, [unit_id])
    [found] = signals_for(store, [unit], [steps], SETTINGS)
    assert note in found
    assert {s.key for s in detect(unit, SETTINGS.signals)} <= {s.key for s in found}  # detected on it alone
    assert len({s.key for s in found}) == len(found)  # nothing twice
    assert "refused my refund although the parcel was late" in failure_text(unit, found, steps)


def test_a_scanned_unit_reads_only_the_store_population_detectors_included(store: Store) -> None:
    update_signals(store, SETTINGS.signals)
    failed = _failed(store)
    units = store.units(failed)
    steps = [step_timeline(u) for u in units]
    found = signals_for(store, units, steps, SETTINGS)
    assert scanned_units(store, failed) == set(failed)
    for unit, signals in zip(units, found, strict=True):
        assert {s.key for s in signals} == {s.key for s in list_signals(store, unit_id=unit.unit_id)}
    # long_session is fitted on every scanned unit: a lone unit's detection never has it
    stored_long = {s.unit_id for s in list_signals(store, kind="long_session")}
    alone_long = {u.unit_id for u in units if any(s.kind == "long_session" for s in detect(u, SETTINGS.signals))}
    assert alone_long == set()
    assert stored_long & set(failed) == {u.unit_id for u, f in zip(units, found, strict=True)
                                         if any(s.kind == "long_session" for s in f)}


def test_labels_and_open_coding_notes_shape_the_text(store: Store) -> None:
    unit_id = _failed(store)[1]
    unit = store.unit(unit_id)
    steps = step_timeline(unit)
    add_annotations(store, [Annotation(unit_id=unit_id, annotator="li", label="fail", severity=3,
                                       rationale="exchanged the wrong item without asking")])
    add_signals(store, [FailureSignal(unit_id=unit_id, source="open_coding", kind="open_coding_note", strength=0.5,
                                      evidence="the agent picked the item variant the user never confirmed",
                                      step=steps[-1].index, time_ns=0,
                                      lineage=JudgeLineage(model="gpt-4o-mini", prompt_version="p1"))])
    [found] = signals_for(store, [unit], [steps], SETTINGS)
    text = failure_text(unit, found, steps)
    assert {"human_fail", "open_coding_note"} <= {s.kind for s in found}
    assert "exchanged the wrong item without asking" in text
    assert text.startswith("labelled fail by a person")  # the strongest signal (0.9) comes first


def test_a_stored_step_past_the_end_becomes_a_whole_unit_signal(store: Store) -> None:
    unit = store.unit(_failed(store)[2])
    steps = step_timeline(unit)
    far = FailureSignal(unit_id=unit.unit_id, source="open_coding", kind="open_coding_note", strength=0.4,
                        evidence="x", step=steps[-1].index + 5, time_ns=0,
                        lineage=JudgeLineage(model="m", prompt_version="p"))
    near = far.model_copy(update={"step": steps[-1].index})
    assert [s.step for s in within([far, near], steps)] == [None, steps[-1].index]


def test_mix_in_words() -> None:
    assert mix_text({"escalation": 31, "thumbs_down": 12, "evaluator_fail": 4}) == \
        "31 escalations, 12 thumbs-down, 4 evaluator fails"
    assert mix_text({"tool_error": 1, "escalation": 1, "user_repeat": 2}, limit=2) == \
        "1 tool error, 1 escalation, 2 more"
    assert mix_text({}) == ""


def test_signatures_carry_their_signal_mix(store: Store) -> None:
    sigs = build_signatures(store, SETTINGS)
    assert sigs
    mixes = signal_mixes(store)
    for sig in sigs:
        assert sig.signal_mix == mixes.get(sig.id, {})
        recorded = sum(u.outcome == "fail" for u in store.units(sig.unit_ids))
        assert sig.signal_mix.get("outcome_fail", 0) == recorded  # members that recorded reward 0
        assert all(0 < n <= sig.size for n in sig.signal_mix.values())
        assert list(sig.signal_mix.values()) == sorted(sig.signal_mix.values(), reverse=True)
        first, n = next(iter(sig.signal_mix.items()))
        assert sig.signal_mix_text.startswith(f"{n} ") and mix_text({first: n}) in sig.signal_mix_text
        for unit_id in sig.unit_ids:
            for kind in {s.kind for s in list_signals(store, unit_id=unit_id)}:
                assert kind in sig.signal_mix
    dumped = list_signatures(store)[0].model_dump(mode="json")
    assert dumped["signal_mix_text"] and dumped["signal_mix"]
    pairs = [(s.structural_key, s.label) for s in sigs]
    assert len(pairs) == len(set(pairs))
