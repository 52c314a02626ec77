"""Annotations: expert labels (append-only, with provenance) and rubric criteria."""

from assay.annotations.model import Annotation, AnnotatorKind, Criterion, Label
from assay.annotations.store import (
    LabelImport,
    add_annotations,
    add_criterion,
    export_labels,
    get_criterion,
    import_labels,
    list_annotations,
    list_criteria,
)

__all__ = [
    "Annotation", "AnnotatorKind", "Criterion", "Label", "LabelImport", "add_annotations", "add_criterion",
    "export_labels", "get_criterion", "import_labels", "list_annotations", "list_criteria",
]
