"""``kind: external``: an evaluator whose verdicts come from a judge the team runs elsewhere.

The team's judge (Langfuse, Phoenix, its own code) already scores units; ``assay scores import`` (or the
evaluation results carried in ingested traces, :mod:`assay.evaluators.carried`) stores those verdicts as
scores of an ``external`` evaluator, with lineage, and its "run" reads them back
(:class:`~assay.evaluators.runner.ExternalRunner`), so ``assay calibrate`` measures and certifies it like
any other evaluator. Its file says how to read the imported values::

    name: team-correctness
    kind: external
    dimension: correctness
    criterion: {name: resolves-request, version: 1, text: "The agent resolves the request ..."}
    external:
      name: correctness                           # the evaluator's name in the source (default: this name)
      labels: {pass: 1.0, fail: 0.0, correct: 1.0, incorrect: 0.0}
      scale: [0, 1]                               # a numeric value's range, normalised to [0, 1]
      invert: false                               # true when a high number is bad (a hallucination score)

A value that does not fit (a label not in ``labels``, a number outside ``scale``, text that is no number)
is *unscored*, its reason and raw value kept, never a pass or a fail (:func:`read_value`); its score row's
``parse_status`` is ``failed``, as for a judge reply no verdict could be read from.

On a criterion whose scale is not binary (ordinal, categorical), the label (else the value) must be a value
of that scale (a level, a class name; case-insensitive), and the score is the scale's score of it;
``external.labels``, ``scale`` and ``invert`` are for binary criteria. A pairwise criterion compares two
units, which an import row does not name: an external evaluator on it is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from sqlalchemy import select

from assay._store.store import Store
from assay._store.tables import RunRow, ScoreRow
from assay.annotations.scale import ScaleValue
from assay.evaluators.definition import EvaluatorDef
from assay.settings.run_kinds import RunKind

IMPORT_RUN_KIND = RunKind.IMPORT
"""The kind of the runs that hold imported scores."""


class ExternalSpec(BaseModel):
    """How an ``external`` evaluator reads the values a team's judge gave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, description="the evaluator's name in the imported file or traces "
                                                       "(default: this evaluator's name)")
    labels: dict[str, float] = Field(default_factory=lambda: {"pass": 1.0, "fail": 0.0},
                                     description="label -> score in [0, 1] (matched case-insensitively)")
    scale: tuple[float, float] = Field(default=(0.0, 1.0), description="[low, high] of a numeric value; "
                                       "normalised to [0, 1]; a value outside it is unscored")
    invert: bool = Field(default=False, description="the source's numbers run the other way (high is bad, e.g. a "
                                                    "hallucination score): the normalised value is 1 minus it")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, float]) -> dict[str, float]:
        for label, score in labels.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"label {label!r} has score {score}, outside [0, 1]")
        return {k.strip().lower(): v for k, v in labels.items()}

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, scale: tuple[float, float]) -> tuple[float, float]:
        if not scale[0] < scale[1]:
            raise ValueError(f"scale {list(scale)} must be [low, high] with low < high")
        return scale


class ExternalEvaluatorDef(EvaluatorDef):
    """``kind: external``: verdicts imported from a judge the team runs elsewhere (module docstring)."""

    uses_judge: ClassVar[bool] = False
    kind: Literal["external"]
    external: ExternalSpec = Field(default_factory=ExternalSpec, description="how imported values are read")

    @model_validator(mode="after")
    def _not_pairwise(self) -> ExternalEvaluatorDef:
        if self.scale.kind == "pairwise":
            raise ValueError("an external evaluator reads one verdict per unit: a pairwise criterion compares two")
        return self

    def source_name(self) -> str:
        """The name the imported records give this evaluator."""
        return self.external.name or self.name

    def content_fields(self) -> dict[str, Any]:
        return {**super().content_fields(), "external": self.external.model_dump(mode="json")}


