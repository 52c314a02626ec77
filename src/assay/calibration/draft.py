"""Draft evaluators from a criterion: an ``llm_judge`` with few-shot examples from the *train* split,
and a ``code`` check when the criterion names a checkable fact.

Few-shot examples never come from dev or test, so a drafted evaluator can still be
calibrated honestly. The checkable facts recognised: a tool that must, or must not, be
called (a tool name seen in the criterion's labelled units, written in the criterion text;
"never", "not", "without", "don't" before it make it forbidden), and a quoted phrase an
assistant turn must contain.

When a judge model is given, it is asked to word the criterion as a pass/fail rubric with
decision rules (:func:`word_rubric`); its reply goes into the prompt only when it passes
:func:`check_rubric` (not empty, not too long, names both outcomes, reads as text, holds no
template syntax). Otherwise the criterion text as written stays the rubric. The drafted
evaluator's ``description`` says which wording was used, and why.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from assay._store import Store
from assay.annotations.store import get_criterion, list_annotations
from assay.calibration.dataset import build_dataset
from assay.calibration.splits import DEFAULT_FRACTIONS, DatasetSplit, persist_split, split_dataset
from assay.evaluators.definition import EvaluatorDef, default_prompt
from assay.exceptions import EnvironmentProblem, JudgeError, UsageError
from assay.models.base import JudgeClient
from assay.traces.timeline import render_timeline, step_timeline

EXAMPLE_CHARS = 1500
_NEGATION = re.compile(r"\b(never|not|no|without|don't|doesn't|must not|mustn't|avoid[s]?)\b[\w\s-]{0,30}$", re.I)
_QUOTED = re.compile(r"[\"“]([^\"”]{3,80})[\"”]")
RUBRIC_MIN_CHARS = 20
RUBRIC_MAX_CHARS = 1200
_FENCE = re.compile(r"^```[\w-]*\n?|\n?```$")
_TEMPLATE_SYNTAX = re.compile(r"\{[{%#]|[}%#]\}")
RUBRIC_REQUEST = """You help write the rubric an AI judge will use to review runs of an AI agent.
Rewrite the criterion below as a clear pass/fail rubric. Write plain text only, in this form:
PASS if <what a run must show to meet the criterion>.
FAIL if <what makes a run break the criterion>.
Decision rules:
- <how to decide an unclear case> (two to four rules)
Keep it under 120 words. Do not add requirements the criterion does not state.

