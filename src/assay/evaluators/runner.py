"""Score units with an evaluator: :func:`evaluate` (one unit) and :func:`evaluate_many` (a batch).

Also the built-in kinds' runners (``code``, ``llm_judge``, ``hybrid``, ``external``), registered with
:func:`~assay.evaluators.kinds.evaluator_kind` exactly as an extension's kind is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import jinja2

from assay._store.store import Store
from assay.annotations.scale import flip
from assay.evaluators.code import Defer, NotApplicable, check_output, check_value, resolve_callable
from assay.evaluators.definition import (
    CodeEvaluatorDef,
    EvaluatorDef,
    HybridEvaluatorDef,
    LlmJudgeEvaluatorDef,
    template_environment,
)
from assay.evaluators.external import ExternalEvaluatorDef, latest_imports, read_value
from assay.evaluators.kinds import KindRunner, evaluator_kind, runner_class
from assay.evaluators.results import Evaluation, EvaluationResult, EvaluatorFailure
from assay.evaluators.verdict import Unparsed, parse_verdict
from assay.exceptions import ConfigError, EnvironmentProblem, JudgeError, JudgeUnreachable, UsageError
from assay.models.base import JudgeClient
from assay.models.factory import make_judge
from assay.settings import JudgeSettings
from assay.traces.model import Step, Unit
from assay.traces.timeline import media_note, render_timeline, step_timeline

J = TypeVar("J", bound=EvaluatorDef)
Progress = Callable[[int], None]
"""Called with ``1`` after each unit (the number of units just done, like a progress bar's ``advance(n)``)."""

REASON_MAX_CHARS = 300
STOPS_BATCH = (UsageError, EnvironmentProblem, JudgeUnreachable)
"""Errors that stop a batch instead of becoming one unit's error: misconfiguration, a missing package or model,
and a judge whose endpoint is unreachable (its circuit breaker opened: every unit would fail the same way)."""


_SHARED_STEPS: ContextVar[dict[int, tuple[Unit, list[Step]]] | None] = ContextVar("assay_shared_steps", default=None)


@contextmanager
def shared_steps() -> Iterator[None]:
    """Within the block, every evaluator run on the same unit object reads that unit's step timeline once.

    For callers that run several evaluators over the same loaded units (the gate does, a chunk at
    a time): the timeline is a pure function of the frozen unit, so it is built on first use and
    handed out again as a new list of the same (frozen) steps. The cache lives in the calling
    context only (units scored on a thread pool build their own) and ends with the block.
    """
    token = _SHARED_STEPS.set({})
    try:
        yield
    finally:
        _SHARED_STEPS.reset(token)


def unit_steps(unit: Unit) -> list[Step]:
    """:func:`~assay.traces.timeline.step_timeline` of ``unit``, built once per unit inside :func:`shared_steps`."""
    cache = _SHARED_STEPS.get()
    if cache is None:
        return step_timeline(unit)
    hit = cache.get(id(unit))
    if hit is None or hit[0] is not unit:  # the unit is kept in the entry, so its id is not reused meanwhile
        hit = cache[id(unit)] = (unit, step_timeline(unit))
    return list(hit[1])


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
                  template: jinja2.Template | None = None, second: Unit | None = None) -> str:
    """The judge prompt for one unit: the template rendered with ``criterion`` (with its ``scale``),
    ``timeline``, ``system_prompt``, ``labels`` (:meth:`~EvaluatorDef.verdict_labels`) and ``scale`` (the
    judge's numeric score range, or None); with ``second`` (a pairwise comparison) also ``timeline_first``
    (``unit``'s, shown first) and ``timeline_second``.

    A timeline leaves out system prompts and keeps the newest steps within ``settings.max_prompt_chars``
    characters (half each for a pair), media as ``[image: reference]`` markers and a first line saying the
    run held media the judge cannot see (:func:`~assay.traces.timeline.media_note`); ``system_prompt`` is
    the unit's system prompts / instructions (each distinct one once, in order) within
    ``settings.max_system_chars``, a budget of its own, so a long policy never pushes the conversation out
    (the shipped default prompts do not use it: a template that wants the policy names
    ``{{ system_prompt }}``). ``template`` is ``compile_prompt(defn)`` when the caller renders many units
    (None: compiled here).

    Raises:
        ConfigError: the template uses a name that is not defined.
    """
    settings = settings or _default_settings()
    budget = settings.max_prompt_chars if second is None else settings.max_prompt_chars // 2
    steps = unit_steps(unit)
    timeline = judge_timeline(steps, budget)
    pair = {} if second is None else {
        "timeline_first": timeline, "timeline_second": judge_timeline(unit_steps(second), budget)}
    template = template or compile_prompt(defn)
    try:
        spec = defn.judge_spec()
        return template.render(criterion=defn.criterion, timeline=timeline, labels=list(defn.verdict_labels()),
                               scale=spec.scale, system_prompt=system_prompt(steps, settings.max_system_chars),
                               **pair)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template: {exc}", f"evaluator {defn.name}") from exc


