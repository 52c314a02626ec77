"""Evaluators: score any unit on one dimension, normalised to [0, 1], versioned by content hash.

Four kinds: ``code`` (a Python check over the step timeline), ``llm_judge`` (a Jinja2
prompt sent to a judge model; the reply's verdict is parsed strictly), ``hybrid`` (a
check decides what it can and defers the rest to a judge) and ``external`` (verdicts a judge
run elsewhere gave, imported: :mod:`assay.evaluators.external`). More kinds come from packages
through the entry-point group ``assay.evaluators`` (:mod:`assay.evaluators.kinds`).
Definitions round-trip to YAML; results are immutable, and a failure is never a score. An evaluator
returns a value on its criterion's scale (pass/fail, a level, a class; a preference between two units
from :func:`evaluate_pairs`) beside its score in [0, 1].
"""

from assay.evaluators.code import CodeCheck, Defer, NotApplicable, check_output, check_value, resolve_callable
from assay.evaluators.definition import (
    CodeEvaluatorDef,
    CodeSpec,
    CriterionRef,
    EvaluatorDef,
    HybridEvaluatorDef,
    JudgeSpec,
    LlmJudgeEvaluatorDef,
    content_version,
    default_prompt,
    evaluator_json_schema,
    load_evaluator,
    load_evaluators,
    save_evaluator,
)
from assay.evaluators.external import ExternalEvaluatorDef, ExternalSpec
from assay.evaluators.kinds import KindRunner, evaluator_kind
from assay.evaluators.results import BatchReport, Evaluation, EvaluationResult, EvaluatorFailure
from assay.evaluators.runner import Progress, evaluate, evaluate_many, evaluate_pairs, render_prompt, verdict_schema
from assay.evaluators.verdict import ParsedVerdict, Unparsed, parse_verdict

__all__ = [
    "BatchReport", "CodeCheck", "CodeEvaluatorDef", "CodeSpec", "CriterionRef", "Defer", "Evaluation",
    "EvaluationResult", "EvaluatorDef", "EvaluatorFailure", "ExternalEvaluatorDef", "ExternalSpec",
    "HybridEvaluatorDef", "JudgeSpec", "KindRunner", "LlmJudgeEvaluatorDef", "NotApplicable", "ParsedVerdict",
    "Progress", "Unparsed", "check_output", "check_value", "content_version", "default_prompt", "evaluate",
    "evaluate_many", "evaluate_pairs", "evaluator_json_schema", "evaluator_kind", "load_evaluator", "load_evaluators",
    "parse_verdict", "render_prompt", "resolve_callable", "save_evaluator", "verdict_schema",
]
