"""Annotations (one judgment of one unit) and rubric criteria."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Label = Literal["pass", "fail"]
AnnotatorKind = Literal["human", "llm", "code"]


class Annotation(BaseModel):
    """One judgment of one unit, an append-only record with provenance.

    ``severity`` is 1 (minor) .. 4 (critical) or None; ``criterion`` names the rubric
    criterion it was made against (None: the unit as a whole) and ``criterion_version``
    the version of that criterion's text at labelling time.
    """

    model_config = ConfigDict(frozen=True)

    unit_id: str
    annotator: str
    annotator_kind: AnnotatorKind = "human"
    label: Label
    severity: int | None = Field(None, ge=1, le=4)
    rationale: str = ""
    criterion: str | None = None
    criterion_version: int | None = None
    source: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class Criterion(BaseModel):
    """A rubric criterion: the written statement of what "good" means for one signature.

    ``version`` increases by one each time the text is edited.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    text: str
    version: int
    signature_id: int | None = None
