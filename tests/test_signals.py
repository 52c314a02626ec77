"""Failure signals on real runs: each detector where it fires and where it must not, the reward never
read, settings and records validated."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from assay.exceptions import ConfigError, UsageError
from assay.signals import (
    DETECTORS,
    DetectorLineage,
    DetectorSettings,
    FailureSignal,
    Finding,
    SignalCombination,
    SignalSettings,
    UnitView,
    assess,
    cross_validated_scores,
    detect,
    detect_many,
    detector,
    failure_score,
    fit,
    fit_combination,
    is_action,
    unit_view,
)
from assay.signals.combine import features
from assay.traces import Span, SpanEvent, ToolCall, Unit, read_file
from tests.conftest import AIRLINE, DATA, RETAIL, ROOT

MAGENTIC = DATA / "agentrx" / "data" / "magentic_dataset"
COUNTRIES = "0a3cd321-3e76-4622-911b-0fda2e5d6b1a"  # final answer: "Algeria, ..., Saudi Arabia, Singapore"
SHORT_ANSWER = "0ec4371851b96837b0a81b3dd3df401415061bb532fbafeb4609f3337c358508"  # "FINAL ANSWER: ... YMCA"
WORST_RATED = "55f4258484c5b398956133128a50462a767da211f8f72aa5ac5bbffb9bcbba1a"  # task asks for the "worst rated"
CLEAN = "tau-airline/task-6/trial-0"  # a passing booking: no signal of any kind


def _blind(unit: Unit) -> Unit:
    return unit.model_copy(update={"outcome": "unknown", "reward": None, "attributes": {}})


@pytest.fixture(scope="module")
def tau() -> list[Unit]:
    units = read_file(AIRLINE).units + read_file(RETAIL).units
    assert len(units) == 300
    return units


@pytest.fixture(scope="module")
def found(tau: list[Unit]) -> dict[str, list[FailureSignal]]:
    """Signals of the 300 runs with rewards withheld, detected as one batch."""
    blind = [_blind(u) for u in tau]
    return {u.unit_id: s for u, s in zip(blind, detect_many(blind), strict=True)}


def _magentic(run_id: str) -> Unit:
    return read_file(MAGENTIC / f"{run_id}.json").units[0]


def _kinds(signals: list[FailureSignal]) -> list[str]:
    return [s.kind for s in signals]


@pytest.mark.parametrize(("unit_id", "kind", "step", "evidence"), [
    ("tau-airline/task-0/trial-0", "tool_error", 22, "book_reservation: Error: payment amount does not add up"),
    ("tau-airline/task-0/trial-0", "retry_after_error", 29, "book_reservation retried after error"),
    ("tau-airline/task-13/trial-0", "tool_loop", 17, 'get_reservation_details({"reservation_id": "XEWRD9"}) called 2'),
    ("tau-airline/task-4/trial-0", "escalation", 25, "tool transfer_to_human_agents"),
    ("tau-airline/task-12/trial-0", "escalation", 16, "user asks: Yes, please transfer me to a human agent"),
    ("tau-airline/task-9/trial-0", "refusal_loop", 3, "6 refusing or apologising turns"),
    ("tau-airline/task-45/trial-0", "user_frustration", 2, "'frustrat': I'm really frustrated with a delay"),
    ("tau-airline/task-40/trial-1", "user_correction", 25, "'there must be a mistake'"),
    ("tau-retail/task-23/trial-23", "user_repeat", 36, "repeats step 20: Yes, please go ahead with the exchange"),
    ("tau-retail/task-10/trial-10", "unanswered_complaint", 16, "'What the hell': What the hell? Useless system!"),
    ("tau-airline/task-3/trial-0", "ungrounded_number", 40, "stated without a source: 239 |"),
    ("tau-airline/task-9/trial-0", "long_session", None, "51 steps, 3.3x the median 15 of workflow"),
])
def test_detector_fires_on_real_run(found: dict[str, list[FailureSignal]], unit_id: str, kind: str,
                                    step: int | None, evidence: str) -> None:
    hits = [s for s in found[unit_id] if s.kind == kind and s.step == step]
    assert hits, f"{kind} at step {step} not in {[(s.kind, s.step) for s in found[unit_id]]}"
    assert hits[0].evidence.startswith(evidence)
    name = hits[0].lineage.name  # type: ignore[union-attr]
    assert hits[0].lineage == DetectorLineage(name=name, version=DETECTORS[name].version)


def test_clean_run_has_no_signal(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    assert found[CLEAN] == []
    assert next(u for u in tau if u.unit_id == CLEAN).outcome == "pass"
    assert assess(CLEAN, found[CLEAN]).score == 0.0


def test_escalation_asked_and_done_is_one_signal(found: dict[str, list[FailureSignal]]) -> None:
    signals = [s for s in found["tau-retail/task-12/trial-12"] if s.kind == "escalation"]
    assert len(signals) == 1  # the user asks for a person and the agent transfers: one hand-off
    assert signals[0].evidence.startswith("tool transfer_to_human_agents | user asks: No, I don’t want it refunded")
    assert signals[0].step == 25  # at the tool call


def test_escalation_weighs_an_unanswered_request_not_a_handoff(tau: list[Unit],
                                                              found: dict[str, list[FailureSignal]]) -> None:
    cfg = SignalSettings().escalation
    done = next(s for s in found["tau-airline/task-4/trial-0"] if s.kind == "escalation")  # the agent transfers
    asked = next(s for s in found["tau-airline/task-12/trial-0"] if s.kind == "escalation")  # nobody calls the tool
    assert done.evidence.startswith("tool transfer_to_human_agents") and done.strength == cfg.handoff_strength == 0
    assert asked.evidence.startswith("user asks:") and asked.strength == cfg.strength == 0.3
    handoff = detect(next(u for u in tau if u.unit_id == "tau-airline/task-4/trial-0"),
                     SignalSettings.model_validate({"escalation": {"handoff_strength": 0.3}}))
    assert [s.strength for s in handoff if s.kind == "escalation"] == [0.3]  # where a hand-off is the failure


def test_retries_after_errors_are_not_loops(found: dict[str, list[FailureSignal]]) -> None:
    # update_reservation_flights fails five times ("not enough seats", three times "gift card balance is not
    # enough" with the same arguments, "certificate cannot be used"); each retry is a retry, none is a loop
    signals = found["tau-airline/task-3/trial-0"]
    assert [s.step for s in signals if s.kind == "tool_error"] == [43, 47, 53, 55, 57]
    assert [s.step for s in signals if s.kind == "retry_after_error"] == [46, 52, 54, 56, 60]
    assert not [s for s in signals if s.kind == "tool_loop" and "update_reservation_flights" in s.evidence]


def test_short_replies_are_never_repeats(found: dict[str, list[FailureSignal]]) -> None:
    # task-0/trial-0: the user says "Yes, please proceed ..." and "Yes, I confirm ..." (few content words)
    assert "user_repeat" not in _kinds(found["tau-airline/task-0/trial-0"])
    assert sum("user_repeat" in _kinds(s) for s in found.values()) == 5


def _final_answer_cut(unit: Unit, length: int) -> Unit:
    """The unit with its last assistant message cut to ``length`` characters, as a token limit would."""
    spans = list(unit.spans)
    n = max(i for i, s in enumerate(spans) if any(m.role == "assistant" and m.content for m in s.output_messages))
    messages = tuple(m.model_copy(update={"content": m.content[:length]}) if m.role == "assistant" and m.content
                     else m for m in spans[n].output_messages)
    spans[n] = spans[n].model_copy(update={"output_messages": messages})
    return unit.model_copy(update={"spans": tuple(spans)})


def test_cut_off_final_answer(tau: list[Unit]) -> None:
    run = _blind(next(u for u in tau if u.unit_id == "tau-airline/task-0/trial-0"))
    last = unit_view(run).assistants[-1].text
    assert last.startswith("Your flight from New York (JFK) to Seattle (SEA) has been successfully booked.")
    assert "cut_off_answer" not in _kinds(detect(run))
    cut = detect(_final_answer_cut(run, len("Your flight from New York (JFK) to Seattle (SEA) has been successfully "
                                            "booked. Here are the")))
    assert [(s.kind, s.step) for s in cut if s.lineage.name == "empty_answer"] == [("cut_off_answer", 31)]
    # complete answers without a final full stop: a list of names, a short answer
    for run_id in (COUNTRIES, SHORT_ANSWER):
        assert not [s for s in detect(_magentic(run_id)) if s.lineage.name == "empty_answer"]


def test_frustration_words_used_literally_are_not_frustration() -> None:
    assert "user_frustration" not in _kinds(detect(_magentic(WORST_RATED)))


def test_no_answer_at_all_is_an_empty_answer(tau: list[Unit]) -> None:
    run = _blind(next(u for u in tau if u.unit_id == "tau-airline/task-0/trial-0"))
    first_turn = run.spans[1]  # the first chat span: system prompt and the user's request
    pending = run.model_copy(update={"spans": (first_turn.model_copy(update={"output_messages": ()}),)})
    signals = detect(pending)
    assert _kinds(signals) == ["empty_answer"]
    assert signals[0].evidence == "no assistant answer in the unit" and signals[0].step == 2
    assert "empty_answer" not in _kinds(detect(run))


def test_long_session_needs_the_population(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    run = _blind(next(u for u in tau if u.unit_id == "tau-airline/task-9/trial-0"))
    assert "long_session" not in _kinds(detect(run))  # a lone unit has no norm
    fitted = fit([unit_view(_blind(u)) for u in tau])
    assert detect(run, fitted=fitted) == found[run.unit_id]
    assert sum("long_session" in _kinds(s) for s in found.values()) == 17


def test_workflow_norm_falls_back_to_the_source_family() -> None:
    runs = [read_file(p).units[0] for p in sorted(MAGENTIC.glob("*-*.json"))]
    assert len(runs) >= 20 and len({u.source for u in runs}) == len(runs)  # one file per run
    norms = fit([unit_view(u) for u in runs])["long_session"]
    view = unit_view(runs[0])
    group, norm = norms.norm_for(view, SignalSettings().long_session)  # type: ignore[attr-defined]
    assert (group, norm.n) == ("magentic-one", len(runs))


def test_the_reward_is_never_read(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    with_outcome = detect_many(tau)
    for unit, seen in zip(tau, with_outcome, strict=True):
        outcome = [s for s in seen if s.source == "outcome"]
        assert [s for s in seen if s.source != "outcome"] == found[unit.unit_id]
        assert len(outcome) == (unit.outcome == "fail")
    failed = next(u for u in tau if u.outcome == "fail")
    flipped = failed.model_copy(update={"outcome": "pass", "reward": 1.0})
    assert detect(flipped, SignalSettings(outcome={"enabled": False})) == \
        detect(failed, SignalSettings(outcome={"enabled": False}))
    assert not {"outcome", "reward", "attributes"} & set(vars(unit_view(failed)))


def test_outcome_signal(tau: list[Unit]) -> None:
    failed = next(u for u in tau if u.outcome == "fail")
    signal = detect(failed)[0]
    assert (signal.source, signal.kind, signal.strength, signal.step) == ("outcome", "outcome_fail", 1.0, None)
    assert signal.evidence == "the source recorded outcome fail (reward 0)"
    assert assess(failed.unit_id, detect(failed)).failed


def test_disabled_detector_and_evidence_length(tau: list[Unit]) -> None:
    run = _blind(next(u for u in tau if u.unit_id == "tau-airline/task-0/trial-0"))
    assert "tool_error" in _kinds(detect(run))
    assert "tool_error" not in _kinds(detect(run, SignalSettings(tool_error={"enabled": False})))
    assert all(len(s.evidence) <= 40 for s in detect(run, SignalSettings(evidence_chars=40)))


def test_a_failed_tool_span_without_a_result_gives_its_error_as_evidence() -> None:
    """An OTel tool span with error status and no result: the evidence is the span's error (status message
    and exception event), not an empty text."""
    call = ToolCall(id="c1", name="lookup_order", arguments={"order_id": "W1"}, arguments_raw='{"order_id": "W1"}')
    failed = Span(trace_id="a" * 32, span_id="b" * 16, name="execute_tool lookup_order", kind="tool", start_ns=1,
                  end_ns=2, status="error", status_message="order service unavailable", tool_call=call,
                  events=(SpanEvent(name="exception", time_ns=2, attributes={
                      "exception.type": "TimeoutError", "exception.message": "no reply in 30 s"}),))
    (signal,) = [x for x in detect(Unit(unit_id="trace/t", kind="trace", source="otel", spans=(failed,)))
                 if x.kind == "tool_error"]
    assert signal.evidence == "lookup_order: order service unavailable; TimeoutError: no reply in 30 s"


def test_settings_from_toml_and_invalid_values() -> None:
    data = tomllib.loads("[signals]\nfail_at = 0.4\nambiguous_low = 0.1\n[signals.tool_loop]\nmin_repeats = 3\n"
                         "[signals.escalation]\nenabled = false\ntools = ['handoff']\n")
    cfg = SignalSettings.model_validate(data["signals"])
    assert (cfg.fail_at, cfg.tool_loop.min_repeats, cfg.escalation.enabled, cfg.escalation.tools) == \
        (0.4, 3, False, ("handoff",))
    bad: list[dict[str, Any]] = [
        {"user_frustration": {"words": ["(unclosed"]}}, {"tool_error": {"strength": 1.5}},
        {"fail_at": 0.7}, {"tool_loop": {"min_repeats": 1}}, {"tool_loop": {"typo": 1}}, {"unknown": {}},
        {"long_session": {"strength": math.nan}},
    ]
    for values in bad:
        with pytest.raises(ValidationError):
            SignalSettings.model_validate(values)
    with pytest.raises(ValidationError, match="invalid regular expression"):
        SignalSettings.model_validate(bad[0])


def _signal(**changes: Any) -> FailureSignal:
    values: dict[str, Any] = {"unit_id": "u", "source": "cue", "kind": "tool_loop", "strength": 0.5,
                              "evidence": "x", "step": 3, "time_ns": 0,
                              "lineage": {"type": "detector", "name": "tool_loop", "version": "1"}}
    return FailureSignal.model_validate({**values, **changes})


def test_failure_signal_record() -> None:
    signal = _signal()
    assert signal.version == 1 and signal.key == _signal().key and signal.key != _signal(step=4).key
    assert FailureSignal.model_validate_json(signal.model_dump_json()) == signal
    with pytest.raises(ValidationError):
        signal.strength = 0.1  # type: ignore[misc]  # frozen
    for changes in ({"source": "error"}, {"strength": math.nan}, {"strength": -0.1}, {"step": 0},
                    {"lineage": {"type": "annotator", "annotator": "ann"}}, {"kind": "thumbs_up"}):
        with pytest.raises(ValidationError):
            _signal(**changes)
    human = _signal(source="label", kind="human_fail", lineage={"type": "annotator", "annotator": "ann"})
    assert human.lineage.type == "annotator"


def test_failure_score_and_ambiguous_band() -> None:
    assert failure_score([]) == 0.0
    assert failure_score([_signal(strength=0.5), _signal(strength=0.5)]) == pytest.approx(0.75)
    weak = assess("u", [_signal(strength=0.3)])
    assert (weak.failed, weak.ambiguous, weak.kinds) == (False, True, ("tool_loop",))
    strong = assess("u", [_signal(strength=0.4), _signal(strength=0.4, kind="tool_loop")])
    assert (strong.score, strong.failed, strong.ambiguous) == (0.64, True, False)
    assert not assess("u", [_signal(strength=0.1)]).ambiguous
    with pytest.raises(UsageError, match="signal of unit 'u'"):
        assess("other", [_signal()])


class _Shouting(DetectorSettings):
    min_caps: int = 5


@pytest.fixture()
def shouting() -> Iterator[str]:
    @detector("test_shouting", "1", _Shouting)
    def shouting_detector(view: UnitView, cfg: _Shouting, _: Any = None) -> list[Finding]:
        return [Finding("user_frustration", cfg.strength, s.text, s) for s in view.users
                if sum(c.isupper() for c in s.text) >= cfg.min_caps]
    try:
        yield "test_shouting"
    finally:
        DETECTORS.pop("test_shouting")


def test_extension_detector(tau: list[Unit], shouting: str) -> None:
    run = next(u for u in tau if u.unit_id == "tau-retail/task-10/trial-10")
    mine = [s for s in detect(run) if s.lineage.name == shouting]
    assert mine and mine[0].source == "cue" and mine[0].lineage.version == "1"
    quiet = SignalSettings(extensions={shouting: {"min_caps": 1000}})
    assert not [s for s in detect(run, quiet) if s.lineage.name == shouting]
    with pytest.raises(ConfigError, match="signals.extensions.test_shouting"):
        detect(run, SignalSettings(extensions={shouting: {"min_caps": "many"}}))
    with pytest.raises(UsageError, match="already registered"):
        detector(shouting, "2", _Shouting)(lambda view, cfg, _: [])


def test_docs_examples_run() -> None:
    text = (ROOT / "docs" / "signals.md").read_text(encoding="utf-8")
    blocks = [SignalSettings.model_validate(tomllib.loads(b.split("```")[0])["signals"])
              for b in text.split("```toml\n")[1:]]
    assert len(blocks) == 3
    reasoned, actions, cfg = blocks
    assert (reasoned.escalation.handoff_strength, reasoned.refusal_loop.max_strength) == (0.3, 0.5)
    assert (actions.unconfirmed_action.generic, actions.unconfirmed_action.action_verbs[0]) == (False, "cancel")
    assert (cfg.tool_loop.min_repeats, cfg.escalation.enabled) == (3, False)
    code = text.split("```python\n")[-1].split("```")[0]
    try:
        exec(compile(code, "docs/signals.md", "exec"), {})  # noqa: S102 - the doc's own example
        assert DETECTORS["shouting"].version == "1"
    finally:
        DETECTORS.pop("shouting", None)


# --- consequential actions -----------------------------------------------------------------------------------

ACTION_DETECTORS = ("unconfirmed_action", "ungrounded_argument", "action_retry", "many_actions")
CONFIRMED_CANCEL = "tau-airline/task-41/trial-0"  # "Yes, please go ahead and cancel the reservation." then one cancel


def _reword(unit: Unit, old: str, new: str) -> Unit:
    """The unit with every message whose content is ``old`` saying ``new`` instead."""
    def swap(messages: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(m.model_copy(update={"content": new}) if m.content == old else m for m in messages)
    spans = tuple(s.model_copy(update={"input_messages": swap(s.input_messages),
                                       "output_messages": swap(s.output_messages)}) for s in unit.spans)
    return unit.model_copy(update={"spans": spans})


@pytest.mark.parametrize(("unit_id", "kind", "step", "evidence"), [
    ("tau-airline/task-28/trial-1", "unconfirmed_action", 24, "cancel_reservation without a yes; user said 'My"),
    ("tau-airline/task-3/trial-0", "unconfirmed_action", 42, "update_reservation_flights without a yes; user said 'I "
                                                             "want to use the gift card with the smallest balance"),
    ("tau-airline/task-23/trial-1", "ungrounded_argument", 35, "update_reservation_flights with values from no earlier "
                                                               "step: 2024-05-19, 2024-05-23"),
    ("tau-airline/task-3/trial-0", "action_retry", 46, "update_reservation_flights failed (Error: not enough seats on "
                                                       "flight HAT229) and was retried with other arguments"),
    ("tau-airline/task-0/trial-0", "action_retry", 29, "book_reservation failed (Error: payment amount"),
    ("tau-airline/task-28/trial-1", "many_actions", 32, "5 consequential actions: cancel_reservation,"),
])
def test_action_detector_fires_on_real_run(found: dict[str, list[FailureSignal]], unit_id: str, kind: str,
                                           step: int, evidence: str) -> None:
    hits = [s for s in found[unit_id] if s.kind == kind and s.step == step]
    assert hits, f"{kind} at step {step} not in {[(s.kind, s.step) for s in found[unit_id]]}"
    assert hits[0].evidence.startswith(evidence) and hits[0].source == "cue"


def test_confirmed_action_is_not_unconfirmed(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    # the agent lists the cancellation, the user says "Yes, please go ahead": nothing to flag (the run still
    # fails: the agent trusted "booked 10 hours ago" without checking; no cheap signal sees that)
    assert not [s for s in found[CONFIRMED_CANCEL] if s.lineage.name in ACTION_DETECTORS]  # type: ignore[union-attr]
    run = _blind(next(u for u in tau if u.unit_id == CONFIRMED_CANCEL))
    held_back = _reword(run, "Yes, please go ahead and cancel the reservation. I really appreciate your help with "
                             "this!", "No, wait. Let me think about it first.")
    signals = [s for s in detect(held_back) if s.lineage.name == "unconfirmed_action"]  # type: ignore[union-attr]
    assert [(s.kind, s.step, s.strength) for s in signals] == [("action_after_objection", 11, 0.5)]
    assert "user said 'No, wait." in signals[0].evidence
    unsure = _reword(run, "Yes, please go ahead and cancel the reservation. I really appreciate your help with this!",
                     "Hmm, I need to think about the refund first.")
    assert [s.kind for s in detect(unsure) if s.kind.endswith(("_action", "_objection"))] == ["unconfirmed_action"]


def test_no_inside_a_sentence_is_not_an_objection(found: dict[str, list[FailureSignal]]) -> None:
    # "No extra baggage needed", "no longer needed": answers, not a user holding the agent back
    assert not [s for sig in found.values() for s in sig if s.kind == "action_after_objection"]
    said = [s.evidence for s in found["tau-retail/task-74/trial-74"] if s.kind == "unconfirmed_action"]
    assert said == ["cancel_pending_order without a yes; user said 'Oh, um, it’s because I no longer need them.'"]


def test_autonomous_runs_and_agents_called_as_tools_take_no_actions() -> None:
    # Magentic-One: one task message, then agents (WebSurfer, FileSurfer, ComputerTerminal) called as tools
    runs = [read_file(p).units[0] for p in sorted(MAGENTIC.glob("*-*.json"))[:12]]
    calls = {s.tool_name for u in runs for s in unit_view(u).calls}
    assert {"WebSurfer", "FileSurfer"} <= calls
    assert not [s for u in runs for s in detect(u) if s.lineage.name in ACTION_DETECTORS]  # type: ignore[union-attr]


def test_what_counts_as_an_action() -> None:
    cfg = SignalSettings().unconfirmed_action
    assert [is_action(n, cfg) for n in ("cancel_reservation", "exchange_delivered_order_items", "CancelOrder",
                                        "archive_ticket", "get_user_details", "searchFlights", "think",
                                        "transfer_to_human_agents", "WebSurfer", None, "check_shipping",
                                        "verify_identity", "view_order")] == \
        [True, True, True, True, False, False, False, False, False, False, False, False, False]
    strict = SignalSettings.model_validate(tomllib.loads(
        "[unconfirmed_action]\ngeneric = false\naction_verbs = ['cancel']\n")).unconfirmed_action
    assert [is_action(n, strict) for n in ("cancel_reservation", "archive_ticket", "book_reservation")] == \
        [True, False, False]


def test_grounded_arguments_are_not_flagged(found: dict[str, list[FailureSignal]], tau: list[Unit]) -> None:
    # task-0/trial-0 books for "May 20th" with ids and amounts from the user and the tools: the date
    # 2024-05-20 is grounded by "May 20th"
    run = next(u for u in tau if u.unit_id == "tau-airline/task-0/trial-0")
    booking = next(s for s in unit_view(run).calls if s.tool_name == "book_reservation")
    assert booking.arguments and booking.arguments["flights"][0]["date"] == "2024-05-20"
    assert "ungrounded_argument" not in _kinds(found[run.unit_id])
    assert sum("ungrounded_argument" in _kinds(s) for s in found.values()) == 25


def test_retry_with_the_same_arguments_is_not_an_action_retry(found: dict[str, list[FailureSignal]]) -> None:
    # task-8/trial-1: book_reservation fails and is sent again unchanged, three times (retry_after_error sees it)
    signals = found["tau-airline/task-8/trial-1"]
    assert [s.step for s in signals if s.kind == "retry_after_error" and "book_reservation" in s.evidence] == [35, 39]
    assert not [s for s in signals if s.kind == "action_retry"]


def test_one_action_is_not_many(found: dict[str, list[FailureSignal]]) -> None:
    assert "many_actions" not in _kinds(found[CONFIRMED_CANCEL])
    strengths = sorted({s.strength for sig in found.values() for s in sig if s.kind == "many_actions"})
    cfg = SignalSettings().many_actions
    assert strengths[0] == cfg.strength and strengths[-1] == cfg.max_strength  # 2 actions; capped at max_strength


# --- calibrated combination -----------------------------------------------------------------------------------


def test_calibrated_combination(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    signals = [found[u.unit_id] for u in tau]
    failed = [u.outcome == "fail" for u in tau]
    combo = fit_combination(signals, failed)
    weights = dict(zip(combo.features, combo.coefficients, strict=True))
    assert weights["escalation"] < 0 < weights["ungrounded_argument"]  # a hand-off points to a pass on tau-bench
    assert (combo.units, combo.failed) == (300, 143)
    assert SignalCombination.model_validate_json(combo.model_dump_json()) == combo
    assert 0 < combo.score([]) < 1
    # the recorded outcome is the label, never a feature
    with_outcome = detect_many(tau)
    assert fit_combination(with_outcome, failed) == combo


def test_combination_features_count_signals_not_strengths(found: dict[str, list[FailureSignal]]) -> None:
    handoff = [s for s in found["tau-airline/task-4/trial-0"] if s.kind == "escalation"]
    assert handoff and handoff[0].strength == 0  # no weight in the noisy-OR ...
    assert features(handoff, ["escalation", "tool_error"]) == [0.5, 0.0]  # ... but the combination sees it
    errors = [s for s in found["tau-airline/task-3/trial-0"] if s.kind == "tool_error"]  # five failed updates
    assert len(errors) >= 2 and features(errors, ["tool_error"]) == [1 - 0.5 ** len(errors)]


def test_cross_validated_scores_are_out_of_fold(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    signals = [found[u.unit_id] for u in tau]
    failed = [u.outcome == "fail" for u in tau]
    groups = [u.unit_id.rsplit("/", 1)[0] for u in tau]
    scores, folds = cross_validated_scores(signals, failed, groups)
    assert len(folds) == 5 and all(f.units < 300 for f in folds)
    in_sample = fit_combination(signals, failed)
    assert scores != [in_sample.score(s) for s in signals]
    assert sum(300 - f.units for f in folds) == 300  # every unit held out exactly once


def test_combination_bad_input(found: dict[str, list[FailureSignal]]) -> None:
    signals = list(found.values())[:40]
    with pytest.raises(UsageError, match="both classes"):
        fit_combination(signals, [True] * 40)
    with pytest.raises(UsageError, match="40 units of signals but 39 labels"):
        fit_combination(signals, [True, False] * 19 + [True])
    with pytest.raises(UsageError, match="at least 5 distinct groups"):
        cross_validated_scores(signals, [True, False] * 20, ["a", "b"] * 20)


def test_docs_combination_example_runs(tau: list[Unit], found: dict[str, list[FailureSignal]]) -> None:
    text = (ROOT / "docs" / "signals.md").read_text(encoding="utf-8")
    code = next(b.split("```")[0] for b in text.split("```python\n")[1:] if "fit_combination" in b)
    names: dict[str, Any] = {"signals_per_unit": [found[u.unit_id] for u in tau],
                             "failed": [u.outcome == "fail" for u in tau], "unit_signals": found[CLEAN],
                             "task_ids": [u.unit_id.rsplit("/", 1)[0] for u in tau]}
    exec(compile(code, "docs/signals.md", "exec"), names)  # noqa: S102 - the doc's own example
    assert isinstance(names["combo"], SignalCombination) and len(names["oof"]) == 300
