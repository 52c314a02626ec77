"""Tune an ``llm_judge`` on the *dev* split, report the winner once on *test*.

Candidates: the evaluator's own prompt with 0..k few-shot examples per label drawn from
the *train* split (several seeded draws per k), crossed with prompt variants (the
evaluator's prompt, and the shipped default prompt when it differs). Each candidate scores
the dev items; the winner has the highest dev agreement (ties: higher kappa, then fewer
examples). Only the winner is calibrated, which is the one look at the test split; its
version is what gets written.
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
from assay.settings import JudgeSettings


class Candidate(BaseModel):
    """One evaluator variant tried on dev."""

    model_config = ConfigDict(frozen=True)

    version: str
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


def tune(store: Store, defn: EvaluatorDef, judge: JudgeClient | None, settings: JudgeSettings,
         shots: Sequence[int] = (0, 1, 2), example_seeds: Sequence[int] = (0, 1),
         fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0, n_boot: int = 1000,
         progress: Callable[[int], None] | None = None) -> tuple[EvaluatorDef, TuneReport]:
    """Search few-shot choice and prompt variants on dev; calibrate the winner once on test.

    Returns:
        (the winning evaluator definition, the report). Writing it to a file is the caller's.

    Raises:
        UsageError: not an ``llm_judge``, or the dev split is empty.
        JudgeError: no candidate scored a single dev unit (the test split is then left untouched).
    """
    if defn.kind != "llm_judge":
        raise UsageError(f"{defn.name} is a {defn.kind} evaluator: only llm_judge evaluators are tuned")
    ds = build_dataset(store, defn.criterion.name)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    dev_ids = split.units("dev")
    if not dev_ids:
        raise UsageError("the dev split is empty: label more units or give dev a share (--split)")
    labels = {i.unit_id: i.label for i in ds.items}
    rationale = {a.unit_id: a.rationale for a in list_annotations(store, defn.criterion.name) if a.rationale}
    dev_units = store.units(dev_ids)
    prompts = [defn.prompt_template()] + ([default_prompt()] if defn.prompt_template() != default_prompt() else [])
    seen: set[str] = set()
    candidates: list[Candidate] = []
    for prompt in prompts:
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
                candidates.append(Candidate(version=version, prompt=variant.prompt_template(), shots_per_label=k,
                                            example_seed=ex_seed, examples=tuple(u for u, _ in examples), dev=dev))
    winner = max(candidates, key=_rank)
    if winner.dev.n == 0:
        raise JudgeError(f"no candidate could be scored on the {len(dev_ids)} dev units (every judge call failed "
                         "or went unscored); nothing was written", judge.model_name if judge else "")
    best = defn.model_copy(update={"judge": defn.judge_spec().model_copy(update={"prompt": winner.prompt})})
    report = calibrate(store, best, judge, settings, progress, dataset=ds, fractions=fractions, seed=seed,
                       n_boot=n_boot)
    return best, TuneReport(candidates=tuple(candidates), winner=winner, calibration=report)
