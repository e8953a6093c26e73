"""Expected calibration error and temperature scaling."""

import numpy as np
import pytest
from scipy.special import softmax

from keras_med.evaluation.calibration import (apply_temperature, calibration_summary, expected_calibration_error,
                                              fit_temperature)


def _overconfident(n, seed, sharpen=4.0):
    """Labels drawn from calibrated probabilities, then reported with the logits sharpened."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.0, (n, 4))
    calibrated = softmax(logits, axis=1)
    y = np.array([rng.choice(4, p=row) for row in calibrated])
    return y, softmax(logits * sharpen, axis=1)


def test_ece_hand_computed():
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, both right).
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    assert expected_calibration_error("multiclass", y, p, n_bins=10) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    y_val, p_val = _overconfident(2000, 0)
    y_test, p_test = _overconfident(2000, 1)
    temperature = fit_temperature("multiclass", y_val, p_val)
    assert temperature == pytest.approx(4.0, rel=0.25)
    before = expected_calibration_error("multiclass", y_test, p_test)
    after = expected_calibration_error("multiclass", y_test, apply_temperature("multiclass", p_test, temperature))
    assert after < 0.5 * before
    summary = calibration_summary("multiclass", y_test, p_test, y_val, p_val)
    assert summary["nll_after"] < summary["nll_before"]


def test_temperature_for_sigmoid_outputs():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1.5, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-logits))).astype(int)
    p = 1 / (1 + np.exp(-3 * logits))
    temperature = fit_temperature("binary", y, p)
    assert temperature == pytest.approx(3.0, rel=0.25)
    assert expected_calibration_error("binary", y, apply_temperature("binary", p, temperature)) < \
        expected_calibration_error("binary", y, p)


def test_bad_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature("binary", np.array([0.5]), 0.0)
