"""Which units to label next so an evaluator gets certified sooner (``assay queue --for-calibration NAME``).

Certification needs every required rate's lower bound to clear (:mod:`assay.calibration.certify`), and
the bound of a class with few labels is wide. So among the units not yet labelled on the evaluator's
criterion, a label helps most where it is likely

1. **of the class in short supply**: the class whose plan asks for the most labels (the stored
   calibration's plan of this evaluator version), else the class with fewer labels. Evidence that an
   unlabelled unit belongs to it, strongest first: this evaluator's own latest verdict (weight 1), another
   evaluator's verdict on the same criterion (0.75), the unit's recorded outcome or an error span (0.5);
2. **hard for the judge**: a score near the evaluator's ``pass_score`` (``1 - 2 |score - pass_score|``), or a
   reply with no verdict (unscored: 1);
3. **disputed**: the evaluators of the criterion gave it different verdicts (1).

The priority is ``2 x class evidence + uncertainty + disagreement``; ties go by a hash of the unit id, so
the queue is deterministic and spread over the store, not the first units ingested. Scores come from the
store (any run: online, backfill, gate, calibration); with none, only outcomes and errors guide it, and a
note says to score the evaluator first (``assay score``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import ScoreRow, UnitRow
from assay.calibration.calibrate import CalibrationReport, evaluator_record, pass_fail_balance
from assay.calibration.dataset import build_dataset
from assay.evaluators import EvaluatorDef

SHORT_WEIGHTS = {"self": 1.0, "peer": 0.75, "outcome": 0.5}
"""Weight of each kind of evidence that an unlabelled unit is of the class in short supply."""


class LabelCandidate(BaseModel):
    """One unlabelled unit proposed for labelling, with why."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    priority: float = Field(description="2 x class evidence + uncertainty + disagreement, in [0, 4]")
    verdict: str | None = Field(description="this evaluator's latest verdict or status on it; None: never scored")
    score: float | None = None
    reasons: tuple[str, ...]


