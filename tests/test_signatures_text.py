"""The failure-local and evidence texts of failed units, on real tau-bench retail runs (no embedding model needed)."""

from __future__ import annotations

import pytest

from assay.exceptions import UsageError
from assay.settings import Settings
from assay.signals import FailureSignal, detect
from assay.signatures import failure_text, key_text
from assay.signatures.build import unit_texts
from assay.signatures.evidence import LAST_STEPS, evidence_text, local_context, render_step, signal_words
from assay.signatures.keys import unit_key
from assay.traces import Unit, read_file, step_timeline
from tests.conftest import RETAIL

# task 41: the agent switched a puzzle, then tried to change the address of the (no longer pending)
# order: "Error: non-pending order cannot be modified" at step 20, a user correction at 16 and a
# hand-off at 23. Task 28: no detector points to a step (only the recorded outcome).
TOOL_ERROR_RUN = "tau-retail/task-41/trial-41"
QUIET_RUN = "tau-retail/task-28/trial-28"


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {u.unit_id: u for u in read_file(RETAIL).units}


def test_text_is_the_signal_and_the_steps_around_it(units: dict[str, Unit]) -> None:
    unit = units[TOOL_ERROR_RUN]
    signals = detect(unit)
    assert {(s.kind, s.step) for s in signals} >= {("tool_error", 20), ("user_correction", 16), ("escalation", 23)}
    text = failure_text(unit, signals)
    lines = text.splitlines()
    assert lines[0].startswith("tool error: modify_pending_order_address")  # strongest signal first
    steps = {s.index: s for s in step_timeline(unit)}
    # the failing call, its error, the step before and the agent's next turn, in timeline order
    window = [render_step(steps[i]) for i in (18, 19, 20, 21)]
    assert lines[1:5] == window
    assert lines[3] == "tool result modify_pending_order_address [error]: non-pending order cannot be modified"
    assert any(line.startswith("user corrects the agent: 'that's not correct'") for line in lines)
    assert any(line.startswith("handed off to a human: tool transfer_to_human_agents") for line in lines)
    assert "retail agent policy" not in text.lower()  # system prompt left out
    assert render_step(steps[2]) not in lines  # the opening request is far from every signal
    assert "#W4082615" not in text and "<ID>" in text  # variable parts masked
    assert len(text) <= 1500


def test_context_pairs_a_tool_call_with_its_result(units: dict[str, Unit]) -> None:
    shown = [s for s in step_timeline(units[TOOL_ERROR_RUN]) if s.kind != "system"]
    at = {s.index: j for j, s in enumerate(shown)}
    assert [s.index for s in local_context(shown, at[19])] == [18, 19, 20, 21]  # call -> its result too
    assert [s.index for s in local_context(shown, at[20])] == [18, 19, 20, 21]  # result -> its call too
    assert [s.index for s in local_context(shown, at[16])] == [15, 16, 21]  # user turn: next agent answer


def test_without_a_step_the_text_is_how_the_unit_ended(units: dict[str, Unit]) -> None:
    unit = units[QUIET_RUN]
    signals = [s for s in detect(unit) if s.kind == "outcome_fail"]  # since many_actions, not its only signal
    text = failure_text(unit, signals)
    steps = [s for s in step_timeline(unit) if s.kind != "system"]
    assert text.splitlines() == ["how it ended:", *[render_step(s) for s in steps[-LAST_STEPS:]]]
    assert "failed outcome" not in text  # the recorded outcome says nothing about what went wrong
    assert failure_text(unit, []) == text


def test_a_signal_without_a_step_adds_its_evidence(units: dict[str, Unit]) -> None:
    unit = units[QUIET_RUN]
    note = FailureSignal(unit_id=unit.unit_id, source="label", kind="human_fail", strength=0.9,
                         evidence="Refund total counts the cancelled order twice", time_ns=0,
                         lineage={"type": "annotator", "annotator": "ana"})
    text = failure_text(unit, [note])
    assert text.splitlines()[0] == "labelled fail by a person: refund total counts the cancelled order twice"
    assert "how it ended:" in text