def judge_timeline(steps: list[Step], max_chars: int) -> str:
    """The steps as a judge reads them: system prompts left out, the newest kept within ``max_chars``
    characters, with :func:`~assay.traces.timeline.media_note` first when the run held media."""
    note = media_note(steps)
    budget = max(1, max_chars - (len(note) + 1 if note else 0))
    timeline = render_timeline(steps, max_chars=budget, skip_system=True)
    return f"{note}\n{timeline}" if note else timeline


def system_prompt(steps: Sequence[Step], max_chars: int) -> str:
    """The unit's system prompts / instructions: the text of each distinct ``system`` step, in order, blank-line
    separated, cut to ``max_chars`` characters (a marker says how many were left out); "" when there is none."""
    text = "\n\n".join(dict.fromkeys(s.text.strip() for s in steps if s.kind == "system" and s.text.strip()))
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[... {len(text) - max_chars} more characters of the system prompt omitted ...]"


def judge_settings_for(defn: EvaluatorDef, settings: JudgeSettings | None) -> JudgeSettings:
    """The workspace judge settings with the evaluator's model override applied."""
    settings = settings or _default_settings()
    model = defn.judge_spec().model if defn.uses_judge else None
    return settings.model_copy(update={"model": model}) if model else settings


def _default_settings() -> JudgeSettings:
    return JudgeSettings.model_validate({})


def make_runner(defn: EvaluatorDef, judge: JudgeClient | None = None, settings: JudgeSettings | None = None,
                store: Store | None = None) -> KindRunner[Any]:
    """The runner of ``defn``'s kind, bound to its version, judge and resolved check (and ``store``, for a kind
    that reads it: ``needs_store``).

    Raises:
        ConfigError: unknown kind, a check that cannot be imported, an invalid prompt template, or a kind that
            reads the store without one.
        MissingDependency: the judge's package is not installed.
    """
    cls = runner_class(defn.kind)
    if cls.needs_store:
        return cls(defn, judge, judge_settings_for(defn, settings), store=store)  # type: ignore[call-arg]
    return cls(defn, judge, judge_settings_for(defn, settings))


