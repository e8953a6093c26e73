"""Evaluation: metrics with bootstrap intervals, operating points, calibration, health check, plots, model card."""

from keras_med.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from keras_med.evaluation.evaluate import evaluate_run
from keras_med.evaluation.health import check_training_health
from keras_med.evaluation.metrics import compute_metrics
from keras_med.evaluation.operating_points import choose_threshold, choose_thresholds
from keras_med.evaluation.tta import predict_with_tta

__all__ = ["evaluate_run", "predict_with_tta", "compute_metrics", "choose_threshold",
           "choose_thresholds", "check_training_health", "expected_calibration_error", "fit_temperature",
           "apply_temperature"]
