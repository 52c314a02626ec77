"""Score units with an evaluator: :func:`evaluate` (one unit) and :func:`evaluate_many` (a batch).

Also the built-in kinds' runners (``code``, ``llm_judge``, ``hybrid``), registered with
:func:`~assay.evaluators.kinds.evaluator_kind` exactly as an extension's kind is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

import jinja2

from assay.evaluators.code import Defer, NotApplicable, check_output, resolve_callable, run_check
from assay.evaluators.definition import (
    CodeEvaluatorDef,
    EvaluatorDef,
    HybridEvaluatorDef,
    LlmJudgeEvaluatorDef,
    template_environment,
)
from assay.evaluators.kinds import KindRunner, evaluator_kind, runner_class
from assay.evaluators.results import Evaluation, EvaluationResult
from assay.evaluators.verdict import Unparsed, parse_verdict
from assay.exceptions import ConfigError, EnvironmentProblem, JudgeError, JudgeUnreachable, UsageError
from assay.models.base import JudgeClient
from assay.models.factory import make_judge
from assay.settings import JudgeSettings
from assay.traces.model import Unit
from assay.traces.timeline import render_timeline, step_timeline

J = TypeVar("J", bound=EvaluatorDef)
Progress = Callable[[int], None]
"""Called with ``1`` after each unit (the number of units just done, like a progress bar's ``advance(n)``)."""

REASON_MAX_CHARS = 300
STOPS_BATCH = (UsageError, EnvironmentProblem, JudgeUnreachable)
"""Errors that stop a batch instead of becoming one unit's error: misconfiguration, a missing package or model,
and a judge whose endpoint is unreachable (its circuit breaker opened: every unit would fail the same way)."""


def verdict_schema(labels: Sequence[str], scale: tuple[float, float] | None = None) -> dict[str, Any]:
    """JSON Schema of a judge reply: ``reason`` (string, at most 300 chars) first, then ``verdict`` (a label).

    With a ``scale`` (low, high) the reply gives a ``score`` number in it instead of a verdict.
    """
    if scale is not None:
        return {"type": "object", "properties": {
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
            "score": {"type": "number", "minimum": scale[0], "maximum": scale[1]}},
            "required": ["reason", "score"], "additionalProperties": False}
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
            "verdict": {"type": "string", "enum": list(labels)},
        },
        "required": ["reason", "verdict"],
        "additionalProperties": False,
    }


def compile_prompt(defn: EvaluatorDef) -> jinja2.Template:
    """The evaluator's prompt template, compiled once (compiling costs more than rendering one unit).

    Raises:
        ConfigError: the template does not compile.
    """
    try:
        return template_environment().from_string(defn.prompt_template())
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template: {exc}", f"evaluator {defn.name}") from exc


def render_prompt(defn: EvaluatorDef, unit: Unit, settings: JudgeSettings | None = None,
                  template: jinja2.Template | None = None) -> str:
    """The judge prompt for one unit: the template rendered with ``criterion``, ``timeline``, ``labels``, ``scale``.

    The timeline leaves out system prompts and keeps the newest steps within
    ``settings.max_prompt_chars`` characters. ``template`` is ``compile_prompt(defn)`` when
    the caller renders many units (None: compiled here).

    Raises:
        ConfigError: the template uses a name that is not defined.
    """
    settings = settings or _default_settings()
    timeline = render_timeline(step_timeline(unit), max_chars=settings.max_prompt_chars, skip_system=True)
    template = template or compile_prompt(defn)
    try:
        spec = defn.judge_spec()
        return template.render(criterion=defn.criterion, timeline=timeline, labels=list(spec.labels), scale=spec.scale)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template: {exc}", f"evaluator {defn.name}") from exc


def judge_settings_for(defn: EvaluatorDef, settings: JudgeSettings | None) -> JudgeSettings:
    """The workspace judge settings with the evaluator's model override applied."""
    settings = settings or _default_settings()
    model = defn.judge_spec().model if defn.uses_judge else None
    return settings.model_copy(update={"model": model}) if model else settings