@evaluator_kind("code")
class CodeRunner(KindRunner[CodeEvaluatorDef]):
    """``code``: the check decides every unit (it may say the criterion does not apply)."""

    definition = CodeEvaluatorDef

    def __init__(self, defn: CodeEvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        super().__init__(defn, None, settings)
        self.check = resolve_callable(defn.code.callable)

    def run(self, unit: Unit) -> Evaluation:
        if self.defn.scale.kind == "pairwise":
            return self.failure(unit, "error", "a pairwise evaluator compares two units: use evaluate_pairs",
                                decided_by="code")
        return self._decide(unit, None, lambda: self.check(unit_steps(unit), unit, **self.defn.code.args))

    def run_pair(self, first: Unit, second: Unit, swapped: bool = False) -> Evaluation:
        return self._decide(first, second, lambda: self.check(unit_steps(first), first, unit_steps(second),
                                                              second, **self.defn.code.args))

    def _decide(self, unit: Unit, second: Unit | None, call: Callable[[], object]) -> Evaluation:
        pair: dict[str, Any] = {} if second is None else {"second_unit_id": second.unit_id}
        try:
            value = call()
            if isinstance(value, NotApplicable):
                return self.failure(unit, "not_applicable", value.reason, decided_by="code", **pair)
            return scored_by_check(self, unit, value, "", **pair)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return self.failure(unit, "error", f"{type(exc).__name__}: {exc}", decided_by="code", **pair)


def scored_by_check(runner: KindRunner[Any], unit: Unit, value: object, prefix: str, **pair: Any) -> Evaluation:
    """The result of a check's return value: a score in [0, 1] on a binary criterion, else a value on the
    criterion's scale (its score from the scale). ``prefix`` starts the reason (a hybrid's ``[code] ``).

    Raises:
        ValueError: a return value of the wrong shape or off the scale.
    """
    scale = runner.defn.scale
    if scale.kind == "binary":
        score, reason = check_output(value)
        return runner.result(unit, score, prefix + reason, "code", **pair)
    level, reason = check_value(value, scale)
    return runner.result(unit, scale.score(level), prefix + reason, "code", value=level, **pair)


class JudgeRunner(KindRunner[J]):
    """Base of kinds that ask a judge: compiles the prompt once, builds the judge when none is given."""

    def __init__(self, defn: J, judge: JudgeClient | None, settings: JudgeSettings) -> None:
        super().__init__(defn, judge, settings)
        self.template = compile_prompt(defn)
        self.judge = judge or make_judge(settings)

    def ask_judge(self, unit: Unit, second: Unit | None = None, swapped: bool = False) -> Evaluation:
        """The judge's verdict on ``unit`` (or the failure to get one), ``decided_by="judge"``.

        With ``second`` (a pairwise criterion) the judge compares the two, ``unit`` shown first unless
        ``swapped``; the result's value is relative to ``unit`` either way (a swapped verdict is flipped back).
        """
        assert self.judge is not None
        spec = self.defn.judge_spec()
        labels: Mapping[str, float] = self.defn.verdict_labels()
        pair: dict[str, Any] = {} if second is None else {"second_unit_id": second.unit_id, "swapped": swapped}
        shown = (unit, second) if not swapped or second is None else (second, unit)
        prompt = render_prompt(self.defn, shown[0], self.settings, self.template, second=shown[1])
        try:
            reply = self.judge.complete([{"role": "user", "content": prompt}], verdict_schema(list(labels), spec.scale))
        except STOPS_BATCH:
            raise
        except JudgeError as exc:
            return self.failure(unit, "error", str(exc), exc.raw, getattr(exc, "attempts", 1), "judge", **pair)
        except Exception as exc:
            return self.failure(unit, "error", f"{type(exc).__name__}: {exc}", decided_by="judge", **pair)
        parsed = parse_verdict(reply.text, labels, spec.scale, self.defn.pass_score)
        if isinstance(parsed, Unparsed):
            return self.failure(unit, parsed.status, parsed.problem, reply.text, reply.attempts, "judge", **pair)
        score, value = parsed.score, None
        scale = self.defn.scale
        if scale.kind != "binary" and parsed.label is not None:
            value = scale.parse(parsed.label)
            value = flip(value) if swapped else value
            score = scale.score(value)
        return self.result(unit, score, parsed.reason, "judge", label=parsed.label, raw=reply.text,
                           repaired=parsed.repaired, cached=reply.cached, warnings=parsed.warnings,
                           attempts=reply.attempts, value=value, **pair)


@evaluator_kind("llm_judge")
class LlmJudgeRunner(JudgeRunner[LlmJudgeEvaluatorDef]):
    """``llm_judge``: the judge decides every unit."""

    definition = LlmJudgeEvaluatorDef

    def run(self, unit: Unit) -> Evaluation:
        if self.defn.scale.kind == "pairwise":
            return self.failure(unit, "error", "a pairwise evaluator compares two units: use evaluate_pairs")
        return self.ask_judge(unit)

    def run_pair(self, first: Unit, second: Unit, swapped: bool = False) -> Evaluation:
        return self.ask_judge(first, second, swapped)


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
        if self.defn.scale.kind == "pairwise":
            return self.failure(unit, "error", "a pairwise evaluator compares two units: use evaluate_pairs")
        return self._decide(unit, None, False)

    def run_pair(self, first: Unit, second: Unit, swapped: bool = False) -> Evaluation:
        return self._decide(first, second, swapped)

    def _decide(self, unit: Unit, second: Unit | None, swapped: bool) -> Evaluation:
        pair: dict[str, Any] = {} if second is None else {"second_unit_id": second.unit_id, "swapped": swapped}
        extra = () if second is None else (unit_steps(second), second)
        try:
            decision = self.check(unit_steps(unit), unit, *extra, **self.defn.code.args)
            if decision is None or isinstance(decision, Defer):
                why = f" (code part: {decision.reason})" if decision is not None and decision.reason else ""
                return _noted(self.ask_judge(unit, second, swapped), "[judge] ", why)
            if isinstance(decision, NotApplicable):
                return self.failure(unit, "not_applicable", f"[code] {decision.reason}", decided_by="code", **pair)
            return scored_by_check(self, unit, decision, "[code] ", **pair)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return self.failure(unit, "error", f"[code] {type(exc).__name__}: {exc}", decided_by="code", **pair)


@evaluator_kind("external")
class ExternalRunner(KindRunner[ExternalEvaluatorDef]):
    """``external``: the verdict a team's own judge gave the unit, imported into the store
    (:mod:`assay.evaluators.external`); the latest import of a unit counts, re-read with the current file."""

    definition = ExternalEvaluatorDef
    needs_store = True

    def __init__(self, defn: ExternalEvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings,
                 store: Store | None = None) -> None:
        super().__init__(defn, None, settings)
        if store is None:
            raise ConfigError("an external evaluator reads its imported scores from the store; none was given",
                              f"evaluator {defn.name}")
        self.imported = latest_imports(store, defn.name)

    def run(self, unit: Unit) -> Evaluation:
        value = self.imported.get(unit.unit_id)
        if value is None:
            return self.failure(unit, "unscored", "no imported score for this unit (assay scores import)")
        read = read_value(self.defn, value)
        raw = value.model_dump_json(exclude_none=True)
        if isinstance(read, str):
            return EvaluatorFailure(evaluator=self.defn.name, evaluator_version=self.version, unit_id=unit.unit_id,
                                    judge_model=value.model, status="unscored", error=read, raw=raw)
        return EvaluationResult(evaluator=self.defn.name, evaluator_version=self.version, unit_id=unit.unit_id,
                                judge_model=value.model, score=read.score, verdict=read.verdict,
                                reason=value.reason, label=value.label, raw=raw, value=read.value)


def _noted(evaluation: Evaluation, before: str, after: str) -> Evaluation:
    """``evaluation`` with its reason (or error) between ``before`` and ``after``."""
    if isinstance(evaluation, EvaluationResult):
        return evaluation.model_copy(update={"reason": before + evaluation.reason + after})
    return evaluation.model_copy(update={"error": before + evaluation.error + after})


def evaluate(defn: EvaluatorDef, unit: Unit, judge: JudgeClient | None = None,
             settings: JudgeSettings | None = None, store: Store | None = None) -> Evaluation:
    """Score one unit with one evaluator.

    Args:
        defn: the evaluator.
        unit: the unit to score.
        judge: the judge for ``llm_judge`` evaluators; None builds one from ``settings``
            (with the evaluator's model override). A judge given here is used as is.
        settings: judge settings (default :class:`JudgeSettings`); ``max_prompt_chars``
            bounds the timeline in the prompt.
        store: the store, for kinds that read it (``external``: the imported scores).

    Returns:
        :class:`EvaluationResult` (score in [0, 1], verdict pass when score >= ``pass_score``),
        or :class:`EvaluatorFailure`: ``"error"`` when the judge call or the check failed
        (timeout, transport, exception, out-of-range value), ``"unscored"`` when the reply
        held no readable verdict (raw reply kept).

    Raises:
        ConfigError: the check cannot be imported or the prompt template is invalid.
        MissingDependency: the judge's package is not installed.
    """
    return make_runner(defn, judge, settings, store).run(unit)


def evaluate_many(defn: EvaluatorDef, units: Sequence[Unit], judge: JudgeClient | None = None,
                  settings: JudgeSettings | None = None, progress: Progress | None = None,
                  concurrency: int | None = None, store: Store | None = None) -> list[Evaluation]:
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
    runner = make_runner(defn, judge, settings, store)
    return _run_all(runner, [(u, None) for u in units], runner.run, settings, progress, concurrency)


def evaluate_pairs(defn: EvaluatorDef, pairs: Sequence[tuple[Unit, Unit]], judge: JudgeClient | None = None,
                   settings: JudgeSettings | None = None, progress: Progress | None = None,
                   concurrency: int | None = None, swapped: bool = False) -> list[Evaluation]:
    """Compare pairs of units with a pairwise evaluator (same arguments as :func:`evaluate_many`).

    Each pair ``(first, second)`` gives one result whose ``value`` is first, second or tie relative to
    ``first`` and whose ``unit_id`` is ``first``'s (``second_unit_id`` the other). ``swapped`` shows the
    judge the second unit first (the value is flipped back): asking both orders measures position bias.

    Returns:
        one result or failure per pair, in input order.

    Raises:
        UsageError: the evaluator's criterion is not pairwise.
        ConfigError, MissingDependency: as :func:`evaluate_many`.
    """
    if defn.scale.kind != "pairwise":
        raise UsageError(f"{defn.name} scores a {defn.scale.kind} criterion: evaluate_pairs needs a pairwise one")
    runner = make_runner(defn, judge, settings)

    def compare(first: Unit, second: Unit | None) -> Evaluation:
        assert second is not None
        return runner.run_pair(first, second, swapped)

    return _run_all(runner, list(pairs), compare, settings, progress, concurrency)


def _run_all(runner: KindRunner[Any], jobs: Sequence[tuple[Unit, Unit | None]],
             run: Callable[..., Evaluation], settings: JudgeSettings | None, progress: Progress | None,
             concurrency: int | None) -> list[Evaluation]:
    """``run(*job)`` for every job, in order, on up to ``concurrency`` threads; a failed job never stops the rest."""
    workers = concurrency or (settings.concurrency if settings is not None else 1)

    def one(job: tuple[Unit, Unit | None]) -> Evaluation:
        try:
            return run(job[0]) if job[1] is None else run(*job)
        except STOPS_BATCH:
            raise
        except Exception as exc:
            return runner.failure(job[0], "error", f"{type(exc).__name__}: {exc}")

    if workers <= 1 or len(jobs) <= 1:
        out: list[Evaluation] = []
        for job in jobs:
            out.append(one(job))
            if progress is not None:
                progress(1)
        return out
    results: dict[int, Evaluation] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="assay-judge") as pool:
        futures = {pool.submit(one, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(1)
    return [results[i] for i in range(len(jobs))]
