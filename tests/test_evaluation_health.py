"""The training health check flags collapse, overfitting, divergence and stays quiet on a healthy run."""

import numpy as np
import pandas as pd

from keras_med.evaluation.health import check_training_health

NAMES = ["nv", "mel", "bcc"]


def _history(loss, val_loss, balanced=None):
    frame = pd.DataFrame({"epoch": range(len(loss)), "loss": loss, "val_loss": val_loss})
    if balanced is not None:
        frame["balanced_accuracy"] = balanced
    return frame


def _kinds(report):
    return {finding["kind"] for finding in report["findings"]}


def _good_predictions(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)
    p[np.arange(300), y] += 1.0
    return y, p / p.sum(axis=1, keepdims=True)


# Losses that fall and level off, validation a little above training: a run that converged.
_EPOCHS = np.arange(12)
HEALTHY = _history(0.3 + 0.7 * np.exp(-_EPOCHS / 2), 0.4 + 0.65 * np.exp(-_EPOCHS / 2),
                   0.85 - 0.45 * np.exp(-_EPOCHS / 2))


def test_healthy_run_says_so_in_one_line():
    y, p = _good_predictions()
    report = check_training_health("multiclass", NAMES, y, p, HEALTHY)
    assert report["healthy"] and report["findings"] == []
    assert "healthy" in report["summary"] and "\n" not in report["summary"]


def test_collapse_onto_the_majority_class():
    y = np.array([0] * 200 + [1] * 50 + [2] * 50)
    p = np.tile([0.7, 0.2, 0.1], (300, 1))
    report = check_training_health("multiclass", NAMES, y, p, HEALTHY)
    assert "collapse" in _kinds(report)
    finding = next(f for f in report["findings"] if f["kind"] == "collapse")
    assert finding["evidence"]["predicted_share"] == {"nv": 1.0}
    assert finding["evidence"]["recall_of_other_classes"] == {"mel": 0.0, "bcc": 0.0}
    assert "class weights" in finding["fix"]


def test_binary_collapse_at_the_threshold():
    y = np.array([0] * 80 + [1] * 20)
    p = np.full(100, 0.2)
    assert "collapse" in _kinds(check_training_health("binary", ["normal", "covid"], y, p, None, [0.5]))


def test_overfitting_after_epoch_k():
    history = _history(np.linspace(1.0, 0.1, 12), [1.0, 0.8, 0.65, 0.55, 0.5, 0.52, 0.58, 0.65, 0.7, 0.8, 0.9, 1.0])
    y, p = _good_predictions()
    report = check_training_health("multiclass", NAMES, y, p, history)
    finding = next(f for f in report["findings"] if f["kind"] == "overfitting")
    assert finding["evidence"]["best_epoch"] == 5
    assert finding["evidence"]["gap_at_end"] > finding["evidence"]["gap_at_best"]


def test_underfitting_when_losses_still_fall():
    history = _history(np.linspace(1.2, 0.7, 6), np.linspace(1.3, 0.8, 6))
    assert "underfitting" in _kinds(check_training_health("multiclass", NAMES, history=history))


def test_nan_loss_is_divergence():
    history = _history([1.0, 0.9, np.nan, np.nan], [1.0, 0.95, np.nan, np.nan])
    report = check_training_health("multiclass", NAMES, history=history)
    assert _kinds(report) == {"divergence"}
    assert report["findings"][0]["evidence"]["first_bad_epoch"] == 3


def test_oscillating_and_flat_losses_point_at_the_learning_rate():
    oscillating = _history([1.0, 0.6, 1.1, 0.5, 1.2, 0.6, 1.0, 0.5], [1.0] * 8)
    assert "learning_rate_too_high" in _kinds(check_training_health("multiclass", NAMES, history=oscillating))
    flat = _history([1.0986, 1.0985, 1.0984, 1.0984, 1.0983], [1.099] * 5)
    assert "learning_rate_too_low" in _kinds(check_training_health("multiclass", NAMES, history=flat))
