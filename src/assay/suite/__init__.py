"""The suite: runs with lineage and the CI gate."""

from assay.suite.gate import EXIT_CODES, GateItem, GateReport, active_evaluators, run_gate

__all__ = ["EXIT_CODES", "GateItem", "GateReport", "active_evaluators", "run_gate"]