def _default_settings() -> JudgeSettings:
    return JudgeSettings.model_validate({})


def make_runner(defn: EvaluatorDef, judge: JudgeClient | None = None,
                settings: JudgeSettings | None = None) -> KindRunner[Any]:
    """The runner of ``defn``'s kind, bound to its version, judge and resolved check.

    Raises:
        ConfigError: unknown kind, a check that cannot be imported, or an invalid prompt template.
        MissingDependency: the judge's package is not installed.
    """
    return runner_class(defn.kind)(defn, judge, judge_settings_for(defn, settings))


@evaluator_kind("code")
class CodeRunner(KindRunner[CodeEvaluatorDef]):
    """``code``: the check decides every unit (it may say the criterion does not apply)."""

    definition = CodeEvaluatorDef

    def __init__(self, defn: CodeEvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        super().__init__(defn, None, settings)
        self.check = resolve_callable(defn.code.callable)

    def run(self, unit: Unit) -> Evaluation:
        try:
            value = self.check(step_timeline(unit), unit, **self.defn.code.args)
            if isinstance(value, NotApplicable):
                return self.failure(unit, "not_applicable", value.reason, decided_by="code")
            score, reason = check_output(value)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return self.failure(unit, "error", f"{type(exc).__name__}: {exc}", decided_by="code")
        return self.result(unit, score, reason, "code")


class JudgeRunner(KindRunner[J]):
    """Base of kinds that ask a judge: compiles the prompt once, builds the judge when none is given."""

    def __init__(self, defn: J, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        super().__init__(defn, judge, settings)
        self.template = compile_prompt(defn)
        self.judge = judge or make_judge(settings)

    def ask_judge(self, unit: Unit) -> Evaluation:
        """The judge's verdict on ``unit`` (or the failure to get one), ``decided_by="judge"``."""
        assert self.judge is not None
        spec = self.defn.judge_spec()
        labels: Mapping[str, float] = spec.labels
        prompt = render_prompt(self.defn, unit, self.settings, self.template)
        try:
            reply = self.judge.complete([{"role": "user", "content": prompt}], verdict_schema(list(labels), spec.scale))
        except STOPS_BATCH:
            raise
        except JudgeError as exc:
            return self.failure(unit, "error", str(exc), exc.raw, getattr(exc, "attempts", 1), "judge")
        except Exception as exc:
            return self.failure(unit, "error", f"{type(exc).__name__}: {exc}", decided_by="judge")
        parsed = parse_verdict(reply.text, labels, spec.scale, self.defn.pass_score)
        if isinstance(parsed, Unparsed):
            return self.failure(unit, parsed.status, parsed.problem, reply.text, reply.attempts, "judge")
        return self.result(unit, parsed.score, parsed.reason, "judge", label=parsed.label, raw=reply.text,
                           repaired=parsed.repaired, cached=reply.cached, warnings=parsed.warnings,
                           attempts=reply.attempts)


@evaluator_kind("llm_judge")
class LlmJudgeRunner(JudgeRunner[LlmJudgeEvaluatorDef]):
    """``llm_judge``: the judge decides every unit."""

    definition = LlmJudgeEvaluatorDef

    def run(self, unit: Unit) -> Evaluation:
        return self.ask_judge(unit)


@evaluator_kind("hybrid")
class HybridRunner(JudgeRunner[HybridEvaluatorDef]):
    """``hybrid``: the code part decides what it can, the judge the units it defers.

    The reason (or error) of every result starts with ``[code]`` or ``[judge]``, so the part that
    decided reaches the stored score beside ``decided_by`` (and ``judge_model`` is None when the
    code part decided); a judged unit's reason ends with the code part's reason for deferring.
    """

    definition = HybridEvaluatorDef

    def __init__(self, defn: HybridEvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        super().__init__(defn, judge, settings)
        self.check = resolve_callable(defn.code.callable)

    def run(self, unit: Unit) -> Evaluation:
        try:
            decision = run_check(self.check, step_timeline(unit), unit, self.defn.code.args)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return self.failure(unit, "error", f"[code] {type(exc).__name__}: {exc}", decided_by="code")
        if isinstance(decision, Defer):
            why = f" (code part: {decision.reason})" if decision.reason else ""
            return _noted(self.ask_judge(unit), "[judge] ", why)
        if isinstance(decision, NotApplicable):
            return self.failure(unit, "not_applicable", f"[code] {decision.reason}", decided_by="code")
        score, reason = decision
        return self.result(unit, score, f"[code] {reason}", "code")


def _noted(evaluation: Evaluation, before: str, after: str) -> Evaluation:
    """``evaluation`` with its reason (or error) between ``before`` and ``after``."""
    if isinstance(evaluation, EvaluationResult):
        return evaluation.model_copy(update={"reason": before + evaluation.reason + after})
    return evaluation.model_copy(update={"error": before + evaluation.error + after})


def evaluate(defn: EvaluatorDef, unit: Unit, judge: JudgeClient | None = None,
             settings: JudgeSettings | None = None) -> Evaluation:
    """Score one unit with one evaluator.

    Args:
        defn: the evaluator.
        unit: the unit to score.
        judge: the judge for ``llm_judge`` evaluators; None builds one from ``settings``
            (with the evaluator's model override). A judge given here is used as is.
        settings: judge settings (default :class:`JudgeSettings`); ``max_prompt_chars``
            bounds the timeline in the prompt.

    Returns:
        :class:`EvaluationResult` (score in [0, 1], verdict pass when score >= ``pass_score``),
        or :class:`EvaluatorFailure`: ``"error"`` when the judge call or the check failed
        (timeout, transport, exception, out-of-range value), ``"unscored"`` when the reply
        held no readable verdict (raw reply kept).

    Raises:
        ConfigError: the check cannot be imported or the prompt template is invalid.
        MissingDependency: the judge's package is not installed.
    """
    return make_runner(defn, judge, settings).run(unit)


def evaluate_many(defn: EvaluatorDef, units: Sequence[Unit], judge: JudgeClient | None = None,
                  settings: JudgeSettings | None = None, progress: Progress | None = None,
                  concurrency: int | None = None) -> list[Evaluation]:
    """Score units with one evaluator; a failed unit never stops the batch.

    Same arguments as :func:`evaluate` (one judge serves the whole batch); ``progress``
    is called with ``1`` after each unit. ``concurrency`` (default ``settings.concurrency``,
    else 1) bounds the judge calls in flight (a thread pool; the judge must be thread-safe,
    as assay's clients are). Threads, not asyncio: against a server answering in 200 ms at 16
    in flight, the sync OpenAI SDK in threads reached 94% of the bound and its asyncio client
    81% (``benchmarks/bench_judge.py``, 2 cores); threads also serve the sync local and
    Anthropic clients unchanged. Summarise with :meth:`BatchReport.of`.

    Returns:
        one :class:`EvaluationResult` or :class:`EvaluatorFailure` per unit, in input order.

    Raises:
        ConfigError, MissingDependency: as :func:`evaluate` (misconfiguration stops the batch
        at once instead of failing every unit the same way).
        JudgeUnreachable: the judge's circuit breaker opened (``[judge] breaker_after`` connection failures
            in a row): the batch stops, in-flight units finish or fail fast.
    """
    runner = make_runner(defn, judge, settings)
    workers = concurrency or (settings.concurrency if settings is not None else 1)

    def one(unit: Unit) -> Evaluation:
        try:
            return runner.run(unit)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return runner.failure(unit, "error", f"{type(exc).__name__}: {exc}")

    if workers <= 1 or len(units) <= 1:
        out: list[Evaluation] = []
        for unit in units:
            out.append(one(unit))
            if progress is not None:
                progress(1)
        return out
    results: dict[int, Evaluation] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="assay-judge") as pool:
        futures = {pool.submit(one, unit): i for i, unit in enumerate(units)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(1)
    return [results[i] for i in range(len(units))]
