"""Metrics against hand-computed values, the vectorised bootstrap against scikit-learn, thresholds."""

import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from keras_med.evaluation import bootstrap as bs
from keras_med.evaluation.metrics import compute_metrics
from keras_med.evaluation.operating_points import choose_threshold

# Three classes, six images: image 2 (true 0) predicted 1, image 5 (true 2) predicted 0.
Y_MULTI = np.array([0, 0, 1, 1, 2, 2])
P_MULTI = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
                    [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.2, 0.3]])


def test_multiclass_hand_computed():
    metrics = compute_metrics("multiclass", Y_MULTI, P_MULTI, ["a", "b", "c"], n_bootstrap=0)
    assert metrics["accuracy"]["value"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"]["value"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    a, b = metrics["per_class"]["a"], metrics["per_class"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(0.5), pytest.approx(0.5), 2)
    assert b["precision"] == pytest.approx(2 / 3) and b["f1"] == pytest.approx(0.8)
    # class a one-vs-rest: positives 0.8, 0.3 against negatives 0.2, 0.1, 0.1, 0.5: 4 + 3 of 8 pairs.
    assert a["auc"] == pytest.approx(7 / 8)
    assert metrics["macro_auc"]["ci95"] is None


def test_one_hot_targets_equal_indices():
    from_indices = compute_metrics("multiclass", Y_MULTI, P_MULTI, ["a", "b", "c"], n_bootstrap=0)
    from_one_hot = compute_metrics("multiclass", np.eye(3)[Y_MULTI], P_MULTI, ["a", "b", "c"], n_bootstrap=0)
    assert from_one_hot["balanced_accuracy"] == from_indices["balanced_accuracy"]


def test_binary_at_threshold_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05])[:, None]
    metrics = compute_metrics("binary", y[:, None], p, ["normal", "covid"], thresholds=[0.5], n_bootstrap=0)
    # tp=2 fn=1 fp=1 tn=3
    assert metrics["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert metrics["specificity"]["value"] == pytest.approx(3 / 4)
    assert metrics["ppv"]["value"] == pytest.approx(2 / 3)
    assert metrics["npv"]["value"] == pytest.approx(3 / 4)
    assert metrics["f1"]["value"] == pytest.approx(2 / 3)
    assert metrics["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p[:, 0]))
    assert metrics["confusion_matrix"] == [[3, 1], [1, 2]]


def test_multilabel_auroc_per_label_and_mean():
    y = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    p = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.8], [0.8, 0.3]])
    metrics = compute_metrics("multilabel", y, p, ["effusion", "mass"], n_bootstrap=0)
    assert metrics["per_class"]["effusion"]["auc"] == pytest.approx(0.75)
    assert metrics["per_class"]["mass"]["auc"] == pytest.approx(1.0)
    assert metrics["mean_auc"]["value"] == pytest.approx(0.875)
    assert metrics["per_class"]["mass"]["confusion_matrix"] == [[2, 0], [0, 2]]


def test_weighted_statistics_match_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) * 0.5 + 0.4 * y, 1)  # rounding makes many ties
    weights = rng.integers(0, 3, 200).astype(float)
    assert bs.weighted_roc_auc(weights[None], y, score)[0] == pytest.approx(
        roc_auc_score(y, score, sample_weight=weights))
    assert bs.weighted_average_precision(weights[None], y, score)[0] == pytest.approx(
        average_precision_score(y, score, sample_weight=weights))


def _noisy_multiclass(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(axis=1, keepdims=True)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_more_data():
    y, p = _noisy_multiclass(100, 0)
    small = compute_metrics("multiclass", y, p, ["a", "b", "c"], n_bootstrap=400)
    large = compute_metrics("multiclass", np.tile(y, 10), np.tile(p, (10, 1)), ["a", "b", "c"], n_bootstrap=400)
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        low, high = small[key]["ci95"]
        assert low <= small[key]["value"] <= high
        large_low, large_high = large[key]["ci95"]
        assert large_high - large_low < 0.6 * (high - low)


def test_group_bootstrap_is_wider_when_images_of_a_group_are_duplicates():
    y, p = _noisy_multiclass(60, 2)
    y, p = np.repeat(y, 5), np.repeat(p, 5, axis=0)
    groups = np.repeat(np.arange(60), 5)
    plain = compute_metrics("multiclass", y, p, ["a", "b", "c"], n_bootstrap=400)["accuracy"]["ci95"]
    grouped = compute_metrics("multiclass", y, p, ["a", "b", "c"], groups=groups, n_bootstrap=400)["accuracy"]["ci95"]
    assert grouped[1] - grouped[0] > 1.5 * (plain[1] - plain[0])


def test_bootstrap_of_1500_images_is_fast():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 1500)
    p = rng.dirichlet(np.ones(7), 1500)
    started = time.perf_counter()
    compute_metrics("multiclass", y, p, list("abcdefg"), groups=rng.integers(0, 1000, 1500), n_bootstrap=1000)
    assert time.perf_counter() - started < 15


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="y_prob"):
        compute_metrics("multiclass", Y_MULTI, P_MULTI[:, :2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="task"):
        compute_metrics("regression", Y_MULTI, P_MULTI, ["a", "b", "c"])
    with pytest.raises(ValueError, match="thresholds"):
        compute_metrics("multiclass", Y_MULTI, P_MULTI, ["a", "b", "c"], thresholds=[0.5])


def test_thresholds_for_each_operating_point():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Youden: at 0.7, sensitivity 3/4 + specificity 1 - 1 = 0.75 (at 0.4: 1 + 3/4 - 1 = 0.75, first max kept)
    assert choose_threshold(y, score, "youden") in (pytest.approx(0.7), pytest.approx(0.4))
    assert choose_threshold(y, score, "sensitivity", target=1.0) == pytest.approx(0.4)
    assert choose_threshold(y, score, "specificity", target=1.0) == pytest.approx(0.7)
    assert choose_threshold(y, score, "f1") == pytest.approx(0.4)  # F1 8/9 at 0.4
    assert choose_threshold(np.zeros(4), np.random.rand(4), "youden") == 0.5
    with pytest.raises(ValueError, match="operating_point"):
        choose_threshold(y, score, "accuracy")
