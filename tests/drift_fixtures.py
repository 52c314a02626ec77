"""Three weeks of synthetic production scores in a real SQLite store, for drift and report tests.

Scores go through the real write path (``new_run`` + ``write_results`` with lineage); only their
``created_at`` is then moved back in time, as a worker running over three weeks would have
written them. Human audit labels go through ``add_annotations`` and are back-dated the same way.

* ``helpful`` (pass/fail judge): pass rate 0.80 in weeks 1-2; 0.50 in week 3 when ``shift``.
  Audit labels agree with the judge on 90% of units in weeks 1-2, 55% in week 3 when ``shift``.
* ``length`` (code check, continuous score ~ Beta(5, 3)): the same in all three weeks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select, update

from assay._store import Store
from assay._store.scores import Lineage, finish_run, new_run
from assay._store.tables import AnnotationRow, AuditItemRow, EvaluatorRow, ScoreRow, SignatureRow
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.calibration import CalibrationReport, agreement, metrics_with_ci
from assay.evaluators import EvaluationResult, EvaluatorFailure
from assay.evaluators.lineage import write_results
from assay.suite.online import OnlineParams
from tests.ui_fixtures import make_unit

NOW = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)  # a Sunday: weeks start 11-09, 11-16, 11-23
PER_DAY = 24
CONFUSION = {"tp": 85, "fn": 15, "fp": 25, "tn": 75}


def _calibration() -> CalibrationReport:
    """The stored calibration of ``helpful``: its test split's confusion is CONFUSION."""
    c = CONFUSION
    human = ["pass"] * (c["tp"] + c["fn"]) + ["fail"] * (c["fp"] + c["tn"])
    judge = ["pass"] * c["tp"] + ["fail"] * c["fn"] + ["pass"] * c["fp"] + ["fail"] * c["tn"]
    return CalibrationReport(evaluator="helpful", evaluator_version="a" * 12, judge_model="fake", dataset_version=1,
                             dataset_balance={"pass": 100, "fail": 100}, n_labelled=200, n_unscored=0, n_errors=0,
                             agreement=agreement(human, judge), threshold=0.8, min_kappa=0.0, meets_threshold=True,
                             status="active", run_id="calibration-fixture",
                             test=metrics_with_ci(human, judge, n_boot=50))


def _evaluator_rows(store: Store) -> None:
    with store.session() as s:
        s.add(EvaluatorRow(name="helpful", version="a" * 12, kind="llm_judge", status="active",
                           definition={"name": "helpful", "threshold": 0.8,
                                       "criterion": {"name": "helpful", "version": 1, "text": "Helps the user."}},
                           calibration=_calibration().model_dump(mode="json")))
        s.add(EvaluatorRow(name="length", version="b" * 12, kind="code", status="active",
                           definition={"name": "length", "threshold": 0.8,
                                       "criterion": {"name": "length", "version": 1, "text": "Short enough."}},
                           calibration={}))


def seed_production(store: Store, shift: bool, seed: int = 0, audit_items: bool = True,
                    end: datetime = NOW) -> dict[str, list[str]]:
    """Write 21 days x PER_DAY units, scores of both evaluators, audit labels and two signatures.

    The 21 days end on ``end``'s day (scores from 09:00 to 09:23 UTC each day; make sure
    ``end`` is later than that on its day, as NOW is); a signature is created 2 days before ``end``.

    With ``audit_items`` the labelled units are judge-audit items (``audit_items`` rows, as the
    online worker writes them); without, they are plain labels on the criterion.

    Returns unit ids per week (``"w1"``, ``"w2"``, ``"w3"``).
    """
    rng = np.random.default_rng(seed)
    _evaluator_rows(store)
    add_criterion(store, "Helps the user.", name="helpful")
    first = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=20)
    days = [first + timedelta(days=d, hours=9) for d in range(21)]
    ids = {d: [f"u-{d:02d}-{i:02d}" for i in range(PER_DAY)] for d in range(21)}
    store.add_units([make_unit(u) for d in ids for u in ids[d]])
    run_id = new_run(store, "online", OnlineParams())
    results: list[EvaluationResult | EvaluatorFailure] = []
    labels: list[tuple[Annotation, datetime]] = []
    when: dict[str, datetime] = {}
    for d, units in ids.items():
        late = d >= 14
        for i, u in enumerate(units):
            when[u] = days[d] + timedelta(minutes=i)
            passed = bool(rng.random() < (0.5 if late and shift else 0.8))
            results.append(EvaluationResult(evaluator="helpful", evaluator_version="a" * 12, unit_id=u,
                                            judge_model="fake", score=float(passed),
                                            verdict="pass" if passed else "fail"))
            if i == 0:
                results.append(EvaluatorFailure(evaluator="length", evaluator_version="b" * 12, unit_id=u,
                                                status="error", error="check raised"))
            else:
                score = float(rng.beta(5, 3))
                results.append(EvaluationResult(evaluator="length", evaluator_version="b" * 12, unit_id=u,
                                                score=score, verdict="pass" if score >= 0.5 else "fail"))
            if i % 3 == 0:  # every third unit is audited by a person
                agree = rng.random() < (0.55 if late and shift else 0.9)
                human = passed if agree else not passed
                labels.append((Annotation(unit_id=u, annotator="expert", label="pass" if human else "fail",
                                          criterion="helpful", source="audit"), when[u] + timedelta(hours=2)))
    for name, version, judge_model in (("helpful", "a" * 12, "fake"), ("length", "b" * 12, None)):
        lineage = Lineage(evaluator=name, evaluator_version=version, judge_model=judge_model, dataset_version=1,
                          run_id=run_id, run_kind="online")
        write_results(store, lineage, [r for r in results if r.evaluator == name])
    finish_run(store, run_id, {"units": len(when)})
    add_annotations(store, [a for a, _ in labels])
    with store.session() as s:
        for u, at in when.items():
            s.execute(update(ScoreRow).where(ScoreRow.unit_id == u).values(created_at=at.replace(tzinfo=None)))
        for a, at in labels:
            s.execute(update(AnnotationRow).where(AnnotationRow.unit_id == a.unit_id)
                      .values(created_at=at.replace(tzinfo=None)))
        if audit_items:
            for a, _ in labels:
                score_id = s.scalar(select(ScoreRow.id).where(ScoreRow.unit_id == a.unit_id,
                                                              ScoreRow.evaluator_name == "helpful"))
                s.add(AuditItemRow(unit_id=a.unit_id, evaluator_name="helpful", evaluator_version="a" * 12,
                                   criterion_name="helpful", criterion_version=1, score_id=score_id,
                                   created_at=when[a.unit_id].replace(tzinfo=None)))
        s.add(SignatureRow(structural_key="tool=refund | error=timeout", label="refund: timeout", size=9,
                           created_at=(end - timedelta(days=2)).replace(tzinfo=None), status="new"))
        s.add(SignatureRow(structural_key="tool=search | error=empty", label="search: empty", size=30,
                           created_at=(end - timedelta(days=40)).replace(tzinfo=None), status="existing"))
    return {f"w{w + 1}": [u for d in range(7 * w, 7 * w + 7) for u in ids[d]] for w in range(3)}
