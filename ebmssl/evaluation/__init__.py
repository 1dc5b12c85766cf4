"""Evaluation and diagnostics: frozen features, kNN, linear probes, collapse diagnostics and plots."""

from ebmssl.evaluation.diagnostics import (
    alignment,
    collect_diagnostics,
    detect_collapse,
    energy_statistics,
    infonce_bound,
    instance_identification_accuracy,
    normalized_std,
    rankme,
    singular_values,
    uniformity,
)
from ebmssl.evaluation.features import extract_features
from ebmssl.evaluation.knn import knn_accuracy, knn_predict
from ebmssl.evaluation.linear import class_balanced_subset, linear_probe
from ebmssl.evaluation.offline import evaluate_features, raw_pixel_features
from ebmssl.evaluation.plots import plot_curves, plot_energy_histograms, plot_spectrum

__all__ = [
    "alignment",
    "class_balanced_subset",
    "collect_diagnostics",
    "detect_collapse",
    "energy_statistics",
    "evaluate_features",
    "extract_features",
    "infonce_bound",
    "instance_identification_accuracy",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "normalized_std",
    "plot_curves",
    "plot_energy_histograms",
    "plot_spectrum",
    "rankme",
    "raw_pixel_features",
    "singular_values",
    "uniformity",
]
