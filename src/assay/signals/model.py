"""The failure-signal record: one piece of evidence that a unit went wrong (DESIGN.md, "failure signal").

A :class:`FailureSignal` is immutable and append-only: a new observation is a new record, never an
edit. It names its **source** (where the evidence came from), its **kind** (what was seen), a
**strength** in [0, 1] (how strongly it alone says "this unit failed"), the **evidence** text, the
**step** of the unit's step timeline it points to, the **time** of the evidence and its
**lineage** (which detector, evaluator, annotator, feedback channel or judge produced it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay._util.content import signal_key

SignalSource = Literal["outcome", "error", "feedback", "cue", "evaluator", "label", "flag", "open_coding"]
"""Where a signal comes from: ``outcome`` (the source recorded an outcome, e.g. a benchmark reward),
``error`` (an error span or a tool result that is an error), ``feedback`` (explicit user feedback:
thumbs, scores), ``cue`` (an implicit conversation or behaviour cue found by a detector),
``evaluator`` (a failed score of an active evaluator), ``label`` (a human ``fail`` label), ``flag``
(a person flagged the unit) and ``open_coding`` (a judge model's note of what went wrong)."""

SignalKind = Literal[
    "outcome_fail",
    "error_span", "tool_error",
    "thumbs_down", "low_feedback_score",
    "user_frustration", "user_correction", "user_repeat", "escalation", "refusal_loop", "empty_answer",
    "cut_off_answer", "tool_loop", "retry_after_error", "unanswered_complaint", "long_session",
    "ungrounded_number", "unconfirmed_action", "action_after_objection", "ungrounded_argument", "action_retry",
    "many_actions",
    "evaluator_fail",
    "human_fail",
    "flag",
    "open_coding_note",
]
"""What was seen; each kind belongs to exactly one source (:data:`KIND_SOURCE`)."""

KIND_SOURCE: dict[str, SignalSource] = {
    "outcome_fail": "outcome",
    "error_span": "error", "tool_error": "error",
    "thumbs_down": "feedback", "low_feedback_score": "feedback",
    **{k: "cue" for k in ("user_frustration", "user_correction", "user_repeat", "escalation", "refusal_loop",
                          "empty_answer", "cut_off_answer", "tool_loop", "retry_after_error",
                          "unanswered_complaint", "long_session", "ungrounded_number",
                          "unconfirmed_action", "action_after_objection", "ungrounded_argument", "action_retry",
                          "many_actions")},
    "evaluator_fail": "evaluator",
    "human_fail": "label",
    "flag": "flag",
    "open_coding_note": "open_coding",
}
"""The source each :data:`SignalKind` belongs to."""


FeedbackChannel = Literal["otel_attribute", "otel_event", "openinference", "langfuse", "record", "api"]
"""How explicit feedback arrived: an OTel span attribute, a span event or OTLP log record, an OpenInference
annotation, a Langfuse score in an export, a field of a file's record (a chat log's ``feedback``), or
``POST /api/v1/feedback``."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorLineage(_Record):
    """Made by a detector of :mod:`assay.signals` (or an extension registered under ``assay.detectors``)."""

    type: Literal["detector"] = "detector"
    name: str = Field(min_length=1, description="the detector's registered name, e.g. 'tool_loop'")
    version: str = Field(min_length=1, description="the detector's version; bumped when its rule changes")


class EvaluatorLineage(_Record):
    """A failed score of an evaluator (gate, online or backfill run)."""

    type: Literal["evaluator"] = "evaluator"
    name: str = Field(min_length=1, description="evaluator name")
    version: str = Field(min_length=1, description="evaluator version (content hash of its definition)")
    run_id: str | None = Field(default=None, description="the suite run that produced the score")


class AnnotatorLineage(_Record):
    """A human ``fail`` label or a person's flag."""

    type: Literal["annotator"] = "annotator"
    annotator: str = Field(min_length=1, description="who labelled or flagged the unit")


class FeedbackLineage(_Record):
    """Explicit user feedback, as the app sent it."""

    type: Literal["feedback"] = "feedback"
    channel: FeedbackChannel = Field(description="how the feedback arrived")
    sender: str | None = Field(default=None, description="API key name or app that sent it, when known")


class JudgeLineage(_Record):
    """An open-coding note written by a configured judge model."""

    type: Literal["judge"] = "judge"
    model: str = Field(min_length=1, description="judge model name")
    prompt_version: str = Field(min_length=1, description="version (content hash) of the open-coding prompt")


Lineage = Annotated[DetectorLineage | EvaluatorLineage | AnnotatorLineage | FeedbackLineage | JudgeLineage,
                    Field(discriminator="type")]
"""Who produced a signal; the ``type`` field tells which."""

_LINEAGE_FOR: dict[SignalSource, str] = {
    "outcome": "detector", "error": "detector", "cue": "detector", "feedback": "feedback",
    "evaluator": "evaluator", "label": "annotator", "flag": "annotator", "open_coding": "judge",
}


class FailureSignal(_Record):
    """One piece of evidence that a unit went wrong (stored format, version 1).

    Raises (on construction):
        pydantic.ValidationError: strength outside [0, 1] or NaN, a kind that does not belong to
            the source (:data:`KIND_SOURCE`), a lineage type that does not fit the source, a step < 1.
    """

    version: Literal[1] = Field(default=1, description="version of this stored format")
    unit_id: str = Field(min_length=1, description="the unit the evidence is about")
    source: SignalSource = Field(description="where the evidence came from (see SignalSource)")
    kind: SignalKind = Field(description="what was seen (see SignalKind)")
    strength: float = Field(ge=0.0, le=1.0, allow_inf_nan=False,
                            description="how strongly this signal alone says the unit failed, in [0, 1]")
    evidence: str = Field(description="the text that shows it: a user turn, an error message, a comment")
    step: int | None = Field(default=None, ge=1, description="1-based index (Step.index) into the unit's step "
                             "timeline of the step it points to; None when it is about the whole unit")
    time_ns: int = Field(ge=0, description="when the evidence happened (the step's start, the feedback's "
                         "arrival), ns since the Unix epoch, UTC; 0 when unknown")
    lineage: Lineage = Field(description="who produced the signal")

    @model_validator(mode="after")
    def _consistent(self) -> FailureSignal:
        if KIND_SOURCE[self.kind] != self.source:
            raise ValueError(f"kind {self.kind!r} belongs to source {KIND_SOURCE[self.kind]!r}, not {self.source!r}")
        if self.lineage.type != _LINEAGE_FOR[self.source]:
            raise ValueError(f"source {self.source!r} needs {_LINEAGE_FOR[self.source]} lineage, "
                             f"got {self.lineage.type}")
        return self

    @property
    def key(self) -> str:
        """Content id (sha256 hex, 32 chars) of unit, kind, step, evidence and lineage: the same
        observation made twice has the same key, so a store can write signals idempotently."""
        return signal_key(self.unit_id, self.kind, self.step, self.evidence, self.lineage.model_dump())
