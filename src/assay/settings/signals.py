"""Thresholds of the failure-signal detectors: the ``[signals]`` section of ``assay.toml``.

One sub-table per detector, named as the detector is registered::

    [signals]
    fail_at = 0.5                 # a unit counts as failed at this failure score
    [signals.tool_loop]
    min_repeats = 3
    [signals.escalation]
    enabled = false

Every detector has ``enabled`` and ``strength`` (the strength of one signal it emits, in [0, 1]);
the rest are its thresholds. Word lists are regular-expression fragments, matched
case-insensitively from a word start. Thresholds were set by reasoning about what each cue means in
production. Strengths of what the agent and its tools do were derived on the dev half of the 300
tau-bench runs (fitted on dev, never on the test half): each cue's Cheng causal power,
(p1 - p0) / (1 - p0) clipped at 0, p1 and p0 the fail rates of dev units where the cue fired and
where it did not, shrunk toward the base rate by 5 pseudo-units (``benchmarks/derive_strengths.py``
prints them). What the user says (frustration, corrections, repeats, complaints, asking for a
person) keeps its reasoned strength: tau-bench's user is a simulator playing a script, not a
customer. Cues seen on fewer than 5 dev units (``empty_answer``, ``cut_off_answer``, ``error_span``,
``action_after_objection``) keep theirs too; ramps (``per_extra``, ``per_z``) stay as reasoned, with
``max_strength`` moved by as much as ``strength``, and a cue of power 0 (a hand-off tool call, a
refusal loop: on tau-bench mostly what the policy asks for) has no ramp. docs/signals.md gives both
sets and each detector's measured precision.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.settings.signal_sources import (
    EvaluatorSignalSettings,
    FeedbackSettings,
    LabelSignalSettings,
    OpenCodingSettings,
)


class DetectorSettings(BaseModel):
    """What every detector has: on/off and the strength of one signal it emits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    strength: float = Field(default=0.4, ge=0, le=1, allow_inf_nan=False,
                            description="strength of one signal, in [0, 1]")


class _Patterns(DetectorSettings):
    @field_validator("*", mode="after")
    @classmethod
    def _compile(cls, value: object) -> object:
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            for pattern in value:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return value


FRUSTRATION = (
    r"frustrat", r"annoy", r"ridiculous", r"unacceptable", r"angry", r"upset", r"disappoint", r"terrible",
    r"awful", r"useless", r"horrible", r"worst (service|experience|support|agent|bot|company|ever)",
    r"waste of (my )?time", r"fed up", r"sick of", r"not happy",
    r"unhappy", r"(not|never) satisfied", r"dissatisfied", r"what the hell", r"damn", r"wtf", r"are you kidding",
    r"absurd", r"incompetent", r"pathetic", r"outrage", r"furious", r"not helpful", r"unhelpful",
)
CORRECTION = (
    r"that'?s not what i", r"that is not what i", r"not what i (asked|wanted|meant|said|need)",
    r"that'?s (not right|wrong|incorrect)", r"that is (not right|wrong|incorrect)", r"you'?re wrong",
    r"you are wrong", r"i (already|just) (said|told|gave|provided|mentioned)", r"i told you",
    r"as i (said|mentioned|told you)", r"i meant", r"you misunderstood", r"you got it wrong",
    r"(there|this) (must be|seems to be|is) (a|some) (mistake|mix-?up|misunderstanding)",
    r"i didn'?t (ask|say|want) (for )?(that|this)", r"that'?s not (correct|it)", r"wrong (one|order|flight|item)",
)
ESCALATION_TEXT = (
    r"(speak|talk|connect|transfer)\w* (me )?(to|with) (a |an |the |your |some)?(human|real person|person|"
    r"representative|supervisor|manager|live agent|someone else|someone who)",
    r"human (agent|being|representative)", r"real person", r"supervisor", r"escalat",
)
REFUSAL = (
    r"i'?m sorry", r"i am sorry", r"i apologi[sz]e", r"apologies", r"unfortunately",
    r"i (can ?not|can'?t|am unable to|am not able to|won'?t be able to)", r"i'?m (unable|not able) to",
    r"(is|are) not (possible|allowed|permitted|eligible)",
)