class ExternalValue(BaseModel):
    """One imported verdict as the source gave it (stored as the score's ``raw``, JSON)."""

    model_config = ConfigDict(frozen=True)

    value: JsonValue = Field(default=None, description="the value as given (any JSON: a value that does not fit is "
                             "kept as it came)")
    label: str | None = None
    reason: str = ""
    model: str | None = Field(default=None, description="the external judge's model")
    version: str | None = Field(default=None, description="the external evaluator's own version")
    time: str | None = Field(default=None, description="when the source scored it (as given)")
    source: str = Field(default="", description="where it was read: file:line, or the trace's record")


class Read(BaseModel):
    """A value that fits: score in [0, 1], its verdict and its value on the criterion's scale."""

    model_config = ConfigDict(frozen=True)

    score: float
    verdict: Literal["pass", "fail"]
    value: ScaleValue


def read_value(defn: ExternalEvaluatorDef, value: ExternalValue) -> Read | str:
    """Score and verdict of an imported value, or why it does not fit (then it is unscored).

    A known label wins (``labels``, case-insensitive); else the value must be a finite number (or numeric
    text, or a boolean: 1 / 0 of the scale) within ``scale``, normalised to [0, 1]. The verdict is pass when
    the score reaches the evaluator's ``pass_score``. With ``invert`` a number counts the other way round
    (labels never do: they map to their scores as written). On an ordinal or categorical criterion the label,
    else the value, must be one of the scale's values (:func:`_read_on_scale`).
    """
    if defn.scale.kind != "binary":
        return _read_on_scale(defn, value)
    spec = defn.external
    label = value.label.strip().lower() if isinstance(value.label, str) and value.label.strip() else None
    if label is not None and label in spec.labels:
        return _read(spec.labels[label], defn.pass_score)
    if value.value is None or (isinstance(value.value, str) and not value.value.strip()):
        if label is not None:
            return f"label {value.label!r} is not one of {', '.join(spec.labels)} and there is no value"
        return "no value and no label"
    number = _number(value.value, spec.scale)
    if number is None:
        return f"value {value.value!r} is not a number" + (f" and label {value.label!r} is not one of "
                                                           f"{', '.join(spec.labels)}" if label else "")
    low, high = spec.scale
    if not low <= number <= high:
        return f"value {value.value!r} is outside the scale [{low:g}, {high:g}]"
    normalised = (number - low) / (high - low)
    return _read(1.0 - normalised if spec.invert else normalised, defn.pass_score)


def _read_on_scale(defn: ExternalEvaluatorDef, value: ExternalValue) -> Read | str:
    """The imported label (else value) as a value of the criterion's (ordinal or categorical) scale, or why not."""
    given = value.label if isinstance(value.label, str) and value.label.strip() else value.value
    if given is None or (isinstance(given, str) and not given.strip()):
        return "no value and no label"
    try:
        level = defn.scale.parse(given)
    except ValueError as exc:
        return str(exc)
    score = defn.scale.score(level)
    return Read(score=score, verdict="pass" if score >= defn.pass_score else "fail", value=level)


def _read(score: float, pass_score: float) -> Read:
    verdict: Literal["pass", "fail"] = "pass" if score >= pass_score else "fail"
    return Read(score=score, verdict=verdict, value=verdict)


def _number(value: JsonValue, scale: tuple[float, float]) -> float | None:
    if isinstance(value, bool):
        return scale[1] if value else scale[0]
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def latest_imports(store: Store, evaluator: str) -> dict[str, ExternalValue]:
    """``{unit id: the latest imported value}`` of one external evaluator (a later import wins)."""
    out: dict[str, ExternalValue] = {}
    with store.session() as s:
        q = (select(ScoreRow.unit_id, ScoreRow.raw).join(RunRow, RunRow.run_id == ScoreRow.run_id)
             .where(RunRow.kind == IMPORT_RUN_KIND, ScoreRow.evaluator_name == evaluator).order_by(ScoreRow.id))
        for unit_id, raw in s.execute(q):
            try:
                out[unit_id] = ExternalValue.model_validate(json.loads(raw or "{}"))
            except ValueError:
                continue
    return out