Criterion "{name}":
{text}
"""


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
    rubric: RubricWording


@dataclass(frozen=True)
class RubricWording:
    """The rubric a drafted judge prompt uses.

    Attributes:
        source: ``"judge"`` (the judge model's wording, checked) or ``"template"`` (the criterion
            text as written).
        text: the judge's rubric (``source == "judge"``), else None.
        note: one line for readers: which wording, which model, and why a reply was refused.
    """

    source: Literal["judge", "template"]
    text: str | None
    note: str


def draft_evaluators(store: Store, criterion: str, shots_per_label: int = 1,
                     fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0,
                     judge: JudgeClient | None = None) -> Draft:
    """Draft an ``llm_judge`` (few-shot from train) and ``code`` checks for one criterion.

    Args:
        criterion: criterion name or id.
        shots_per_label: examples per label (pass, fail) drawn from the train split.
        fractions, seed: the split (as in :func:`~assay.calibration.calibrate`, so the same
            split is shared with calibration).
        judge: a judge model asked to word the rubric (:func:`word_rubric`); None: the
            criterion text as written. A failed call or a refused reply falls back to it.

    Raises:
        NotFoundError: unknown criterion.
        UsageError: the criterion is not binary (drafts write pass/fail judges and checks).
        MissingDependency, EnvironmentProblem: the judge cannot run at all (not installed,
            no model file).
    """
    crit = get_criterion(store, criterion)
    if crit.scale.kind != "binary":
        raise UsageError(f"criterion {crit.name!r} is {crit.scale.kind}: drafts are written for binary (pass/fail) "
                         "criteria; write the evaluator file by hand (README: an evaluator file)")
    ds = build_dataset(store, crit.name)
    split = persist_split(store, split_dataset(ds, fractions, seed))
    rationale = {a.unit_id: a.rationale for a in list_annotations(store, crit.name) if a.rationale}
    chosen = choose_examples(store, crit.name, split, shots_per_label, seed)
    crit_ref = {"name": crit.name, "version": crit.version, "text": crit.text}
    rubric = word_rubric(crit.name, crit.text, judge)
    bare = EvaluatorDef.model_validate({
        "name": f"{crit.name}-judge", "kind": "llm_judge", "dimension": crit.name, "criterion": crit_ref,
        "description": f"drafted from criterion {crit.name} v{crit.version}; few-shot from {split.split_id} train; "
                       f"{rubric.note}",
        "judge": {"prompt": with_rubric(default_prompt(), rubric.text)}})
    judge_def = with_examples(store, bare, chosen, rationale)
    tools = sorted({s.tool_name for u in store.units(sorted(i.unit_id for i in ds.items))
                    for s in step_timeline(u) if s.kind == "tool_call" and s.tool_name})
    return Draft(judge=judge_def, checks=tuple(propose_checks(crit.name, crit.version, crit.text, tools)),
                 split=split, examples=tuple(u for u, _ in chosen), rubric=rubric)


def word_rubric(name: str, text: str, judge: JudgeClient | None) -> RubricWording:
    """Ask ``judge`` to word a criterion as a pass/fail rubric; check the reply, else keep the criterion text.

    The request (:data:`RUBRIC_REQUEST`) asks for "PASS if ... / FAIL if ... / Decision rules".
    The reply is used only when :func:`check_rubric` accepts it; a failed call
    (:class:`~assay.exceptions.JudgeError`) or a refused reply gives ``source="template"``
    with the reason in ``note``.

    Raises:
        MissingDependency, EnvironmentProblem: the judge cannot run at all.
    """
    if judge is None:
        return RubricWording("template", None, "rubric wording: template (criterion text as written; no judge asked)")
    try:
        reply = judge.complete([{"role": "user", "content": RUBRIC_REQUEST.format(name=name, text=text)}])
    except EnvironmentProblem:
        raise
    except JudgeError as exc:
        return RubricWording("template", None, f"rubric wording: template (the judge call failed: {exc})")
    rubric, problem = check_rubric(reply.text)
    if rubric is None:
        return RubricWording("template", None,
                             f"rubric wording: template (the reply of judge {judge.model_name} was refused: {problem})")
    return RubricWording("judge", rubric, f"rubric wording: judge {judge.model_name} (checked; review it)")


def check_rubric(reply: str) -> tuple[str | None, str]:
    """(the cleaned rubric, "") when a judge's rubric reply is usable, else (None, why not).

    Cleaned: stripped, a markdown code fence removed. Refused: shorter than
    ``RUBRIC_MIN_CHARS`` or longer than ``RUBRIC_MAX_CHARS`` characters; not naming both
    "pass" and "fail"; control characters; under 60% letters and spaces, or a word
    repeated to fill the reply (garbled); template syntax (``{{``, ``{%``, ``{#``).
    """
    text = _FENCE.sub("", reply.strip()).strip()
    words = re.findall(r"[A-Za-z']+", text.lower())
    if len(text) < RUBRIC_MIN_CHARS:
        return None, f"empty or too short ({len(text)} characters)"
    if len(text) > RUBRIC_MAX_CHARS:
        return None, f"too long ({len(text)} characters, at most {RUBRIC_MAX_CHARS})"
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        return None, "garbled (control characters)"
    if sum(c.isalpha() or c.isspace() for c in text) < 0.6 * len(text):
        return None, "garbled (under 60% letters and spaces)"
    if len(words) >= 10 and len(set(words)) < 0.3 * len(words):
        return None, "garbled (the same words repeated)"
    if not (any(w.startswith("pass") for w in words) and any(w.startswith("fail") for w in words)):
        return None, "it does not say both when a run passes and when it fails"
    if _TEMPLATE_SYNTAX.search(text):
        return None, "it holds template syntax"
    return text, ""


def with_rubric(prompt: str, rubric: str | None) -> str:
    """The prompt template with a judge-worded rubric quoted after the criterion text (unchanged when None).

    The rubric is quoted raw (``{% raw %}``), so nothing in it is read as template syntax.
    """
    if rubric is None:
        return prompt
    block = "\nRubric (decision rules for this criterion):\n{% raw %}" + rubric + "{% endraw %}\n"
    marker = "{{ criterion.text }}\n"
    return prompt.replace(marker, marker + block, 1) if marker in prompt else block.lstrip("\n") + "\n" + prompt


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
