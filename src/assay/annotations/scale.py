"""The scale of a rubric criterion: what a label on it may say.

Four kinds, a discriminated union on ``kind`` (:data:`Scale`):

* ``binary`` (the default): ``pass`` or ``fail``. Every criterion made before scales existed is binary.
* ``ordinal``: levels with a written anchor each, e.g. 1 "unusable" .. 5 "ready to ship"; the levels
  are integers in increasing order.
* ``categorical``: named classes (e.g. the failure categories of a signature), each with an optional
  description; unordered.
* ``pairwise``: two outputs for one input, labelled ``first`` (the first is better), ``second`` or
  ``tie`` (when ``allow_tie``). The *first* output is the annotation's ``unit_id``, the second its
  ``second_unit_id``; the order the annotator saw them in is recorded beside (``shown_order``).

Every value maps to a score in [0, 1] (:meth:`score`) so an evaluator on any scale scores units the
same way (the gate compares pass rates at the evaluator's ``pass_score``): binary pass 1 / fail 0;
ordinal ``(level - lowest) / (highest - lowest)``; categorical the class's ``score`` (default 0: name
the passing class with ``score: 1``); pairwise first 1, tie 0.5, second 0.

A scale is part of its criterion's version: changing it makes the older labels stale.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

ScaleValue = str | int
"""A label's value on its scale: ``"pass"``/``"fail"``, a level (int), a class name, ``"first"``/``"second"``/
``"tie"``."""

ScaleKind = Literal["binary", "ordinal", "categorical", "pairwise"]
KrippendorffLevel = Literal["nominal", "ordinal", "interval"]
ShownOrder = Literal["first-second", "second-first"]
"""The order a pairwise item's outputs were shown in (left first)."""

PAIRWISE_ALIASES = {"first": "first", "second": "second", "tie": "tie", "1": "first", "2": "second",
                    "a": "first", "b": "second"}
"""Spellings a pairwise value may be given in (case-insensitive): 1/2 as in LLMBar's ``label``, a/b."""


class _Scale(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def choices(self) -> tuple[ScaleValue, ...]:
        """The values a label may take, in the scale's order."""
        raise NotImplementedError

    def parse(self, raw: object) -> ScaleValue:
        """The canonical value of ``raw`` (a level as int, a class name as declared, ...).

        Raises:
            ValueError: ``raw`` is not a value of this scale; the message names the allowed values.
        """
        raise NotImplementedError

    def score(self, value: ScaleValue) -> float:
        """The value's score in [0, 1] (see the module docstring).

        Raises:
            ValueError: not a value of this scale.
        """
        raise NotImplementedError

    def alpha_levels(self) -> tuple[KrippendorffLevel, ...]:
        """The levels of measurement Krippendorff's alpha is reported at for this scale."""
        return ("nominal",)

    def rank(self, value: ScaleValue) -> float:
        """The value's position on the scale (ordinal and interval metrics); nominal scales: its index."""
        return float(self.choices().index(self.parse(value)))

    def describe(self) -> str:
        """One line naming the allowed values, for messages."""
        return ", ".join(str(v) for v in self.choices())

    def _unknown(self, raw: object) -> ValueError:
        return ValueError(f"{raw!r} is not a value of this {self.kind_name()} scale ({self.describe()})")

    def kind_name(self) -> str:
        return str(getattr(self, "kind", ""))


class BinaryScale(_Scale):
    """``pass`` or ``fail`` (the default scale)."""

    kind: Literal["binary"] = "binary"

    def choices(self) -> tuple[ScaleValue, ...]:
        return ("pass", "fail")

    def parse(self, raw: object) -> ScaleValue:
        text = str(raw).strip().lower() if raw is not None else ""
        if text not in ("pass", "fail"):
            raise self._unknown(raw)
        return text

    def score(self, value: ScaleValue) -> float:
        return 1.0 if self.parse(value) == "pass" else 0.0


class OrdinalLevel(BaseModel):
    """One level of an ordinal scale: its number and the written anchor that says what it means."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: int = Field(description="the level, an integer; higher is better")
    anchor: str = Field(min_length=1, description="what a unit at this level looks like")


class OrdinalScale(_Scale):
    """Levels with a written anchor each, e.g. 1..5; higher is better."""

    kind: Literal["ordinal"] = "ordinal"
    levels: tuple[OrdinalLevel, ...] = Field(min_length=2, description="the levels, lowest first")

    @field_validator("levels")
    @classmethod
    def _increasing(cls, levels: tuple[OrdinalLevel, ...]) -> tuple[OrdinalLevel, ...]:
        values = [lv.value for lv in levels]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"levels must be distinct integers in increasing order, got {values}")
        return levels

    def choices(self) -> tuple[ScaleValue, ...]:
        return tuple(lv.value for lv in self.levels)

    def parse(self, raw: object) -> ScaleValue:
        try:
            number = float(str(raw).strip()) if not isinstance(raw, bool) else None
        except ValueError:
            number = None
        if number is None or not number.is_integer() or int(number) not in self.choices():
            raise self._unknown(raw)
        return int(number)

    def score(self, value: ScaleValue) -> float:
        level = int(self.parse(value))
        low, high = self.levels[0].value, self.levels[-1].value
        return (level - low) / (high - low)

    def alpha_levels(self) -> tuple[KrippendorffLevel, ...]:
        return ("nominal", "ordinal", "interval")

    def rank(self, value: ScaleValue) -> float:
        return float(self.parse(value))

    def anchor(self, value: ScaleValue) -> str:
        """The written anchor of a level."""
        level = self.parse(value)
        return next(lv.anchor for lv in self.levels if lv.value == level)

    def describe(self) -> str:
        return f"levels {self.levels[0].value}..{self.levels[-1].value}"


class CategoricalClass(BaseModel):
    """One class of a categorical scale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="the class name, as labels give it")
    description: str = Field(default="", description="when a unit belongs to this class")
    score: float = Field(default=0.0, ge=0.0, le=1.0,
                         description="score of a unit in this class, in [0, 1] (default 0: give the passing "
                                     "class(es) score 1)")

    @field_validator("name")
    @classmethod
    def _trimmed(cls, name: str) -> str:
        if name != name.strip():
            raise ValueError(f"class name {name!r} has leading or trailing spaces")
        return name


