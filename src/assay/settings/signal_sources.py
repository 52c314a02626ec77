"""Settings of the failure-signal sources that are not detectors: explicit user feedback, failed
evaluator scores, human labels and flags, and open coding by a judge model (sub-tables of ``[signals]``)::

    [signals.feedback]
    thumbs_down_strength = 0.7
    [signals.evaluator]
    strength = 0.6
    [signals.label]
    strength = 0.9
    [signals.open_coding]
    enabled = true                     # off by default: it calls an API judge
    daily_calls = 200
    daily_usd = 1.0
    judge = {provider = "openai", model = "gpt-4o-mini"}

Each strength is what one such signal alone says about the unit, in [0, 1]. The defaults are at or
above ``fail_at`` (0.5): a person's thumbs-down, a calibrated evaluator's fail, a human ``fail`` label,
a person's flag and a judge's note each fail a unit on their own (docs/signals.md gives the reasons).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from assay.settings.run_kinds import SIGNAL_RUN_KINDS, parse_run_kinds

FEEDBACK_ATTRIBUTES = (
    "user.feedback.score", "user_feedback.score", "feedback.score", "user.feedback", "user_feedback",
    "user.feedback.thumbs", "user_feedback.thumbs", "feedback.thumbs", "user.thumbs", "thumbs",
)
"""Span, event and unit attributes read as user feedback (:func:`assay.traces.record_fields.parse_feedback`): an
OTel ``*.score`` attribute a number in [0, 1], a ``*.thumbs`` attribute ``up`` / ``down`` (``thumbs_down``,
``👎`` ...), a boolean (true: up) or -1/+1; the others, and a unit's attributes, either."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeedbackSettings(_Section):
    """``[signals.feedback]``: explicit user feedback (OTel attributes and events, OpenInference
    annotations, Langfuse scores, ``POST /api/v1/feedback``, a chat-log record's ``feedback``)."""

    enabled: bool = True
    thumbs_down_strength: float = Field(default=0.7, ge=0, le=1, allow_inf_nan=False,
                                        description="strength of a thumbs-down (kind thumbs_down)")
    low_score_strength: float = Field(default=0.6, ge=0, le=1, allow_inf_nan=False,
                                      description="strength of a feedback score below score_below "
                                                  "(kind low_feedback_score)")
    score_below: float = Field(default=0.5, gt=0, le=1, description="a feedback score in [0, 1] below this is "
                               "negative feedback; at or above it, positive (kept, no signal)")
    attributes: tuple[str, ...] = Field(default=FEEDBACK_ATTRIBUTES, description="attribute names holding "
                                        "feedback on spans, span events, OTLP log records and units")
    comment_attributes: tuple[str, ...] = Field(
        default=("user.feedback.comment", "user_feedback.comment", "feedback.comment", "user.comment"),
        description="attribute names holding the feedback's comment")
    score_names: tuple[str, ...] = Field(
        default=("feedback", "thumb", "rating", "satisf"),
        description="a named score (a Langfuse score, an OpenInference annotation) whose name contains one of "
                    "these (case-insensitive) is user feedback; other named scores are not")


class EvaluatorSignalSettings(_Section):
    """``[signals.evaluator]``: every failed score of an active evaluator becomes a signal (kind
    ``evaluator_fail``), once per unit and evaluator version."""

    enabled: bool = True
    strength: float = Field(default=0.6, ge=0, le=1, allow_inf_nan=False)
    run_kinds: tuple[str, ...] = Field(default=tuple(k.value for k in SIGNAL_RUN_KINDS),
                                       description="run kinds whose failed scores count (backfill: assay score, "
                                                   "the older name score reads as backfill; import: an external "
                                                   "evaluator's imported verdicts); calibration runs never do")

    _kinds = field_validator("run_kinds", mode="before")(parse_run_kinds)


class LabelSignalSettings(_Section):
    """``[signals.label]``: a human ``fail`` label (kind ``human_fail``) and a person's severe flag (``flag``)."""

    enabled: bool = True
    strength: float = Field(default=0.9, ge=0, le=1, allow_inf_nan=False, description="a human fail label")
    flag_strength: float = Field(default=0.8, ge=0, le=1, allow_inf_nan=False, description="a person's flag")


class OpenCodingSettings(_Section):
    """``[signals.open_coding]``: a judge model reads ambiguous units (failure score in the ambiguous
    band) plus a small random share and writes one sentence "what went wrong, or nothing" naming the step
    (kind ``open_coding_note``). Off by default; needs an API judge (the local 135M model is not up to it).
    """

    enabled: bool = False
    strength: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False,
                            description="strength of a note saying something went wrong")
    random_share: float = Field(default=0.02, ge=0, le=1, description="share of units outside the ambiguous "
                                "band coded too (chosen by a hash of the unit id), so clear cases get checked")
    daily_calls: int = Field(default=200, ge=0, description="judge calls per UTC day (cache hits are free)")
    daily_usd: float | None = Field(default=1.0, ge=0, description="USD per UTC day, from the judge's prices "
                                    "([judge] price_in_per_mtok / price_out_per_mtok, required when set); "
                                    "false: no dollar limit (the call limit still holds)")
    max_units: int = Field(default=100, ge=1, description="units coded per `assay signals update`")
    judge: dict[str, JsonValue] = Field(default_factory=dict, description="overrides of the [judge] section for "
                                        "open coding, e.g. {provider = 'openai', model = 'gpt-4o-mini'}")

    @field_validator("daily_usd", mode="before")
    @classmethod
    def _no_limit(cls, value: object) -> object:
        return None if value is False or (isinstance(value, str) and value.lower() == "false") else value
