"""The suite: runs with lineage, the CI gate, online scoring, executors and drift; ``UnitSelection`` says which
stored units a gate or a backfill scores."""

from assay._store.selection import UnitSelection
from assay.suite.audit import AuditPair, audit_pairs
from assay.suite.compare import RateComparison, RedundantPair, ScoreComparison, redundant_pairs
from assay.suite.drift import DriftReport, check_drift, compute_drift
from assay.suite.executor import ScoreSummary, score_with_executor
from assay.suite.gate import EXIT_CODES, FlakyUnit, GateItem, GateReport, Pairing, active_evaluators, run_gate
from assay.suite.online import OnlineWorker, sampled

__all__ = ["EXIT_CODES", "AuditPair", "DriftReport", "FlakyUnit", "GateItem", "GateReport", "OnlineWorker",
           "Pairing", "RateComparison", "RedundantPair", "ScoreComparison", "ScoreSummary", "UnitSelection",
           "active_evaluators",
           "audit_pairs", "check_drift", "compute_drift", "redundant_pairs", "run_gate", "sampled",
           "score_with_executor"]
