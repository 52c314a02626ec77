"""Evaluator kinds: each kind is a runner registered in one typed registry, extended through entry points.

A kind is a :class:`KindRunner` subclass whose ``definition`` is the kind's
:class:`~assay.evaluators.EvaluatorDef` subclass (with ``kind: Literal["<name>"]``), registered
with :func:`evaluator_kind`. The built-ins (``code``, ``llm_judge``, ``hybrid``, in
:mod:`assay.evaluators.runner`) register exactly so; a package adds a kind through the
entry-point group ``assay.evaluators``::

    [project.entry-points."assay.evaluators"]
    sql = "my_package.kinds:SqlRunner"      # or a module whose import calls @evaluator_kind

The registered definitions form the discriminated union (on ``kind``) that evaluator files are
validated against and that the JSON Schema describes (:func:`definitions_adapter`).
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeGuard, TypeVar, Union

from pydantic import Discriminator, TypeAdapter

from assay._util.registry import Registry
from assay.evaluators.definition import EvaluatorDef, content_version
from assay.evaluators.results import Evaluation, EvaluationResult, EvaluatorFailure
from assay.exceptions import ConfigError
from assay.models.base import JudgeClient
from assay.settings import JudgeSettings
from assay.traces.model import Unit

D = TypeVar("D", bound=EvaluatorDef)
R = TypeVar("R", bound="type[KindRunner[Any]]")
DecidedBy = Literal["code", "judge"]
FailureStatus = Literal["unscored", "error", "not_applicable"]


class KindRunner(ABC, Generic[D]):
    """Scores units for one evaluator of one kind: built once per batch, then :meth:`run` per unit.

    Subclasses set ``definition`` (the kind's definition class) and implement :meth:`run`; they
    must be thread-safe after ``__init__`` (batches run units on a thread pool) and keep no
    per-unit state. ``__init__`` raises for misconfiguration (``ConfigError``: a check that cannot
    be imported, a bad prompt; ``MissingDependency``: a judge's SDK), before any unit runs.

    Args:
        defn: the evaluator (an instance of ``definition``).
        judge: the judge client a judge kind uses; None: the kind builds one from ``settings``.
        settings: judge settings with the evaluator's model override applied.
    """

    definition: ClassVar[type[EvaluatorDef]]
    needs_store: ClassVar[bool] = False
    """True for kinds that read the store (``external`` reads imported scores): ``__init__`` then also
    takes ``store=`` (:func:`~assay.evaluators.runner.make_runner` passes the caller's)."""

    def __init__(self, defn: D, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        self.defn = defn
        self.version = content_version(defn)
        self.settings = settings
        self.judge = judge

    @abstractmethod
    def run(self, unit: Unit) -> Evaluation:
        """Score one unit: a result, or a failure (never raise for a unit's own trouble)."""

    def run_pair(self, first: Unit, second: Unit, swapped: bool = False) -> Evaluation:
        """Compare two units on a pairwise criterion (``swapped``: show the second first); the result's value
        is relative to ``first``. Kinds that cannot compare pairs fail every pair."""
        return self.failure(first, "error", f"evaluator kind {self.defn.kind!r} does not compare pairs",
                            second_unit_id=second.unit_id, swapped=swapped)

    def failure(self, unit: Unit, status: FailureStatus, error: str, raw: str | None = None, attempts: int = 1,
                decided_by: DecidedBy | None = None, **pair: Any) -> EvaluatorFailure:
        """A failure of this evaluator on ``unit``; ``judge_model`` is set when the judge was asked;
        ``pair``: ``second_unit_id`` and ``swapped`` of a pairwise comparison."""
        return EvaluatorFailure(evaluator=self.defn.name, evaluator_version=self.version, unit_id=unit.unit_id,
                                judge_model=self._judge_model(decided_by), status=status, error=error, raw=raw,
                                attempts=attempts, decided_by=decided_by, **pair)

    def result(self, unit: Unit, score: float, reason: str, decided_by: DecidedBy, **extra: Any) -> EvaluationResult:
        """A score of ``unit``, verdict pass when ``score >= pass_score``; ``value`` (on the criterion's scale)
        defaults to the verdict on a binary criterion."""
        verdict = "pass" if score >= self.defn.pass_score else "fail"
        if extra.get("value") is None and self.defn.scale.kind == "binary":
            extra["value"] = verdict
        return EvaluationResult(evaluator=self.defn.name, evaluator_version=self.version, unit_id=unit.unit_id,
                                judge_model=self._judge_model(decided_by), score=score, verdict=verdict,
                                reason=reason, decided_by=decided_by, **extra)

    def _judge_model(self, decided_by: DecidedBy | None) -> str | None:
        return self.judge.model_name if self.judge is not None and decided_by != "code" else None


def _is_runner(obj: object) -> TypeGuard[type[KindRunner[Any]]]:
    return (isinstance(obj, type) and issubclass(obj, KindRunner) and isinstance(getattr(obj, "definition", None), type)
            and issubclass(obj.definition, EvaluatorDef))


EVALUATOR_KINDS: Registry[type[KindRunner[Any]]] = Registry(
    "assay.evaluators", "evaluator kind", _is_runner, builtins="assay.evaluators.runner")
"""The evaluator kinds: name -> runner class."""


def evaluator_kind(name: str) -> Callable[[R], R]:
    """Class decorator registering a :class:`KindRunner` as evaluator kind ``name`` (built-ins use it too).

    Raises:
        ConfigError: see :meth:`Registry.register`.
    """
    def add(runner: R) -> R:
        EVALUATOR_KINDS.register(name)(runner)
        return runner

    return add


def runner_class(kind: str) -> type[KindRunner[Any]]:
    """The runner registered for ``kind``.

    Raises:
        ConfigError: no such kind (the message lists the known ones).
    """
    return EVALUATOR_KINDS.get(kind)


def definition_class(kind: str) -> type[EvaluatorDef]:
    """The definition class of ``kind``.

    Raises:
        ConfigError: no such kind.
    """
    return runner_class(kind).definition


def definitions_adapter() -> TypeAdapter[Any]:
    """The discriminated union (on ``kind``) of every registered kind's definition, as a Pydantic ``TypeAdapter``.

    Raises:
        ConfigError: a registered definition's ``kind`` is not ``Literal[<its registered name>]``.
    """
    return _adapter(tuple((name, runner.definition) for name, runner in EVALUATOR_KINDS.items()))


@lru_cache(maxsize=8)
def _adapter(kinds: tuple[tuple[str, type[EvaluatorDef]], ...]) -> TypeAdapter[Any]:
    for name, definition in kinds:
        if typing.get_args(definition.model_fields["kind"].annotation) != (name,):
            raise ConfigError(f"evaluator kind {name!r}: {definition.__name__}.kind must be Literal[{name!r}]",
                              EVALUATOR_KINDS.group)
    union: Any = Union[tuple(definition for _, definition in kinds)]  # noqa: UP007 - built at run time
    tagged: Any = Annotated[union, Discriminator("kind")]
    return TypeAdapter(tagged)
