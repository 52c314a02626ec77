"""Tune an ``llm_judge`` on the *dev* split, report the winner once on *test*.

Candidates cross prompt variants with few-shot choices. Prompt variants: the evaluator's
own prompt, the shipped default prompt when it differs, and deterministic instruction
variants of the evaluator's prompt (:data:`INSTRUCTION_VARIANTS`): verdict before reasoning,
strict wording, lenient wording, and the criterion restated at the end. Few-shot choices:
0..k examples per label drawn from the *train* split (several seeded draws per k). Each
candidate scores the dev items only; the winner has the highest dev agreement (ties: higher
kappa, then fewer examples, then the earlier variant in the list). Only the winner is
calibrated, which is the one look at the test split; its version is what gets written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from assay._store import Store
from assay.annotations.store import list_annotations
from assay.calibration.calibrate import CalibrationReport, calibrate
from assay.calibration.dataset import build_dataset
from assay.calibration.draft import choose_examples, with_examples
from assay.calibration.splits import DEFAULT_FRACTIONS, persist_split, split_dataset
from assay.calibration.stats import CalibrationMetrics, metrics_with_ci
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, default_prompt, evaluate_many
from assay.exceptions import JudgeError, UsageError
from assay.models import JudgeClient
from assay.settings import CalibrationSettings, JudgeSettings

_ANSWER = ("Answer with one JSON object and nothing else: first \"verdict\": "
           "{% for label in labels %}\"{{ label }}\"{% if not loop.last %} or {% endif %}{% endfor %}, "
           "then \"reason\" (one or two sentences naming the steps that decide it).\n"
           '{"verdict": "...", "reason": "..."}\n')
_RESTATED = 'The criterion again, "{{ criterion.name }}": {{ criterion.text }}\n'
INSTRUCTION_VARIANTS: dict[str, str] = {
    "verdict-first": "\nDecide first, then explain. " + _ANSWER,
    "strict": ("\nBe strict: answer pass only when the steps shown clearly meet the criterion; when a step breaks "
               "it, or the timeline does not show that it is met, answer fail.\n" + _RESTATED),
    "lenient": ("\nBe lenient: answer fail only when a step shown clearly breaks the criterion; when nothing "
                "shown breaks it, answer pass.\n" + _RESTATED),
    "restated": "\n" + _RESTATED,
}
"""Instruction blocks appended to the evaluator's prompt, one variant each (Jinja2, same names as the prompt)."""


def prompt_variants(defn: EvaluatorDef, instructions: Sequence[str] = tuple(INSTRUCTION_VARIANTS)) -> dict[str, str]:
    """Name -> prompt template of each variant tried: ``as-written``, ``default`` (when it differs), then
    the evaluator's prompt with each named block of :data:`INSTRUCTION_VARIANTS` appended.

    Raises:
        UsageError: an unknown instruction variant name.
    """
    unknown = [n for n in instructions if n not in INSTRUCTION_VARIANTS]
    if unknown:
        raise UsageError(f"unknown prompt variant(s) {', '.join(unknown)}; known: {', '.join(INSTRUCTION_VARIANTS)}")
    own = defn.prompt_template()
    variants = {"as-written": own}
    if own != default_prompt():
        variants["default"] = default_prompt()
    for name in instructions:
        variants[name] = own.rstrip("\n") + "\n" + INSTRUCTION_VARIANTS[name]
    return variants


class Candidate(BaseModel):
    """One evaluator variant tried on dev."""

    model_config = ConfigDict(frozen=True)

    version: str
    variant: str = "as-written"
    prompt: str
    shots_per_label: int
    example_seed: int
    examples: tuple[str, ...]
    dev: CalibrationMetrics


class TuneReport(BaseModel):
    """The candidates on dev, the winner, and its one test-split calibration."""

    model_config = ConfigDict(frozen=True)

    candidates: tuple[Candidate, ...]
    winner: Candidate
    calibration: CalibrationReport


def _rank(c: Candidate) -> tuple[float, float, int]:
    return (c.dev.agreement.value or 0.0, c.dev.kappa.value if c.dev.kappa.value is not None else -1.0,
            -c.shots_per_label)


def _winner(candidates: list[Candidate]) -> Candidate:
    """The best-ranked candidate; among equals the first tried (``max`` keeps the first maximum)."""
    return max(candidates, key=_rank)