def test_signals_of_another_unit_or_past_the_end_are_refused(units: dict[str, Unit]) -> None:
    unit, other = units[TOOL_ERROR_RUN], units[QUIET_RUN]
    with pytest.raises(UsageError, match="signal of unit"):
        failure_text(unit, detect(other))
    past = detect(unit)[1].model_copy(update={"step": 999})
    with pytest.raises(UsageError, match="past the end"):
        failure_text(unit, [past])


def test_the_setting_keeps_the_key_text_for_comparison(units: dict[str, Unit]) -> None:
    chosen = [units[TOOL_ERROR_RUN], units[QUIET_RUN]]
    steps = [step_timeline(u) for u in chosen]
    keys = [unit_key(u, s) for u, s in zip(chosen, steps, strict=True)]
    old = unit_texts(chosen, steps, keys, Settings.model_validate({"signature_text": "key"}))
    assert old == [key_text(u) for u in chosen]
    failure = Settings.model_validate({"signature_text": "failure"})
    new = unit_texts(chosen, steps, keys, failure)
    assert new == [failure_text(u, detect(u)) for u in chosen] and new != old
    given = unit_texts(chosen, steps, keys, failure, {TOOL_ERROR_RUN: []})
    assert given[0] == failure_text(chosen[0], []) and given[1] == new[1]


def test_evidence_text_is_the_signal_lines_alone(units: dict[str, Unit]) -> None:
    unit = units[TOOL_ERROR_RUN]
    signals = detect(unit)
    text = evidence_text(unit, signals)
    lines = text.splitlines()
    assert lines[0].startswith("tool error: modify_pending_order_address")  # strongest signal first
    assert any(line.startswith("user corrects the agent: 'that's not correct'") for line in lines)
    assert any(line.startswith("handed off to a human: tool transfer_to_human_agents") for line in lines)
    steps = {s.index: s for s in step_timeline(unit)}
    assert not {render_step(steps[i]) for i in (18, 19, 20, 21)} & set(lines)  # the steps around are left out
    words = {signal_words(s.kind) for s in signals}
    assert all(line.split(":")[0] in words for line in lines)  # one line per signal, nothing else
    assert "failed outcome" not in text and "#W4082615" not in text
    assert len(text) < len(failure_text(unit, signals))


def test_evidence_text_says_a_repeated_signal_once(units: dict[str, Unit]) -> None:
    unit = units[TOOL_ERROR_RUN]
    error = next(s for s in detect(unit) if s.kind == "tool_error")
    again = error.model_copy(update={"step": 19})  # the same evidence pointing to the call
    assert evidence_text(unit, [error, again]) == evidence_text(unit, [error])
    assert len(evidence_text(unit, [error]).splitlines()) == 1


def test_evidence_text_without_signals_is_how_the_unit_ended(units: dict[str, Unit]) -> None:
    unit = units[QUIET_RUN]
    outcome = [s for s in detect(unit) if s.kind == "outcome_fail"]
    steps = [s for s in step_timeline(unit) if s.kind != "system"]
    ended = ["how it ended:", *[render_step(s) for s in steps[-LAST_STEPS:]]]
    assert evidence_text(unit, outcome).splitlines() == ended
    with pytest.raises(UsageError, match="signal of unit"):
        evidence_text(unit, detect(units[TOOL_ERROR_RUN]))


def test_builds_embed_the_evidence_text_by_default(units: dict[str, Unit]) -> None:
    chosen = [units[TOOL_ERROR_RUN], units[QUIET_RUN]]
    steps = [step_timeline(u) for u in chosen]
    keys = [unit_key(u, t) for u, t in zip(chosen, steps, strict=True)]
    texts = unit_texts(chosen, steps, keys, Settings.model_validate({}))
    assert texts == [evidence_text(u, detect(u)) for u in chosen]
    assert texts != unit_texts(chosen, steps, keys, Settings.model_validate({"signature_text": "failure"}))
