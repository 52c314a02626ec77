"""Calibration: ground-truth datasets and judge-human agreement."""

from assay.calibration.calibrate import CalibrationReport, calibrate
from assay.calibration.dataset import GroundTruthDataset, GroundTruthItem, build_dataset, export_dataset
from assay.calibration.metrics import Agreement, Confusion, agreement, cohen_kappa

__all__ = [
    "Agreement", "CalibrationReport", "Confusion", "GroundTruthDataset", "GroundTruthItem", "agreement",
    "build_dataset", "calibrate", "cohen_kappa", "export_dataset",
]
