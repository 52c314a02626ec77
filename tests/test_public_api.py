"""The public API is ``assay.__all__``: this test fails when exports drift."""

from __future__ import annotations

import assay

EXPECTED = {
    "Agreement", "Annotation", "AssayError", "CalibrationReport", "Criterion", "EvaluationResult", "EvaluatorDef",
    "EvaluatorFailure", "GateReport", "GroundTruthDataset", "JudgeClient", "Lineage", "Message", "Settings",
    "Signature",
    "Span", "Step", "Store", "ToolCall", "Unit", "__version__", "add_annotations", "add_criterion", "agreement",
    "build_dataset", "build_signatures", "calibrate", "cohen_kappa", "content_version", "evaluate",
    "evaluate_many", "export_labels", "import_labels", "list_signatures", "load_evaluator", "load_settings",
    "make_judge", "open_store", "read_file", "render_timeline", "run_gate", "sample_queue", "save_evaluator",
    "step_timeline",
}


def test_exported_members() -> None:
    assert set(assay.__all__) == EXPECTED
    for name in assay.__all__:
        assert hasattr(assay, name), name
    public = {n for n in dir(assay) if not n.startswith("_")}
    modules = {"annotations", "calibration", "doctor", "evaluators", "exceptions", "models", "reports", "settings",
               "signals", "signatures", "stats", "suite", "traces"}
    assert public - set(assay.__all__) <= modules
