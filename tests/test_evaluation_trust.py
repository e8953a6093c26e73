"""Trust at the point of use: the out-of-distribution guard, conformal sets and the no-skill finding."""

import json

import numpy as np
import pytest

from keras_med.evaluation import compute_metrics, evaluate_run
from keras_med.evaluation.conformal import calibrate_conformal, conformal_quantile, evaluate_sets
from keras_med.evaluation.health import check_training_health
from keras_med.evaluation.ood import OODGuard, choose_threshold, fit_ood_guard, separation
from keras_med.evaluation.trust import TrustResult, load_run_trust, save_trust

CLASSES = ["a", "b", "c"]


def gaussian_features(n, shift=0.0, seed=0, dims=16, classes=3):
    """Features around one mean per class; `shift` moves every mean away (another modality)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    means = np.eye(classes, dims) * 4.0 + shift
    return (means[labels] + rng.normal(size=(n, dims))).astype(np.float32), labels


def softmax_probabilities(n, seed):
    """Probabilities and labels drawn from them, so the probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in probabilities])
    return probabilities, labels


@pytest.mark.parametrize("method", ["mahalanobis", "knn", "max_softmax"])
@pytest.mark.parametrize("pass_rate", [0.9, 0.95])
def test_threshold_passes_the_chosen_share_of_validation_images(method, pass_rate):
    train, train_labels = gaussian_features(600, seed=0)
    val, _ = gaussian_features(400, seed=1)
    probabilities, _ = softmax_probabilities(400, seed=2)
    guard = fit_ood_guard(train, train_labels, val, probabilities, method=method, pass_rate=pass_rate)
    passed = np.mean(guard.in_distribution(val, probabilities))
    assert guard.validation_pass_rate == pytest.approx(passed)
    # The smallest threshold passing the share: at least it, and not one image more than needed.
    assert pass_rate <= passed <= pass_rate + 1.0 / 400 + 1e-9


def test_choose_threshold_is_the_order_statistic():
    scores = np.arange(1.0, 21.0)
    assert choose_threshold(scores, 0.95) == 19.0
    assert choose_threshold(scores, 1.0) == 20.0
    with pytest.raises(ValueError, match="pass_rate"):
        choose_threshold(scores, 0.0)


def test_mahalanobis_flags_features_of_another_distribution_and_the_guard_round_trips(tmp_path):
    train, train_labels = gaussian_features(600, seed=0)
    val, _ = gaussian_features(300, seed=1)
    test, _ = gaussian_features(300, seed=3)
    outsiders, _ = gaussian_features(300, shift=3.0, seed=4)
    dummy = np.full((300, 3), 1 / 3, np.float32)
    guard = fit_ood_guard(train, train_labels, val, dummy, method="mahalanobis")
    result = separation(guard.score(test, dummy), guard.score(outsiders, dummy), guard.threshold)
    assert result["auroc"] > 0.99 and result["flagged_rate"] > 0.99 and result["n"] == 300

    # The whitened score equals the textbook Mahalanobis distance to the nearest class mean.
    from sklearn.covariance import LedoitWolf

    means = np.stack([train[train_labels == k].mean(axis=0) for k in range(3)])
    precision = LedoitWolf().fit(train - means[train_labels]).precision_
    expected = np.min([np.einsum("nd,de,ne->n", test - m, precision, test - m) for m in means], axis=0)
    np.testing.assert_allclose(guard.score(test, dummy[:300]), expected, rtol=1e-3)

    reloaded = OODGuard.load(guard.save(tmp_path / "guard.npz"))
    assert reloaded.summary() == guard.summary()
    np.testing.assert_array_equal(reloaded.score(test, dummy), guard.score(test, dummy))


@pytest.mark.parametrize("mode", ["marginal", "mondrian"])
def test_conformal_coverage_on_a_held_out_set_is_within_its_interval(mode):
    val_probabilities, val_labels = softmax_probabilities(1500, seed=10)
    test_probabilities, test_labels = softmax_probabilities(3000, seed=11)
    sets = calibrate_conformal(val_probabilities, val_labels, coverage=0.9, mode=mode)
    measured = evaluate_sets(sets, test_probabilities, test_labels, CLASSES, n_bootstrap=500)
    low, high = measured["coverage"]["ci95"]
    assert low <= 0.9 <= high
    assert abs(measured["coverage"]["value"] - 0.9) < 0.02
    assert 1.0 < measured["average_set_size"] < 3.0
    if mode == "mondrian":
        # Class-conditional calibration: each class gets its own guarantee.
        assert all(abs(entry["coverage"] - 0.9) < 0.04 for entry in measured["per_class"].values())
        assert len(set(np.round(sets.thresholds, 6))) == 3
    else:
        assert len(set(sets.thresholds)) == 1