class CalibrationQueue(BaseModel):
    """The units whose labels would help certify one evaluator most, best first."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    criterion: str
    short_class: str | None = Field(description="the class in short supply (None: neither)")
    balance: dict[str, int] = Field(description="labels per class now")
    items: tuple[LabelCandidate, ...]
    notes: tuple[str, ...] = ()


class _Evidence(BaseModel):
    own: tuple[str, float | None] | None = None  # (verdict or status, score)
    peers: dict[str, str] = Field(default_factory=dict)  # evaluator -> verdict
    outcome: str = "unknown"
    has_error: bool = False


def calibration_queue(store: Store, defn: EvaluatorDef, size: int = 20, peers: Sequence[str] = ()) -> CalibrationQueue:
    """The ``size`` unlabelled units whose labels would help certify ``defn`` most (module docstring).

    Args:
        peers: names of other evaluators of the same criterion (their stored verdicts count as evidence and
            disagreement); evaluators calibrated on the criterion in the store are added.

    Raises:
        NotFoundError: the evaluator's criterion does not exist.
    """
    ds = build_dataset(store, defn.criterion.name)
    balance = pass_fail_balance(defn, ds)
    record = evaluator_record(store, defn)
    short = short_class(balance, record.calibration if record is not None else None)
    labelled = {i.unit_id for i in ds.items}
    names = sorted({*peers, *_calibrated_on(store, defn.criterion.name)} - {defn.name})
    evidence = _evidence(store, defn.name, names, labelled)
    ranked = sorted((_candidate(u, e, short, defn.pass_score) for u, e in evidence.items()),
                    key=lambda c: (-c.priority, _spread(c.unit_id)))
    notes = [] if any(e.own is not None for e in evidence.values()) else [
        f"no stored score of {defn.name} on an unlabelled unit: score it first (assay score --evaluator {defn.name} "
        "--units all) so its verdicts and uncertainty guide the queue; outcomes and errors guide it now"]
    return CalibrationQueue(evaluator=defn.name, criterion=defn.criterion.name, short_class=short, balance=balance,
                            items=tuple(ranked[:size]), notes=tuple(notes))


def short_class(balance: dict[str, int], report: CalibrationReport | None) -> str | None:
    """The class in short supply: the one the stored plan asks most labels of, else the one with fewer labels."""
    if report is not None and report.plan is not None:
        wanted = {r.of: r.more for r in report.plan.rates if r.more}
        if wanted:
            return max(wanted, key=lambda c: wanted[c] or 0)
        return None
    if balance.get("pass", 0) == balance.get("fail", 0):
        return None
    return min(("pass", "fail"), key=lambda c: balance.get(c, 0))


def _calibrated_on(store: Store, criterion: str) -> set[str]:
    from assay._store.tables import EvaluatorRow

    with store.session() as s:
        rows = s.execute(select(EvaluatorRow.name, EvaluatorRow.definition))
        return {name for name, d in rows if ((d or {}).get("criterion") or {}).get("name") == criterion}


def _evidence(store: Store, name: str, peers: Sequence[str], labelled: set[str]) -> dict[str, _Evidence]:
    """Every unlabelled unit with the latest verdicts of ``name`` and its ``peers``, its outcome and errors."""
    out: dict[str, _Evidence] = {}
    with store.session() as s:
        for uid, outcome, err in s.execute(select(UnitRow.unit_id, UnitRow.outcome, UnitRow.has_error)):
            if uid not in labelled:
                out[uid] = _Evidence(outcome=outcome or "unknown", has_error=bool(err))
        q = (select(ScoreRow.unit_id, ScoreRow.evaluator_name, ScoreRow.status, ScoreRow.verdict, ScoreRow.score)
             .where(ScoreRow.evaluator_name.in_([name, *peers])).order_by(ScoreRow.id))
        for uid, evaluator, status, verdict, score in s.execute(q):
            ev = out.get(uid)
            if ev is None:
                continue
            if evaluator == name:
                ev.own = (verdict if status == "scored" and verdict else status, score)
            elif status == "scored" and verdict:
                ev.peers[evaluator] = verdict
    return out


def _candidate(unit_id: str, ev: _Evidence, short: str | None, pass_score: float) -> LabelCandidate:
    reasons: list[str] = []
    hint = 0.0
    own, score = ev.own if ev.own is not None else (None, None)
    if short is not None:
        sources = [("self", own == short, f"this evaluator says {short} (the class in short supply)"),
                   ("peer", short in ev.peers.values(), f"another evaluator of the criterion says {short}"),
                   ("outcome", ev.outcome == short or (short == "fail" and ev.has_error),
                    f"its recorded outcome or an error span points to {short}")]
        hit = next(((w, why) for w, ok, why in sources if ok), None)
        if hit is not None:
            hint = SHORT_WEIGHTS[hit[0]]
            reasons.append(hit[1])
    uncertainty = 0.0
    if own == "unscored":
        uncertainty = 1.0
        reasons.append("the judge gave no readable verdict")
    elif score is not None and own in ("pass", "fail"):
        uncertainty = max(0.0, 1.0 - 2 * abs(score - pass_score))
        if uncertainty > 0:
            reasons.append(f"score {score:.2f} near the pass score {pass_score:.2f}")
    verdicts = {v for v in (own, *ev.peers.values()) if v in ("pass", "fail")}
    disputed = len(verdicts) > 1
    if disputed:
        reasons.append("evaluators disagree: " + ", ".join(f"{n} {v}" for n, v in
                                                           sorted({"this": own, **ev.peers}.items()) if v))
    return LabelCandidate(unit_id=unit_id, priority=round(2 * hint + uncertainty + float(disputed), 6),
                          verdict=own, score=score, reasons=tuple(reasons))


def _spread(unit_id: str) -> str:
    return hashlib.sha256(unit_id.encode("utf-8")).hexdigest()
