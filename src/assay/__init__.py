"""assay: human-aligned LLM evaluation in production.

The loop, from Python (the CLI is a thin shell over these)::

    import assay
    settings = assay.load_settings(".")
    store = assay.open_store(settings)
    store.add_units(assay.read_file("runs.json").units)            # capture
    sigs = assay.build_signatures(store, settings)                   # cluster
    assay.add_criterion(store, "The agent ...", name="resolves")     # annotate
    assay.import_labels(store, "labels.jsonl")
    report = assay.calibrate(store, evaluator, judge, settings.judge)  # calibrate
    gate = assay.run_gate(store, settings, judge)                    # gate
"""

from assay._store import Store
from assay._store.scores import Lineage
from assay.annotations import Annotation, Criterion, add_annotations, add_criterion, export_labels, import_labels
from assay.calibration import (
    Agreement,
    CalibrationReport,
    GroundTruthDataset,
    agreement,
    build_dataset,
    calibrate,
    cohen_kappa,
)
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    EvaluatorFailure,
    content_version,
    evaluate,
    evaluate_many,
    load_evaluator,
    save_evaluator,
)
from assay.exceptions import AssayError
from assay.models import JudgeClient, make_judge
from assay.settings import Settings, load_settings
from assay.signatures import Signature, build_signatures, list_signatures, sample_queue
from assay.suite import GateReport, run_gate
from assay.traces import Message, Span, Step, ToolCall, Unit, read_file, render_timeline, step_timeline

__version__ = "0.1.0"


def open_store(settings: Settings) -> Store:
    """Open (and create if needed) the store named by ``settings.store_url``."""
    return Store(settings.resolved_store_url(), settings.signals, settings.environments)


__all__ = [
    "Agreement", "Annotation", "AssayError", "CalibrationReport", "Criterion", "EvaluationResult", "EvaluatorDef",
    "EvaluatorFailure", "GateReport", "GroundTruthDataset", "JudgeClient", "Lineage", "Message", "Settings",
    "Signature",
    "Span", "Step", "Store", "ToolCall", "Unit", "__version__", "add_annotations", "add_criterion", "agreement",
    "build_dataset", "build_signatures", "calibrate", "cohen_kappa", "content_version", "evaluate",
    "evaluate_many", "export_labels", "import_labels", "list_signatures", "load_evaluator", "load_settings",
    "make_judge", "open_store", "read_file", "render_timeline", "run_gate", "sample_queue", "save_evaluator",
    "step_timeline",
]