class FrustrationSettings(_Patterns):
    """``user_frustration``: a user turn with frustration words, or a correction of the agent."""

    strength: float = Field(default=0.4, ge=0, le=1, allow_inf_nan=False)
    correction_strength: float = Field(default=0.3, ge=0, le=1, allow_inf_nan=False,
                                       description="strength of a correction without frustration words")
    words: tuple[str, ...] = FRUSTRATION
    corrections: tuple[str, ...] = CORRECTION


class RepeatSettings(DetectorSettings):
    """``user_repeat``: a user turn that says again what an earlier user turn said."""

    strength: float = Field(default=0.35, ge=0, le=1, allow_inf_nan=False)
    min_similarity: float = Field(default=0.6, gt=0, le=1, description="Jaccard similarity of the two turns' "
                                  "content-word sets at or above which the later one is a repeat")
    min_words: int = Field(default=5, ge=1, description="content words (3+ letters, not stop words) both turns "
                           "need; shorter turns ('yes please') are never repeats")


class EscalationSettings(_Patterns):
    """``escalation``: a call to a hand-off tool, or the user asking for a person."""

    strength: float = Field(default=0.3, ge=0, le=1, allow_inf_nan=False, description="the user asks for a "
                            "person and no hand-off tool is called")
    handoff_strength: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False, description="the agent calls "
                                    "a hand-off tool; 0: on tau-bench's dev half a hand-off was mostly what the "
                                    "policy asks for (reasoned before: 0.3)")
    tools: tuple[str, ...] = (r"transfer_to_human", r"escalat", r"hand_?off", r"human_agent", r"talk_to_human")
    text: tuple[str, ...] = ESCALATION_TEXT


class RefusalSettings(_Patterns):
    """``refusal_loop``: the agent refuses or apologises in many turns of one unit."""

    strength: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False, description="0: on tau-bench's dev "
                            "half refusals were mostly the right outcome (reasoned before: 0.25, up to 0.5)")
    per_extra: float = Field(default=0.05, ge=0, le=1, description="strength added per turn beyond min_turns")
    max_strength: float = Field(default=0.0, ge=0, le=1)
    min_turns: int = Field(default=3, ge=2, description="assistant turns that refuse or apologise")
    phrases: tuple[str, ...] = REFUSAL


class EmptyAnswerSettings(DetectorSettings):
    """``empty_answer``: no final answer, an empty one, or one cut off mid-sentence."""

    strength: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    cut_off_strength: float = Field(default=0.35, ge=0, le=1, allow_inf_nan=False)
    min_chars: int = Field(default=2, ge=1, description="a final answer shorter than this (stripped) is empty")
    min_cut_chars: int = Field(default=40, ge=1, description="only answers at least this long are checked "
                               "for a cut-off ending (a cut-off answer hit a length limit)")


class ToolLoopSettings(DetectorSettings):
    """``tool_loop``: the same tool call (name and arguments) made again after it succeeded."""

    strength: float = Field(default=0.41, ge=0, le=1, allow_inf_nan=False)
    per_extra: float = Field(default=0.15, ge=0, le=1, description="strength added per call beyond min_repeats")
    max_strength: float = Field(default=0.8, ge=0, le=1)
    min_repeats: int = Field(default=2, ge=2, description="identical calls that make a loop")
    ignore_tools: tuple[str, ...] = Field(default=(), description="tool names never counted (exact)")


class RetrySettings(DetectorSettings):
    """``retry_after_error``: the same tool called again right after it returned an error."""

    strength: float = Field(default=0.56, ge=0, le=1, allow_inf_nan=False)
    window: int = Field(default=3, ge=1, description="tool calls after the error within which a call to the "
                        "same tool counts as a retry")


class ComplaintSettings(_Patterns):
    """``unanswered_complaint``: the unit ends on a user turn of complaint that nobody answered."""

    strength: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    phrases: tuple[str, ...] = Field(default=FRUSTRATION + CORRECTION, description="what makes a turn a "
                                     "complaint (default: the user_frustration words and corrections)")


class ToolErrorSettings(DetectorSettings):
    """``tool_error``: each tool result that is an error, each error span."""

    strength: float = Field(default=0.42, ge=0, le=1, allow_inf_nan=False)
    error_span_strength: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)


class UngroundedSettings(DetectorSettings):
    """``ungrounded_number``: the agent states a figure that no earlier step contains."""

    strength: float = Field(default=0.28, ge=0, le=1, allow_inf_nan=False)
    min_value: float = Field(default=10.0, ge=0, description="smaller numbers (list numbering, small counts) "
                             "are not checked")