class CategoricalScale(_Scale):
    """Named classes, unordered (e.g. which failure category)."""

    kind: Literal["categorical"] = "categorical"
    classes: tuple[CategoricalClass, ...] = Field(min_length=2, description="the classes, in display order")

    @field_validator("classes")
    @classmethod
    def _unique(cls, classes: tuple[CategoricalClass, ...]) -> tuple[CategoricalClass, ...]:
        seen: set[str] = set()
        for c in classes:
            if c.name.lower() in seen:
                raise ValueError(f"class {c.name!r} is named twice (names are compared case-insensitively)")
            seen.add(c.name.lower())
        return classes

    def choices(self) -> tuple[ScaleValue, ...]:
        return tuple(c.name for c in self.classes)

    def parse(self, raw: object) -> ScaleValue:
        text = str(raw).strip().lower() if raw is not None else ""
        for c in self.classes:
            if c.name.lower() == text:
                return c.name
        raise self._unknown(raw)

    def score(self, value: ScaleValue) -> float:
        name = self.parse(value)
        return next(c.score for c in self.classes if c.name == name)


class PairwiseScale(_Scale):
    """Two outputs for one input: ``first`` better, ``second`` better, or ``tie``."""

    kind: Literal["pairwise"] = "pairwise"
    allow_tie: bool = Field(default=True, description="whether 'tie' is a valid label")

    def choices(self) -> tuple[ScaleValue, ...]:
        return ("first", "second", "tie") if self.allow_tie else ("first", "second")

    def parse(self, raw: object) -> ScaleValue:
        value = PAIRWISE_ALIASES.get(str(raw).strip().lower() if raw is not None else "")
        if value is None or value not in self.choices():
            raise self._unknown(raw)
        return value

    def score(self, value: ScaleValue) -> float:
        return {"first": 1.0, "tie": 0.5, "second": 0.0}[str(self.parse(value))]

    def alpha_levels(self) -> tuple[KrippendorffLevel, ...]:
        return ("nominal", "ordinal")

    def rank(self, value: ScaleValue) -> float:
        """second 0 < tie 1 < first 2: a tie lies between the two preferences."""
        return {"second": 0.0, "tie": 1.0, "first": 2.0}[str(self.parse(value))]


Scale = Annotated[BinaryScale | OrdinalScale | CategoricalScale | PairwiseScale, Field(discriminator="kind")]
"""A criterion's scale (see the module docstring)."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Scale)


def read_scale(data: object) -> BinaryScale | OrdinalScale | CategoricalScale | PairwiseScale:
    """A scale from its JSON form (``{"kind": ..., ...}``); None or ``{}`` is the binary scale.

    Raises:
        pydantic.ValidationError: not a scale.
    """
    if not data:
        return BinaryScale()
    scale: BinaryScale | OrdinalScale | CategoricalScale | PairwiseScale = _ADAPTER.validate_python(data)
    return scale


def flip(value: ScaleValue) -> ScaleValue:
    """A pairwise value seen from the other side: first <-> second (tie stays)."""
    return {"first": "second", "second": "first"}.get(str(value), value)


def parse_scale_items(kind: str, lines: str) -> BinaryScale | OrdinalScale | CategoricalScale | PairwiseScale:
    """A scale from a kind and one level or class per line, ``value = anchor`` (ordinal) or
    ``name = description`` (categorical; ``name = description | score`` sets the class's score);
    binary and pairwise take no lines. What the criterion editor and ``assay criteria add`` read.

    Raises:
        ValueError: an unknown kind, a line without ``=``, a level that is not an integer, or a
            scale that fails validation (fewer than two levels or classes, duplicates, ...).
    """
    items = [line.split("=", 1) for line in lines.splitlines() if line.strip()]
    if any(len(parts) != 2 for parts in items):
        raise ValueError("write one level or class per line as 'value = text'")
    pairs = [(k.strip(), v.strip()) for k, v in items]
    if kind == "ordinal":
        try:
            levels = [{"value": int(k), "anchor": v} for k, v in pairs]
        except ValueError:
            raise ValueError("an ordinal level must be an integer, e.g. '3 = mostly right'") from None
        if len(levels) < 2:
            raise ValueError(f"an ordinal scale needs at least two levels, each 'value = anchor' (got {len(levels)}), "
                             "e.g. '1 = unusable' and '5 = fully correct' (assay criteria add: --level, repeated)")
        return OrdinalScale.model_validate({"levels": levels})
    if kind == "categorical":
        classes = []
        for name, rest in pairs:
            text, _, score = rest.rpartition("|") if "|" in rest else (rest, "", "")
            classes.append({"name": name, "description": text.strip(), **({"score": float(score)} if score else {})})
        if len(classes) < 2:
            raise ValueError(f"a categorical scale needs at least two classes, each 'name = description' (got "
                             f"{len(classes)}) (assay criteria add: --class, repeated)")
        return CategoricalScale.model_validate({"classes": classes})
    if kind in ("binary", "pairwise"):
        if pairs:
            raise ValueError(f"a {kind} scale takes no levels or classes")
        return BinaryScale() if kind == "binary" else PairwiseScale()
    raise ValueError(f"unknown scale {kind!r}: binary, ordinal, categorical or pairwise")
