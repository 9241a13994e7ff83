"""Evaluation of frozen representations: probes, kNN, few-shot, geometry, universality report."""

from gessl.eval.geometry import alignment, uniformity
from gessl.eval.probes import (
    FewShotResult,
    effective_rank,
    features,
    few_shot,
    knn_accuracy,
    linear_probe,
)
from gessl.eval.universality import PROVIDERS, model_log_probs, universality_report

__all__ = [
    "PROVIDERS",
    "FewShotResult",
    "alignment",
    "effective_rank",
    "features",
    "few_shot",
    "knn_accuracy",
    "linear_probe",
    "model_log_probs",
    "uniformity",
    "universality_report",
]
