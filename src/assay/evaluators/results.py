"""What an evaluator returns for one unit: a score, or a failure that is never a score."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvaluationResult(BaseModel):
    """One evaluator's score of one unit, with its lineage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluator: str = Field(description="evaluator name")
    evaluator_version: str = Field(description="content version of the evaluator definition (12 hex)")
    unit_id: str
    judge_model: str | None = Field(default=None, description="judge model that scored it; None for code checks")
    score: float = Field(ge=0.0, le=1.0, description="normalised score in [0, 1]")
    verdict: Literal["pass", "fail"] = Field(description="pass when score >= the evaluator's pass_score")
    reason: str = Field(default="", description="why: the judge's reason or the check's message")
    label: str | None = Field(default=None, description="the judge's verdict label (e.g. 'pass'); None for code checks")
    raw: str | None = Field(default=None, description="the judge's raw reply text")
    repaired: bool = Field(default=False,
                           description="the reply needed repair (code fence, trailing text, ...) to parse")
    cached: bool = Field(default=False, description="the judge reply came from the cache")


class EvaluatorFailure(BaseModel):
    """An evaluator that could not score a unit. Counted, reported, never read as a pass or a fail.

    ``status`` is ``"unscored"`` when the judge answered but no verdict could be read from
    the reply, ``"error"`` when the call or the check failed (timeout, transport, exception,
    out-of-range value).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluator: str
    evaluator_version: str
    unit_id: str
    judge_model: str | None = None
    status: Literal["unscored", "error"]
    error: str = Field(description="what went wrong, for people")
    raw: str | None = Field(default=None, description="the judge's raw reply text, when there was one")


Evaluation = EvaluationResult | EvaluatorFailure
"""What :func:`assay.evaluators.evaluate` returns for one unit."""
