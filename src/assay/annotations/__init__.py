"""Annotations: expert labels (append-only, with provenance) and rubric criteria."""

from assay.annotations.model import Annotation, AnnotatorKind, Criterion, Label, fit_to_scale
from assay.annotations.scale import (
    BinaryScale,
    CategoricalClass,
    CategoricalScale,
    OrdinalLevel,
    OrdinalScale,
    PairwiseScale,
    Scale,
    ScaleValue,
)
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
    "Annotation", "AnnotatorKind", "BinaryScale", "CategoricalClass", "CategoricalScale", "Criterion", "Label",
    "LabelImport", "OrdinalLevel", "OrdinalScale", "PairwiseScale", "Scale", "ScaleValue", "add_annotations",
    "add_criterion", "export_labels", "fit_to_scale", "get_criterion", "import_labels", "list_annotations",
    "list_criteria",
]
