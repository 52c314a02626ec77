"""What an evaluator returns for one unit: a score, or a failure that is never a score."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.annotations.scale import ScaleValue


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
    warnings: tuple[str, ...] = Field(default=(), description="accepted but flagged: a numeric string coerced, "
                                      "a score contradicting the verdict")
    attempts: int = Field(default=1, ge=1, description="judge calls made (more than 1: retried)")
    decided_by: Literal["code", "judge"] | None = Field(
        default=None, description="which part decided: the code check or the judge (a hybrid evaluator has both); "
                                  "None when not recorded")
    value: ScaleValue | None = Field(
        default=None, description="the result on the criterion's scale: pass/fail (binary), a level, a class, "
                                  "first/second/tie (pairwise); None when not recorded")
    second_unit_id: str | None = Field(default=None, description="pairwise: the unit compared with unit_id")
    swapped: bool = Field(default=False, description="pairwise: the judge was shown the second unit first "
                                                     "(value is still relative to unit_id)")


class EvaluatorFailure(BaseModel):
    """An evaluator that could not score a unit. Counted, reported, never read as a pass or a fail.

    ``status`` is ``"unscored"`` when the judge answered but no verdict could be read from
    the reply, ``"error"`` when the call or the check failed (timeout, transport, exception,
    out-of-range value, a judge score outside the declared scale), ``"not_applicable"`` when
    the judge said the criterion does not apply to the unit, or the check returned
    :class:`~assay.evaluators.NotApplicable`. All three are left out of rates
    and means and counted beside them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluator: str
    evaluator_version: str
    unit_id: str
    judge_model: str | None = None
    status: Literal["unscored", "error", "not_applicable"]
    error: str = Field(description="what went wrong, for people")
    raw: str | None = Field(default=None, description="the judge's raw reply text, when there was one")
    attempts: int = Field(default=1, ge=1, description="judge calls made before giving up")
    decided_by: Literal["code", "judge"] | None = Field(
        default=None, description="the part that failed or found the criterion not applicable; None when not recorded")
    second_unit_id: str | None = Field(default=None, description="pairwise: the unit compared with unit_id")
    swapped: bool = Field(default=False, description="pairwise: the judge was shown the second unit first")


Evaluation = EvaluationResult | EvaluatorFailure
"""What :func:`assay.evaluators.evaluate` returns for one unit."""


class BatchReport(BaseModel):
    """What happened in a batch: counts, and which units were retried or failed (to re-run only those)."""

    model_config = ConfigDict(frozen=True)

    n: int
    scored: int
    retried: tuple[str, ...] = Field(description="unit ids whose judge call needed more than one attempt")
    failed: tuple[str, ...] = Field(description="unit ids with status error (re-run these)")
    unscored: tuple[str, ...] = Field(description="unit ids whose reply held no verdict")
    not_applicable: tuple[str, ...] = ()

    @classmethod
    def of(cls, results: list[Evaluation]) -> BatchReport:
        """Summarise results of :func:`~assay.evaluators.evaluate_many`."""
        def ids(status: str) -> tuple[str, ...]:
            return tuple(r.unit_id for r in results if isinstance(r, EvaluatorFailure) and r.status == status)

        return cls(n=len(results), scored=sum(isinstance(r, EvaluationResult) for r in results),
                   retried=tuple(r.unit_id for r in results if r.attempts > 1), failed=ids("error"),
                   unscored=ids("unscored"), not_applicable=ids("not_applicable"))
