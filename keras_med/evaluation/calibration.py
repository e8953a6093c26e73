"""Calibration: expected calibration error, reliability-diagram data and temperature scaling.

scikit-learn has `calibration_curve` but no expected calibration error nor temperature scaling,
so both are written here (a few lines each). The temperature is fitted on the validation split
from probabilities alone: log-probabilities act as logits for softmax outputs (softmax(log p / T)),
logit(p) for sigmoid outputs; T minimises the negative log-likelihood (scipy's bounded search).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax

_EPSILON = 1e-7


def reliability_bins(task: str, y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 15) -> dict:
    """Per-bin confidence, observed frequency and count for the reliability diagram.

    Multiclass uses the top-label confidence against accuracy; binary and multilabel use each
    predicted probability against the observed frequency of positives. Takes canonical arrays.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins: expected at least 2 bins, got {n_bins}")
    if task == "multiclass":
        confidence = y_prob.max(axis=1)
        outcome = (y_prob.argmax(axis=1) == y_true).astype(np.float64)
    else:
        confidence = np.ravel(y_prob)
        outcome = np.ravel(y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(bin_index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bin_index, confidence, n_bins) / counts
        frequency = np.bincount(bin_index, outcome, n_bins) / counts
    return {"edges": edges, "confidence": mean_confidence, "frequency": frequency, "count": counts}


def expected_calibration_error(task: str, y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 15) -> float:
    """Count-weighted mean gap between confidence and observed frequency over equal-width bins."""
    bins = reliability_bins(task, y_true, y_prob, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["confidence"][filled] - bins["frequency"][filled])
    return float(np.sum(gaps * bins["count"][filled]) / bins["count"].sum())


def apply_temperature(task: str, y_prob: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities by a temperature (T > 1 softens, T < 1 sharpens)."""
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    clipped = np.clip(y_prob, _EPSILON, 1.0 - _EPSILON)
    if task == "multiclass":
        return softmax(np.log(clipped) / temperature, axis=1)
    return expit(logit(clipped) / temperature)


def negative_log_likelihood(task: str, y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean cross-entropy of canonical arrays (per sample for multiclass, per output otherwise)."""
    clipped = np.clip(y_prob, _EPSILON, 1.0 - _EPSILON)
    if task == "multiclass":
        return float(-np.mean(np.log(clipped[np.arange(y_true.size), y_true])))
    return float(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped)))


def fit_temperature(task: str, y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Temperature in [0.05, 20] that minimises the validation NLL (one T for all outputs)."""
    clipped = np.clip(y_prob, _EPSILON, 1.0 - _EPSILON)
    if task == "multiclass":
        log_probs = np.log(clipped)

        def loss(log_t: float) -> float:
            scaled = log_softmax(log_probs / np.exp(log_t), axis=1)
            return float(-np.mean(scaled[np.arange(y_true.size), y_true]))
    else:
        logits = logit(clipped)

        def loss(log_t: float) -> float:
            scaled = logits / np.exp(log_t)
            # log(sigmoid(z)) = -log1p(exp(-z)), written with logaddexp to stay finite.
            return float(np.mean(y_true * np.logaddexp(0, -scaled) + (1 - y_true) * np.logaddexp(0, scaled)))
    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def calibration_summary(task: str, y_true_test: np.ndarray, y_prob_test: np.ndarray,
                        y_true_val: np.ndarray | None = None, y_prob_val: np.ndarray | None = None,
                        n_bins: int = 15) -> dict:
    """ECE and NLL on test before and after a temperature fitted on validation (canonical arrays).

    Without validation predictions only the "before" figures are given and `temperature` is None.
    """
    summary = {"n_bins": n_bins,
               "ece_before": expected_calibration_error(task, y_true_test, y_prob_test, n_bins),
               "nll_before": negative_log_likelihood(task, y_true_test, y_prob_test),
               "temperature": None, "ece_after": None, "nll_after": None}
    if y_true_val is not None and y_prob_val is not None:
        temperature = fit_temperature(task, y_true_val, y_prob_val)
        scaled = apply_temperature(task, y_prob_test, temperature)
        summary.update({"temperature": temperature,
                        "ece_after": expected_calibration_error(task, y_true_test, scaled, n_bins),
                        "nll_after": negative_log_likelihood(task, y_true_test, scaled)})
    return summary
