"""Calibration: ground-truth datasets, held-out splits, and judge-human agreement with CIs."""

from assay.calibration.calibrate import CalibrationReport, calibrate
from assay.calibration.ceiling import HumanCeiling, human_ceiling
from assay.calibration.dataset import GroundTruthDataset, GroundTruthItem, build_dataset, export_dataset
from assay.calibration.dataset_file import (
    DatasetImport,
    DatasetManifest,
    export_dataset_file,
    import_dataset_file,
    read_dataset_file,
)
from assay.calibration.estimates import PassRateEstimates, pass_rate_estimates, ppi_mean, rogan_gladen
from assay.calibration.metrics import Agreement, Confusion, agreement
from assay.calibration.splits import DatasetSplit, load_split, persist_split, split_dataset
from assay.calibration.stats import CalibrationMetrics, Estimate, metrics_with_ci
from assay.stats import cohen_kappa

__all__ = [
    "Agreement", "CalibrationMetrics", "CalibrationReport", "Confusion", "DatasetImport", "DatasetManifest",
    "DatasetSplit", "Estimate", "GroundTruthDataset", "GroundTruthItem", "HumanCeiling", "PassRateEstimates",
    "agreement", "build_dataset", "calibrate",
    "cohen_kappa", "export_dataset", "export_dataset_file", "human_ceiling", "import_dataset_file",
    "read_dataset_file", "load_split", "metrics_with_ci", "pass_rate_estimates",
    "persist_split", "ppi_mean", "rogan_gladen", "split_dataset",
]