READ_ONLY_VERBS = ("get", "find", "search", "list", "lookup", "look", "read", "fetch", "query", "calculate", "think",
                   "check", "view", "show", "describe", "retrieve", "load", "count", "verify", "validate", "inspect",
                   "browse", "preview", "estimate", "compute")
"""First words of tool names that only look things up (``get_order_details``, ``searchFlights``)."""
ACTION_VERBS = (
    "cancel", "modify", "exchange", "return", "book", "update", "send", "transfer", "create", "delete", "remove",
    "add", "pay", "refund", "submit", "place", "change", "set", "post", "write", "issue", "order", "purchase",
    "charge", "reset", "apply", "upgrade", "edit", "insert", "move",
)
"""First words of tool names that change something (a booking, an order, a payment, a record)."""
HANDOFF_TOOLS = (r"transfer_to_human", r"escalat", r"hand_?off", r"human_agent", r"talk_to_human")
AFFIRMATIVES = (
    r"yes", r"yeah", r"yep", r"yup", r"sure", r"ok(ay)?\b", r"confirm", r"go ahead", r"proceed", r"please do",
    r"do it", r"correct\b", r"that'?s right", r"sounds (good|great|fine)", r"looks (good|great|fine|correct)",
    r"absolutely", r"definitely", r"of course", r"alright", r"all right", r"let'?s (do|go)", r"i agree",
    r"(that|this) works", r"perfect", r"great", r"fine\b",
)
OBJECTIONS = (
    r"^(no|nope)\b(?![ -](problem|worries|need|longer|thanks))", r"no,? (wait|stop|don'?t)", r"wait\b", r"hold on",
    r"stop\b", r"not (yet|now)\b", r"never ?mind", r"(don'?t|do not) (do|proceed|cancel|book|change|modify|update|"
    r"go ahead|make)",
) + CORRECTION
"""A reply that holds the agent back. A bare "no" counts only as the turn's first word ("No, that's not the
one"), not inside "no longer needed" or "no extra baggage"."""


class ActionSettings(_Patterns):
    """What counts as a **consequential action**, shared by the action detectors: a tool call that changes
    something. A call is one when its name's first word (split at ``_ - . /`` and camelCase) is in
    ``action_verbs``, or, with ``generic``, when it is not in ``read_only_verbs``; tools matching
    ``ignore_tools`` (hand-offs, which ``escalation`` covers) never are."""

    action_verbs: tuple[str, ...] = Field(default=ACTION_VERBS, description="first words of state-changing "
                                          "tool names (exact, lower case)")
    read_only_verbs: tuple[str, ...] = Field(default=READ_ONLY_VERBS, description="first words of tool names "
                                             "that only look things up")
    generic: bool = Field(default=True, description="also count every tool whose first word is not read-only")
    ignore_tools: tuple[str, ...] = Field(default=HANDOFF_TOOLS, description="tool-name patterns never "
                                          "counted as actions (regex fragments)")


class UnconfirmedActionSettings(ActionSettings):
    """``unconfirmed_action``: a consequential action whose preceding user turn holds no explicit yes."""

    strength: float = Field(default=0.25, ge=0, le=1, allow_inf_nan=False)
    objection_strength: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False, description="strength when "
                                      "that user turn objects (no, wait, that's not what I asked)")
    affirmatives: tuple[str, ...] = AFFIRMATIVES
    objections: tuple[str, ...] = OBJECTIONS


class UngroundedArgumentSettings(ActionSettings):
    """``ungrounded_argument``: a consequential action's argument (id, amount, date) that no earlier user
    turn, tool result or system prompt contains."""

    strength: float = Field(default=0.61, ge=0, le=1, allow_inf_nan=False)
    min_value: float = Field(default=10.0, ge=0, description="smaller numeric arguments (counts, quantities) "
                             "are not checked")
    min_chars: int = Field(default=3, ge=1, description="shorter text arguments are not checked")


class ActionRetrySettings(ActionSettings):
    """``action_retry``: a consequential action that failed, tried again with other arguments."""

    strength: float = Field(default=0.57, ge=0, le=1, allow_inf_nan=False)


