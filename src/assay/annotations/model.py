"""Annotations (one judgment of one unit) and rubric criteria."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.annotations.scale import BinaryScale, Scale, ScaleValue, ShownOrder

Label = Literal["pass", "fail"]
AnnotatorKind = Literal["human", "llm", "code"]


class Annotation(BaseModel):
    """One judgment of one unit, an append-only record with provenance.

    ``value`` is the judgment on the criterion's scale (see :mod:`assay.annotations.scale`): pass/fail,
    a level, a class or a pairwise preference. ``label`` is kept for binary criteria (and labels
    without a criterion), where it equals ``value``; it is None on the other scales. Giving only
    ``label`` sets ``value`` to it. A pairwise judgment compares ``unit_id`` (the first output) with
    ``second_unit_id`` and records the order the annotator saw them in (``shown_order``).
    ``severity`` is 1 (minor) .. 4 (critical) or None; ``criterion`` names the rubric criterion it
    was made against (None: the unit as a whole) and ``criterion_version`` the version of that
    criterion at labelling time. ``blind`` says whether it was made without seeing another label on
    the item (blind review, see the annotation app); None when not known (imports, the API).
    """

    model_config = ConfigDict(frozen=True)

    unit_id: str
    annotator: str
    annotator_kind: AnnotatorKind = "human"
    label: Label | None = Field(None, description="pass or fail on a binary criterion; None on other scales")
    value: ScaleValue | None = Field(None, description="the judgment on the criterion's scale (the label on binary)")
    second_unit_id: str | None = Field(None, description="pairwise: the second output's unit")
    shown_order: ShownOrder | None = Field(None, description="pairwise: the order the outputs were shown in")
    severity: int | None = Field(None, ge=1, le=4)
    rationale: str = ""
    criterion: str | None = None
    criterion_version: int | None = None
    source: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    blind: bool | None = Field(None, description="made without seeing another label on the item; None: not known")

    @model_validator(mode="before")
    @classmethod
    def _value_from_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("value") is None and data.get("label") is not None:
            return {**data, "value": data["label"]}
        return data

    @model_validator(mode="after")
    def _has_a_judgment(self) -> Annotation:
        if self.value is None:
            raise ValueError("an annotation needs a label (pass/fail) or a value on its criterion's scale")
        if self.label is not None and self.value != self.label:
            raise ValueError(f"label {self.label!r} and value {self.value!r} differ")
        return self

    @property
    def item(self) -> str:
        """What was judged: the unit id, or ``"FIRST vs SECOND"`` for a pairwise judgment."""
        return self.unit_id if self.second_unit_id is None else f"{self.unit_id} vs {self.second_unit_id}"


class Criterion(BaseModel):
    """A rubric criterion: the written statement of what "good" means for one signature, and its scale.

    ``version`` increases by one each time the text or the scale is edited.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    text: str
    version: int
    signature_id: int | None = None
    scale: Scale = Field(default_factory=BinaryScale, description="binary (default), ordinal, categorical, pairwise")


def fit_to_scale(annotation: Annotation, scale: Scale) -> Annotation:
    """``annotation`` checked against its criterion's scale, its value in canonical form.

    On a binary scale ``label`` is the value (pass/fail); on the others it is None. A pairwise
    judgment needs ``second_unit_id`` (another unit); other scales take none, and no ``shown_order``.

    Raises:
        ValueError: the value is not on the scale, or the pairwise fields do not fit; the message
            names the allowed values.
    """
    value = scale.parse(annotation.value)
    if scale.kind == "pairwise":
        if not annotation.second_unit_id or annotation.second_unit_id == annotation.unit_id:
            raise ValueError("a pairwise label compares two units: give second_unit (the second output's unit), "
                             "other than unit")
    elif annotation.second_unit_id is not None or annotation.shown_order is not None:
        raise ValueError(f"second_unit and shown_order belong to pairwise labels; this criterion is {scale.kind}")
    label = value if scale.kind == "binary" else None
    return annotation.model_copy(update={"value": value, "label": label})
