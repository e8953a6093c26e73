"""The multiclass decision rule: logit biases fitted on validation for balanced accuracy, and where it is applied."""

import json

import numpy as np
import pytest

from keras_med.evaluation import evaluate_run
from keras_med.evaluation.decision_rule import (LogitAdjustment, adjust_probabilities, balanced_accuracy,
                                                compare_rules, fit_balanced_biases, main, prior_biases,
                                                read_decision_rule)

NAMES = ["common", "middle", "rare"]


def _skewed(seed: int, counts=(300, 120, 60)):
    """Probabilities of a model that favours the common class: the rare ones are under-called."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    logits = rng.normal(0, 1.0, (len(y), 3))
    logits[np.arange(len(y)), y] += 1.5
    logits[:, 0] += 1.2  # the training prior's pull towards the common class
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_fitted_biases_raise_balanced_accuracy_on_unseen_data():
    y_val, p_val = _skewed(0)
    y_test, p_test = _skewed(1)
    rule = fit_balanced_biases(y_val, p_val)
    before = balanced_accuracy(y_test, p_test.argmax(axis=1), 3)
    after = balanced_accuracy(y_test, rule.apply(p_test).argmax(axis=1), 3)
    assert after > before + 0.05
    assert rule.biases[0] < rule.biases[2]
    assert rule.apply(p_test).sum(axis=1) == pytest.approx(np.ones(len(y_test)))


def test_a_class_with_few_validation_images_moves_little():
    rng = np.random.default_rng(0)
    y = np.array([0] * 300 + [1] * 120 + [2] * 5)
    logits = rng.normal(0, 1, (len(y), 3))
    logits[np.arange(len(y)), y] += 1.5
    logits[:, 2] -= 2.0  # the rare class is hardly ever called
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rule = fit_balanced_biases(y, p, max_bias=2.0, min_support=50)
    free = fit_balanced_biases(y, p, max_bias=2.0, min_support=1)
    # the largest class is the reference; 5 of 50 images let the rare class move 2.0 * 5 / 50 against it
    assert rule.biases[0] == 0.0 and abs(rule.biases[2]) <= 0.2 + 1e-9
    assert free.biases[2] - free.biases[0] > 0.5


def test_prior_rule_is_minus_log_prior_and_tau_zero_changes_nothing():
    y = np.array([0] * 7 + [1] * 3 + [2] * 0)
    rule = prior_biases(y, 3, tau=1.0)
    counts = np.array([8.0, 4.0, 1.0])
    expected = -np.log(counts / counts.sum())
    assert rule.biases == pytest.approx(tuple(expected - expected.mean()))
    _, p = _skewed(0)
    assert prior_biases(y, 3, tau=0.0).apply(p) == pytest.approx(p)


def test_adjustment_round_trips_and_matches_the_formula():
    rule = LogitAdjustment((0.5, 0.0, -0.5), "balanced", fitted_on=10)
    stored = json.loads(json.dumps(rule.to_dict(NAMES)))
    assert LogitAdjustment.from_dict(stored) == rule and stored["bias_by_class"]["common"] == 0.5
    p = np.array([[0.2, 0.3, 0.5]])
    expected = p * np.exp([0.5, 0.0, -0.5])
    assert adjust_probabilities(p, rule.biases) == pytest.approx(expected / expected.sum())
    assert LogitAdjustment.from_dict(None) is None


def test_evaluate_run_applies_and_records_the_rule(tmp_path):
    y_val, p_val = _skewed(0, counts=(120, 50, 30))
    y_test, p_test = _skewed(1, counts=(120, 50, 30))
    common = dict(class_names=NAMES, task="multiclass", y_true_test=y_test, y_prob_test=p_test, y_true_val=y_val,
                  y_prob_val=p_val, n_bootstrap=0, explain=0)
    fitted = evaluate_run(tmp_path / "fitted", decision_rule="balanced", **common)
    without = balanced_accuracy(y_test, p_test.argmax(axis=1), 3)
    assert fitted["decision_rule"]["method"] == "balanced"
    assert fitted["decision_rule"]["test_balanced_accuracy_without"] == pytest.approx(without)
    assert fitted["balanced_accuracy"]["value"] > without + 0.05
    assert "Decision rule 'balanced'" in (tmp_path / "fitted" / "report.md").read_text()
    # stored where export and evaluation of the run find it; given back, it gives the same figures
    (tmp_path / "fitted" / "checkpoints").mkdir()
    rule = read_decision_rule(tmp_path / "fitted" / "checkpoints" / "best.keras")
    assert rule.biases == pytest.approx(fitted["decision_rule"]["biases"])
    given = evaluate_run(tmp_path / "given", decision_rule=rule, thresholds=fitted["thresholds"], **common)
    assert given["balanced_accuracy"]["value"] == pytest.approx(fitted["balanced_accuracy"]["value"])


def test_the_rule_can_be_turned_off(tmp_path):
    y, p = _skewed(0, counts=(40, 20, 10))
    metrics = evaluate_run(tmp_path, class_names=NAMES, task="multiclass", y_true_test=y, y_prob_test=p,
                           y_true_val=y, y_prob_val=p, n_bootstrap=0, explain=0, decision_rule="none")
    assert metrics["decision_rule"] is None
    assert metrics["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy(y, p.argmax(axis=1), 3))


def test_compare_rules_and_the_command_on_cached_predictions(tmp_path, capsys):
    y_val, p_val = _skewed(0)
    y_test, p_test = _skewed(1)
    rows = {row["rule"]: row for row in compare_rules(y_val, p_val, y_test, p_test)}
    assert rows["balanced (fitted)"]["test_balanced_accuracy"] > rows["none"]["test_balanced_accuracy"]
    assert set(rows) == {"none", "balanced (fitted)", "prior tau=1", "prior tau=0.5"}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "predictions.npz", y_val=np.eye(3)[y_val], y_test=y_test, p_val_none=p_val,
                 p_test_none=p_test)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--tta", "none"]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 runs (tta=none)" in out and "balanced (fitted)" in out
    assert main([str(tmp_path / "missing")]) == 2