def tune(store: Store, defn: EvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings,
         shots: Sequence[int] = (0, 1, 2), example_seeds: Sequence[int] = (0, 1),
         fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0, n_boot: int = 1000,
         progress: Callable[[int], None] | None = None,
         instructions: Sequence[str] = tuple(INSTRUCTION_VARIANTS),
         certification: CalibrationSettings | None = None) -> tuple[EvaluatorDef, TuneReport]:
    """Search few-shot choice and prompt variants on dev; calibrate the winner once on test.

    Args:
        shots: few-shot examples per label to try (0 = none).
        example_seeds: seeded draws of the train examples per ``k > 0``.
        instructions: names of :data:`INSTRUCTION_VARIANTS` to try (``()``: the evaluator's
            and the default prompt only). Candidates = variants x few-shot choices, each
            scoring every dev unit once.
        certification: how the winner is certified on test (default :class:`CalibrationSettings`).

    Returns:
        (the winning evaluator definition, the report). Writing it to a file is the caller's;
        the definition's ``description`` names the winning variant and its dev agreement.

    Raises:
        UsageError: a kind without a judge (code), the dev split is empty, or an unknown variant name.
        JudgeError: no candidate scored a single dev unit (the test split is then left untouched).
    """
    if not defn.uses_judge:
        raise UsageError(f"{defn.name} is a {defn.kind} evaluator: only llm_judge and hybrid evaluators are tuned")
    ds = build_dataset(store, defn.criterion.name)
    if ds.scale_kind != "binary":
        raise UsageError(f"criterion {ds.criterion!r} is {ds.scale_kind}: --tune searches prompts of binary "
                         "(pass/fail) criteria only; calibrate without --tune")
    split = persist_split(store, split_dataset(ds, fractions, seed))
    dev_ids = split.units("dev")
    if not dev_ids:
        raise UsageError("the dev split is empty: label more units or give dev a share (--split)")
    labels = {i.unit_id: str(i.target) for i in ds.items}
    rationale = {a.unit_id: a.rationale for a in list_annotations(store, defn.criterion.name) if a.rationale}
    dev_units = store.units(dev_ids)
    variants = prompt_variants(defn, instructions)
    seen: set[str] = set()
    candidates: list[Candidate] = []
    for name, prompt in variants.items():
        base = defn.model_copy(update={"judge": defn.judge_spec().model_copy(update={"prompt": prompt})})
        for k in shots:
            for ex_seed in example_seeds if k else (0,):
                examples = choose_examples(store, defn.criterion.name, split, k, ex_seed)
                variant = with_examples(store, base, examples, rationale) if examples else base
                version = content_version(variant)
                if version in seen:
                    continue
                seen.add(version)
                results = evaluate_many(variant, dev_units, judge, settings, progress=progress)
                scored = [r for r in results if isinstance(r, EvaluationResult)]
                dev = metrics_with_ci([labels[r.unit_id] for r in scored], [r.verdict for r in scored], n_boot, seed)
                candidates.append(Candidate(version=version, variant=name, prompt=variant.prompt_template(),
                                            shots_per_label=k, example_seed=ex_seed,
                                            examples=tuple(u for u, _ in examples), dev=dev))
    winner = _winner(candidates)
    if winner.dev.n == 0:
        raise JudgeError(f"no candidate could be scored on the {len(dev_ids)} dev units (every judge call failed "
                         "or went unscored); nothing was written", judge.model_name if judge else "")
    acc = winner.dev.agreement.value
    note = (f"tuned on dev ({len(candidates)} candidates): prompt variant {winner.variant}, "
            f"{winner.shots_per_label} example(s) per label, dev agreement "
            f"{'undefined' if acc is None else f'{acc:.3f}'} on {winner.dev.n} units")
    best = defn.model_copy(update={"judge": defn.judge_spec().model_copy(update={"prompt": winner.prompt}),
                                   "description": f"{defn.description}; {note}" if defn.description else note})
    report = calibrate(store, best, judge, settings, progress, dataset=ds, fractions=fractions, seed=seed,
                       n_boot=n_boot, certification=certification)
    return best, TuneReport(candidates=tuple(candidates), winner=winner, calibration=report)
