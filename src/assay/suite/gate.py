"""The CI gate: run the active evaluators on a set of units and decide pass/fail.

Exit codes (see :data:`EXIT_CODES`): 0 pass; 1 an evaluator's pass rate is below its
threshold or below the baseline run's by more than the margin; 2 usage or
configuration error (raised as :class:`~assay.exceptions.UsageError`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from assay._store import Store
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, load_evaluators
from assay.exceptions import UsageError
from assay.models import JudgeClient
from assay.settings import Settings

EXIT_CODES = {0: "pass", 1: "regression or threshold miss", 2: "usage or configuration error"}


class GateItem(BaseModel):
    """One evaluator's outcome in a gate run. Rates are in [0, 1] over scored units."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    evaluator_version: str
    judge_model: str | None
    dataset_version: int | None
    n: int
    n_unscored: int
    n_errors: int
    pass_rate: float | None
    min_pass_rate: float
    baseline_pass_rate: float | None
    passed: bool
    reasons: tuple[str, ...]


class GateReport(BaseModel):
    """All evaluators' outcomes; ``exit_code`` 0 when every one passed, else 1."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    units: int
    baseline_run: str | None
    items: tuple[GateItem, ...]

    @property
    def passed(self) -> bool:
        return all(i.passed for i in self.items)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def active_evaluators(store: Store, folder: Path) -> list[tuple[EvaluatorDef, int | None]]:
    """Evaluators in ``folder`` whose exact version is active in the store, with the
    ground-truth dataset version each was calibrated on."""
    from assay.suite.runs import evaluator_record

    out: list[tuple[EvaluatorDef, int | None]] = []
    for defn in load_evaluators(folder) if folder.exists() else []:
        rec = evaluator_record(store, defn)
        if rec is not None and rec.status == "active":
            out.append((defn, (rec.calibration or {}).get("dataset_version")))
    return out


def _baseline_rates(store: Store, run_id: str) -> dict[str, float]:
    from assay.suite.runs import get_run

    run = get_run(store, run_id)
    return {i["evaluator"]: i["pass_rate"] for i in (run.summary or {}).get("items", [])
            if i.get("pass_rate") is not None}


def _judge_item(defn: EvaluatorDef, dataset_version: int | None, results: list, min_rate: float,
                baseline: float | None, margin: float, judge: JudgeClient | None) -> GateItem:
    scored = [r for r in results if isinstance(r, EvaluationResult)]
    fails = [r for r in results if not isinstance(r, EvaluationResult)]
    rate = sum(r.verdict == "pass" for r in scored) / len(scored) if scored else None
    reasons: list[str] = []
    if rate is None:
        reasons.append("no unit could be scored")
    elif rate < min_rate:
        reasons.append(f"pass rate {rate:.3f} below threshold {min_rate:.3f}")
    if rate is not None and baseline is not None and rate < baseline - margin:
        reasons.append(f"pass rate {rate:.3f} below baseline {baseline:.3f} by more than {margin:.3f}")
    return GateItem(evaluator=defn.name, evaluator_version=content_version(defn),
                    judge_model=judge.model_name if judge and defn.kind == "llm_judge" else None,
                    dataset_version=dataset_version, n=len(scored),
                    n_unscored=sum(f.status == "unscored" for f in fails),
                    n_errors=sum(f.status == "error" for f in fails), pass_rate=rate, min_pass_rate=min_rate,
                    baseline_pass_rate=baseline, passed=not reasons, reasons=tuple(reasons))


def run_gate(store: Store, settings: Settings, judge: JudgeClient | None, units: str | None = None,
             baseline: str | None = None, progress: Callable[[int], None] | None = None) -> GateReport:
    """Run the active evaluators over the selected units and compare with thresholds and a baseline.

    Args:
        units: a unit selection (see ``Store.select_unit_ids``), default all units.
        baseline: a previous gate run id to compare pass rates with.

    Raises:
        UsageError: no units selected, no active evaluator, or unknown baseline run.
    """
    from assay.suite.runs import finish_run, new_run, record_scores, score_units

    unit_ids = store.select_unit_ids(units)
    if not unit_ids:
        raise UsageError(f"no units match selection {units or 'all'!r}")
    suite = active_evaluators(store, settings.evaluators_path())
    if not suite:
        raise UsageError(f"no active evaluator in {settings.evaluators_path()}: calibrate one first "
                         "(assay calibrate NAME), or activate it with --force REASON")
    base_rates = _baseline_rates(store, baseline) if baseline else {}
    run_id = new_run(store, "gate", {"units": units or "all", "baseline": baseline,
                                      "evaluators": {d.name: content_version(d) for d, _ in suite}})
    items = []
    for defn, ds_version in suite:
        results = score_units(store, defn, unit_ids, judge if defn.kind != "code" else None,
                              settings.judge, progress)
        record_scores(store, run_id, results, ds_version)
        items.append(_judge_item(defn, ds_version, results, defn.min_pass_rate, base_rates.get(defn.name),
                                 settings.gate_margin, judge))
    report = GateReport(run_id=run_id, units=len(unit_ids), baseline_run=baseline, items=tuple(items))
    finish_run(store, run_id, {"items": [i.model_dump(mode="json") for i in items], "passed": report.passed})
    return report