class ActionCountSettings(ActionSettings):
    """``many_actions``: a unit that takes several consequential actions (a risk cue, not evidence)."""

    strength: float = Field(default=0.43, ge=0, le=1, allow_inf_nan=False)
    per_extra: float = Field(default=0.05, ge=0, le=1, description="strength added per action beyond min_actions")
    max_strength: float = Field(default=0.58, ge=0, le=1)
    min_actions: int = Field(default=2, ge=1, description="consequential actions (successful or not) that make "
                             "a unit busy")


class LongSessionSettings(DetectorSettings):
    """``long_session``: far more steps than the unit's workflow usually takes (fitted per batch)."""

    strength: float = Field(default=0.64, ge=0, le=1, allow_inf_nan=False)
    per_z: float = Field(default=0.1, ge=0, le=1, description="strength added per robust z above min_z")
    max_strength: float = Field(default=0.8, ge=0, le=1)
    min_z: float = Field(default=2.0, gt=0, description="robust z of log(steps) within the workflow: "
                         "(log n - median) / (1.4826 * MAD)")
    min_ratio: float = Field(default=1.5, ge=1, description="and at least this many times the workflow's median")
    min_group: int = Field(default=20, ge=3, description="units a workflow needs for its own norm; smaller "
                           "groups use their source's norm, then the norm over all units")
    read_only_prefixes: tuple[str, ...] = Field(
        default=READ_ONLY_VERBS,
        description="tool-name prefixes of calls that only look things up; the first other call names the "
                    "workflow")


class OutcomeSettings(DetectorSettings):
    """``outcome``: the outcome the source recorded (a benchmark reward), when it is ``fail``."""

    strength: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)


class SignalSettings(BaseModel):
    """The ``[signals]`` section: one sub-table per detector, one per other source (``feedback``,
    ``evaluator``, ``label``, ``open_coding``: :mod:`assay.settings.signal_sources`) and the
    combined-score thresholds.

    Raises (on construction):
        pydantic.ValidationError: a value out of range, an invalid regular expression, an unknown key,
            ``ambiguous_low > fail_at`` or ``fail_at > ambiguous_high``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fail_at: float = Field(default=0.5, gt=0, le=1, description="a unit counts as failed when its failure "
                           "score (noisy-OR of its signals' strengths) is at or above this")
    ambiguous_low: float = Field(default=0.2, ge=0, le=1, description="failure scores in "
                                 "[ambiguous_low, ambiguous_high) are ambiguous: candidates for open coding")
    ambiguous_high: float = Field(default=0.6, ge=0, le=1)
    evidence_chars: int = Field(default=300, ge=20, description="evidence text is cut to this many characters")
    outcome: OutcomeSettings = OutcomeSettings()
    tool_error: ToolErrorSettings = ToolErrorSettings()
    user_frustration: FrustrationSettings = FrustrationSettings()
    user_repeat: RepeatSettings = RepeatSettings()
    escalation: EscalationSettings = EscalationSettings()
    refusal_loop: RefusalSettings = RefusalSettings()
    empty_answer: EmptyAnswerSettings = EmptyAnswerSettings()
    tool_loop: ToolLoopSettings = ToolLoopSettings()
    retry_after_error: RetrySettings = RetrySettings()
    unanswered_complaint: ComplaintSettings = ComplaintSettings()
    ungrounded_number: UngroundedSettings = UngroundedSettings()
    long_session: LongSessionSettings = LongSessionSettings()
    unconfirmed_action: UnconfirmedActionSettings = UnconfirmedActionSettings()
    ungrounded_argument: UngroundedArgumentSettings = UngroundedArgumentSettings()
    action_retry: ActionRetrySettings = ActionRetrySettings()
    many_actions: ActionCountSettings = ActionCountSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    evaluator: EvaluatorSignalSettings = EvaluatorSignalSettings()
    label: LabelSignalSettings = LabelSignalSettings()
    open_coding: OpenCodingSettings = OpenCodingSettings()
    extensions: dict[str, dict[str, object]] = Field(
        default_factory=dict, description="settings of detectors from the assay.detectors entry-point group, "
                                          "by detector name (validated by the detector's own settings model)")

    @model_validator(mode="after")
    def _band(self) -> SignalSettings:
        if not self.ambiguous_low <= self.fail_at <= self.ambiguous_high:
            raise ValueError(f"need ambiguous_low <= fail_at <= ambiguous_high, got {self.ambiguous_low}, "
                             f"{self.fail_at}, {self.ambiguous_high}")
        return self