def test_sets_keep_what_they_apply_to_through_the_run_folder(tmp_path):
    probabilities, labels = softmax_probabilities(300, seed=12)
    for applies_to in ("model", "answer"):
        sets = calibrate_conformal(probabilities, labels, applies_to=applies_to)
        save_trust(TrustResult(None, sets), tmp_path / applies_to)
        loaded = load_run_trust(tmp_path / applies_to / "checkpoints" / "best.keras")["conformal_sets"]
        assert loaded.applies_to == applies_to
        np.testing.assert_allclose(loaded.thresholds, sets.thresholds)
    with pytest.raises(ValueError, match="applies_to"):
        calibrate_conformal(probabilities, labels, applies_to="member")


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.linspace(0.0, 1.0, 9)
    assert conformal_quantile(scores, 0.9) == 1.0          # ceil(10 * 0.9) = 9th of 9
    assert conformal_quantile(scores, 0.5) == scores[4]    # ceil(10 * 0.5) = 5th
    assert conformal_quantile(scores[:3], 0.9) == np.inf   # too few: every class in the set


def no_skill_metrics(seed=0, n=300):
    """A 'model' whose probabilities have nothing to do with the (shuffled) labels."""
    rng = np.random.default_rng(seed)
    probabilities, labels = softmax_probabilities(n, seed)
    return probabilities, rng.permutation(labels)


def test_shuffled_labels_are_named_no_better_than_chance_first():
    probabilities, labels = no_skill_metrics()
    metrics = compute_metrics("multiclass", labels, probabilities, CLASSES, n_bootstrap=200)
    health = check_training_health("multiclass", CLASSES, labels, probabilities, metrics=metrics)
    assert health["findings"][0]["kind"] == "no_skill"
    assert health["summary"].startswith("The model is no better than chance")
    evidence = health["findings"][0]["evidence"]
    assert evidence["test_ci95"][0] <= 1 / 3 <= evidence["test_ci95"][1]


def test_a_skilled_model_is_not_named_and_a_small_class_is():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100, int), np.ones(100, int), np.full(12, 2)]
    probabilities = np.full((len(labels), 3), 0.05)
    probabilities[np.arange(len(labels)), labels] = 0.9
    probabilities += rng.uniform(0, 0.01, probabilities.shape)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    metrics = compute_metrics("multiclass", labels, probabilities, CLASSES, n_bootstrap=200)
    findings = check_training_health("multiclass", CLASSES, labels, probabilities, metrics=metrics)["findings"]
    assert "no_skill" not in [f["kind"] for f in findings]
    small = [f for f in findings if f["kind"] == "test_split_too_small"]
    assert len(small) == 1 and list(small[0]["evidence"]["classes"]) == ["c"] and "c (12 images" in small[0]["message"]


def test_binary_and_multilabel_no_skill_use_roc_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    metrics = compute_metrics("binary", y, rng.uniform(size=400), ["neg", "pos"], n_bootstrap=200)
    assert check_training_health("binary", ["neg", "pos"], metrics=metrics)["findings"][0]["kind"] == "no_skill"
    labels = np.c_[rng.integers(0, 2, 400), rng.integers(0, 2, 400)]
    scores = np.c_[labels[:, 0] * 0.8 + rng.uniform(0, 0.2, 400), rng.uniform(size=400)]
    metrics = compute_metrics("multilabel", labels, scores, ["x", "y"], n_bootstrap=200)
    finding = check_training_health("multilabel", ["x", "y"], metrics=metrics)["findings"][0]
    assert finding["kind"] == "no_skill" and list(finding["evidence"]["labels"]) == ["y"]


def test_a_shuffled_label_run_is_named_no_better_than_chance_in_its_report(tmp_path):
    probabilities, labels = no_skill_metrics(seed=2)
    val_probabilities, val_labels = no_skill_metrics(seed=3)
    metrics = evaluate_run(tmp_path, class_names=CLASSES, task="multiclass", y_true_test=labels,
                           y_prob_test=probabilities, y_true_val=val_labels, y_prob_val=val_probabilities,
                           n_bootstrap=200, explain=0)
    assert metrics["health"]["findings"][0]["kind"] == "no_skill"
    report = (tmp_path / "report.md").read_text()
    first_line = report.split("\n\n")[1]
    assert first_line.startswith("WARNING: The model is no better than chance")
    assert "validation" in first_line
    assert json.loads((tmp_path / "metrics.json").read_text())["health"]["findings"][0]["kind"] == "no_skill"
