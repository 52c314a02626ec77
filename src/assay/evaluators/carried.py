"""Verdicts carried in ingested traces, imported as scores of the ``external`` evaluators they name.

:func:`assay.traces.evaluations.carried_evaluations` finds them (OTel ``gen_ai.evaluation.result`` events,
OpenInference annotations, Langfuse scores); here those whose name matches an external evaluator
(``external.name``, else its own name) go in through :func:`assay.evaluators.imports.import_verdicts`, the
path ``assay scores import`` takes. ``assay ingest`` does so for the units it reads; ``assay scores import
--from-traces`` for stored units (an evaluator defined after its traces were ingested). A person's
annotation (OpenInference ``annotator_kind: HUMAN``, a Langfuse ``ANNOTATION`` score) is a label, not a
judge's verdict, and is left out (counted); a verdict identical to the unit's latest import is not stored
again, so ingesting a file twice imports nothing the second time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from assay._store.store import Store
from assay.evaluators.definition import EvaluatorDef
from assay.evaluators.external import ExternalEvaluatorDef, ExternalValue, latest_imports
from assay.evaluators.imports import ImportResult, Verdict, import_verdicts, verdict_of
from assay.traces.evaluations import CarriedEvaluation, carried_evaluations
from assay.traces.model import Unit


class CarriedImport(BaseModel):
    """What the evaluation results carried in some units came to."""

    model_config = ConfigDict(frozen=True)

    found: int = Field(description="results found in the units")
    result: ImportResult | None = Field(description="the import of those an external evaluator takes (None: none)")
    unmatched: dict[str, int] = Field(default_factory=dict, description="name -> results no external evaluator "
                                                                        "takes (define one to import them)")
    human: int = Field(default=0, description="people's annotations found, left out (labels, not verdicts)")
    unchanged: int = Field(default=0, description="verdicts already imported as they are")


def carried_in(units: Iterable[Unit]) -> list[tuple[str, CarriedEvaluation]]:
    """``(unit id, result)`` for every evaluation result the units carry."""
    return [(unit.unit_id, ev) for unit in units for ev in carried_evaluations(unit)]


def import_carried(store: Store, found: Sequence[tuple[str, CarriedEvaluation]], evaluators: Sequence[EvaluatorDef],
                   source: str = "traces") -> CarriedImport:
    """Import carried results (:func:`carried_in`) for the external evaluators among ``evaluators``."""
    names = {d.source_name(): d for d in evaluators if isinstance(d, ExternalEvaluatorDef)}
    human = unchanged = 0
    unmatched: Counter[str] = Counter()
    verdicts: list[Verdict] = []
    latest: dict[str, dict[str, ExternalValue]] = {}
    for unit_id, ev in found:
        if (ev.annotator_kind or "").upper() == "HUMAN":
            human += 1
            continue
        defn = names.get(ev.name)
        if defn is None:
            unmatched[ev.name] += 1
            continue
        v = verdict_of(unit_id, ev)
        known = latest.setdefault(defn.name, latest_imports(store, defn.name)).get(unit_id)
        if known is not None and known == v.value:
            unchanged += 1
            continue
        verdicts.append(v)
    result = import_verdicts(store, verdicts, evaluators, source) if verdicts else None
    return CarriedImport(found=len(found), result=result, unmatched=dict(unmatched), human=human,
                         unchanged=unchanged)
