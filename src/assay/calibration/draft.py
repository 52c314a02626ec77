"""Draft evaluators from a criterion: an ``llm_judge`` with few-shot examples from the *train* split,
and a ``code`` check when the criterion names a checkable fact.

Few-shot examples never come from dev or test, so a drafted evaluator can still be
calibrated honestly. The checkable facts recognised: a tool that must, or must not, be
called (a tool name seen in the criterion's labelled units, written in the criterion text;
"never", "not", "without", "don't" before it make it forbidden), and a quoted phrase an
assistant turn must contain.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from assay._store import Store
from assay.annotations.store import get_criterion, list_annotations
from assay.calibration.dataset import build_dataset
from assay.calibration.splits import DEFAULT_FRACTIONS, DatasetSplit, persist_split, split_dataset
from assay.evaluators.definition import EvaluatorDef, default_prompt
from assay.traces.timeline import render_timeline, step_timeline

EXAMPLE_CHARS = 1500
_NEGATION = re.compile(r"\b(never|not|no|without|don't|doesn't|must not|mustn't|avoid[s]?)\b[\w\s-]{0,30}$", re.I)
_QUOTED = re.compile(r"[\"“]([^\"”]{3,80})[\"”]")


@dataclass(frozen=True)
class Draft:
    """What :func:`draft_evaluators` proposes.

    Attributes:
        judge: an ``llm_judge`` evaluator (draft; calibrate before use).
        checks: ``code`` evaluators for the checkable facts found (possibly none).
        split: the split whose *train* items gave the examples.
        examples: unit ids used as few-shot examples.
    """

    judge: EvaluatorDef
    checks: tuple[EvaluatorDef, ...]
    split: DatasetSplit
    examples: tuple[str, ...]


def draft_evaluators(store: Store, criterion: str, shots_per_label: int = 1,
                     fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0) -> Draft:
    """Draft an ``llm_judge`` (few-shot from train) and ``code`` checks for one criterion.

    Args:
        criterion: criterion name or id.
        shots_per_label: examples per label (pass, fail) drawn from the train split.
        fractions, seed: the split (as in :func:`~assay.calibration.calibrate`, so the same
            split is shared with calibration).

    Raises:
        NotFoundError: unknown criterion.
    """
    crit = get_criterion(store, criterion)
    ds = build_dataset(store, crit.name)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    rationale = {a.unit_id: a.rationale for a in list_annotations(store, crit.name) if a.rationale}
    chosen = choose_examples(store, crit.name, split, shots_per_label, seed)
    crit_ref = {"name": crit.name, "version": crit.version, "text": crit.text}
    bare = EvaluatorDef.model_validate({
        "name": f"{crit.name}-judge", "kind": "llm_judge", "dimension": crit.name, "criterion": crit_ref,
        "description": f"drafted from criterion {crit.name} v{crit.version}; few-shot from {split.split_id} train",
        "judge": {"prompt": default_prompt()}})
    judge = with_examples(store, bare, chosen, rationale)
    tools = sorted({s.tool_name for u in store.units(sorted(i.unit_id for i in ds.items))
                    for s in step_timeline(u) if s.kind == "tool_call" and s.tool_name})
    return Draft(judge=judge, checks=tuple(propose_checks(crit.name, crit.version, crit.text, tools)), split=split,
                 examples=tuple(u for u, _ in chosen))


def choose_examples(store: Store, criterion: str, split: DatasetSplit, shots_per_label: int,
                    seed: int = 0) -> list[tuple[str, str]]:
    """(unit id, label) few-shot examples from the *train* split: ``shots_per_label`` per label, seeded."""
    ds = build_dataset(store, criterion)
    train = set(split.units("train"))
    chosen: list[tuple[str, str]] = []
    for label in ("pass", "fail"):
        ids = sorted(i.unit_id for i in ds.items if i.label == label and i.unit_id in train)
        random.Random(f"{seed}:shots:{label}").shuffle(ids)
        chosen += [(u, label) for u in ids[:shots_per_label]]
    return chosen


def with_examples(store: Store, defn: EvaluatorDef, examples: list[tuple[str, str]],
                  rationale: dict[str, str] | None = None) -> EvaluatorDef:
    """A copy of an ``llm_judge`` whose prompt shows labelled examples before the criterion.

    The example timelines are quoted raw (Jinja2 ``{% raw %}``), each cut to its newest
    ``EXAMPLE_CHARS`` characters.
    """
    rationale = rationale or {}
    units = {u.unit_id: u for u in store.units([u for u, _ in examples])}
    blocks = []
    for n, (unit_id, label) in enumerate(examples, 1):
        timeline = render_timeline(step_timeline(units[unit_id]), max_chars=EXAMPLE_CHARS, skip_system=True)
        why = rationale.get(unit_id, "")
        blocks.append(f"Example {n} (verdict: {label}{'; ' + why if why else ''}):\n{timeline}")
    base = defn.prompt_template()
    marker = 'Criterion "{{ criterion.name }}":'
    text = ("Labelled examples of this criterion (from reviewed runs):\n{% raw %}\n" + "\n\n".join(blocks)
            + "\n{% endraw %}\n\n") if blocks else ""
    prompt = base.replace(marker, text + marker, 1) if marker in base else text + base
    return defn.model_copy(update={"judge": defn.judge_spec().model_copy(update={"prompt": prompt})})


def propose_checks(name: str, version: int, text: str, tools: list[str]) -> list[EvaluatorDef]:
    """``code`` evaluators for the checkable facts the criterion text names (see the module docstring)."""
    crit_ref = {"name": name, "version": version, "text": text}
    out = []
    for tool in tools:
        match = re.search(rf"(?<![\w]){re.escape(tool)}(?![\w])", text, re.I)
        if match is None:
            continue
        forbidden = _NEGATION.search(text[:match.start()]) is not None
        out.append(EvaluatorDef.model_validate({
            "name": f"{name}-{'no-' if forbidden else ''}{tool}".replace("_", "-"), "kind": "code",
            "dimension": name, "criterion": crit_ref,
            "code": {"callable": "assay.evaluators.checks:tool_called",
                     "args": {"tool": tool, "expected": not forbidden}}}))
    for n, phrase in enumerate(_QUOTED.findall(text), 1):
        out.append(EvaluatorDef.model_validate({
            "name": f"{name}-phrase-{n}", "kind": "code", "dimension": name, "criterion": crit_ref,
            "code": {"callable": "assay.evaluators.checks:phrase_present", "args": {"phrase": phrase}}}))
    return out
