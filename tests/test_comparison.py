"""`keras-med compare`: paired differences with known answers, McNemar, DeLong, refusals.

Runs are built in a tmp dir with the writers a recipe run uses (`save_split`, `save_run_predictions`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from keras_med.cli import main
from keras_med.comparison.runs import ComparisonError, align_runs, load_run_predictions_for_comparison
from keras_med.comparison.statistics import (MCNEMAR_EXACT_BELOW, Scored, compare, delong_covariance, delong_test,
                                             mcnemar, weighted_metrics)
from keras_med.comparison.report import verdict
from keras_med.evaluation.calibration import expected_calibration_error

CLASSES = ["a", "b", "c", "d"]
PER_CLASS = 50


def write_run(run_dir: Path, data_root: Path, labels, probabilities, groups, *, names=None, task="multiclass",
              class_names=CLASSES, metrics=None) -> Path:
    """A run directory with the files a recipe run writes: split.csv, predictions.npz, class_names.json, ..."""
    import pandas as pd

    from keras_med.data.splits import save_split
    from keras_med.data.table import ImageTable
    from keras_med.evaluation.run_predictions import save_run_predictions

    n = len(labels)
    names = names if names is not None else [f"img_{i:04d}.jpg" for i in range(n)]
    # Two training and two validation rows besides the test images, as in a real split.
    extra = [class_names[0], class_names[1]] * 2
    frame = pd.DataFrame({
        "path": [str(data_root / "images" / name) for name in names] + [str(data_root / "train" / f"t{i}.jpg")
                                                                         for i in range(4)],
        "label": [class_names[k] for k in labels] + extra,
        "group": list(groups) + [f"tg{i}" for i in range(4)],
        "split": ["test"] * n + ["train", "train", "val", "val"]})
    run_dir.mkdir(parents=True)
    save_split(ImageTable(frame, class_names, task), run_dir / "split.csv")
    targets = np.eye(len(class_names))[labels] if task == "multiclass" else np.asarray(labels)[:, None]
    y_val = np.eye(len(class_names))[[0, 1]] if task == "multiclass" else np.array([[0], [1]])
    p_val = np.full((2, len(class_names)), 1.0 / len(class_names)) if task == "multiclass" else np.full((2, 1), 0.5)
    save_run_predictions(run_dir, {"val": y_val, "test": targets}, {"val": p_val, "test": probabilities}, "none")
    (run_dir / "class_names.json").write_text(json.dumps({"class_names": class_names, "task": task}))
    (run_dir / "config.toml").write_text('[evaluation]\ntta = "none"\n')
    (run_dir / "metrics.json").write_text(json.dumps(metrics or {"thresholds": None, "decision_rule": None}))
    return run_dir


def model_outputs(predicted: np.ndarray, n_classes: int = len(CLASSES), confidence: float = 0.7,
                  seed: int = 0) -> np.ndarray:
    """Softmax-like probabilities whose argmax is `predicted`, with a little noise in the other classes."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(0.5, 1.0, size=(len(predicted), n_classes))
    rest[np.arange(len(predicted)), predicted] = 0.0
    rest = rest / rest.sum(axis=1, keepdims=True) * (1.0 - confidence)
    rest[np.arange(len(predicted)), predicted] = confidence
    return rest


@pytest.fixture
def model_a():
    """200 test images, 50 per class, 100 groups of two; A gets 40 of each class right (recall 0.8)."""
    labels = np.repeat(np.arange(4), PER_CLASS)
    predicted = labels.copy()
    for k in range(4):
        wrong = np.flatnonzero(labels == k)[:10]
        predicted[wrong] = (k + 1) % 4
    groups = np.array([f"g{i // 2}" for i in range(len(labels))])
    return labels, predicted, groups


def test_identical_runs_differ_by_zero_and_are_not_shown(tmp_path, model_a, capsys):
    labels, predicted, groups = model_a
    probabilities = model_outputs(predicted)
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, probabilities, groups)
    run_b = write_run(tmp_path / "b", tmp_path / "data_copy", labels, probabilities, groups)

    status = main(["compare", str(run_a), str(run_b), "--out", str(tmp_path / "out"), "--bootstrap", "300"])

    assert status == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("B equals A on balanced accuracy (difference 0.000, 95% CI 0.000 to 0.000)")
    assert first_line.endswith(": not shown")
    summary = json.loads((tmp_path / "out" / "comparison.json").read_text())
    differences = summary["comparisons"][0]["differences"]
    assert {item["metric"] for item in differences} >= {"balanced_accuracy", "macro_auc", "ece", "recall/a"}
    for item in differences:
        assert item["difference"] == 0.0 and item["ci95"][0] <= 0.0 <= item["ci95"][1] and not item["shown"]
        assert item["p_value"] == 1.0
    assert summary["comparisons"][0]["mcnemar"]["p_value"] == 1.0
    assert all(item["p_value"] == 1.0 for item in summary["comparisons"][0]["delong"])
    html = (tmp_path / "out" / "comparison.html").read_text()
    assert "data:image/png;base64," in html and "B equals A on balanced accuracy" in html
    assert "comparison_forest.png" in (tmp_path / "out" / "comparison.md").read_text()


def test_flipped_predictions_give_the_expected_difference_and_are_shown(tmp_path, model_a):
    labels, predicted, groups = model_a
    fixed = predicted.copy()
    # B is A with its 10 mistakes on class "a" made right: recall of "a" 0.8 -> 1.0, balanced accuracy +0.05.
    fixed[np.flatnonzero(labels == 0)[:10]] = 0
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, model_outputs(predicted), groups)
    run_b = write_run(tmp_path / "b", tmp_path / "data", labels, model_outputs(fixed), groups)
    aligned, note = align_runs([load_run_predictions_for_comparison(run_a), load_run_predictions_for_comparison(run_b)])
    assert note.startswith("same test set")

    comparison = compare([aligned[0].scored], [aligned[1].scored], aligned[0].groups, n_bootstrap=500, seed=1)

    balanced = comparison.difference("balanced_accuracy")
    expected = balanced_accuracy_score(labels, fixed) - balanced_accuracy_score(labels, predicted)
    assert expected == pytest.approx(0.05)
    assert balanced.difference == pytest.approx(expected, abs=1e-12)
    # The 10 flips lie in 5 of the 100 groups: a resample misses all of them with probability 0.95 ** 100.
    assert balanced.shown and balanced.ci95[0] > 0 and balanced.p_value < 0.05
    assert comparison.difference("recall/a").difference == pytest.approx(0.2, abs=1e-12)
    assert comparison.difference("recall/b").difference == 0.0
    assert verdict(balanced).startswith("B is better than A on balanced accuracy by 0.050 (95% CI ")
    assert verdict(balanced).endswith("): shown")
    # McNemar: 10 images only B got right, none only A: the exact binomial test.
    assert (comparison.mcnemar.a_only, comparison.mcnemar.b_only) == (0, 10)
    assert comparison.mcnemar.p_value == pytest.approx(scipy_stats.binomtest(10, 10, 0.5).pvalue)
    assert comparison.n_groups == 100


def test_a_worse_model_is_called_worse(tmp_path, model_a):
    labels, predicted, groups = model_a
    broken = predicted.copy()
    broken[np.flatnonzero(labels == 2)[10:30]] = 3
    scored_a = Scored("multiclass", CLASSES, labels, model_outputs(predicted), predicted)
    scored_b = Scored("multiclass", CLASSES, labels, model_outputs(broken), broken)
    balanced = compare([scored_a], [scored_b], groups, n_bootstrap=300).difference("balanced_accuracy")
    assert balanced.difference == pytest.approx(-0.1, abs=1e-12)
    assert verdict(balanced).startswith("B is worse than A on balanced accuracy by 0.100 (95% CI ")
    assert balanced.shown


def test_seed_groups_average_the_runs_of_each_side(model_a):
    labels, predicted, groups = model_a
    fixed_5, fixed_10 = predicted.copy(), predicted.copy()
    fixed_5[np.flatnonzero(labels == 0)[:5]] = 0
    fixed_10[np.flatnonzero(labels == 0)[:10]] = 0
    scored = {name: Scored("multiclass", CLASSES, labels, model_outputs(decided, seed=i), decided)
              for i, (name, decided) in enumerate([("a", predicted), ("b5", fixed_5), ("b10", fixed_10)])}

    comparison = compare([scored["a"], scored["a"]], [scored["b5"], scored["b10"]], groups, n_bootstrap=400)

    balanced = comparison.difference("balanced_accuracy")
    # Mean of B's runs (0.825 and 0.85) minus A's (0.8).
    assert balanced.difference == pytest.approx(0.0375, abs=1e-12)
    assert balanced.ci95[0] < balanced.difference < balanced.ci95[1]
    # The interval holds the spread between B's seeds: its low end reaches below the worse seed's gain.
    single = compare([scored["a"]], [scored["b10"]], groups, n_bootstrap=400).difference("balanced_accuracy")
    assert balanced.ci95[0] < single.ci95[0]
    assert comparison.mcnemar is None and comparison.delong == []


def test_seed_group_flags_on_the_command_line(tmp_path, model_a, capsys):
    labels, predicted, groups = model_a
    fixed = predicted.copy()
    fixed[np.flatnonzero(labels == 0)[:10]] = 0
    runs_a = [write_run(tmp_path / f"a{s}", tmp_path / "data", labels, model_outputs(predicted, seed=s), groups)
              for s in (1, 2)]
    runs_b = [write_run(tmp_path / f"b{s}", tmp_path / "data", labels, model_outputs(fixed, seed=s), groups)
              for s in (1, 2)]
    status = main(["compare", "--a", *map(str, runs_a), "--b", *map(str, runs_b), "--out", str(tmp_path / "out"),
                   "--bootstrap", "200"])
    assert status == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("B is better than A on balanced accuracy by 0.050")
    summary = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert summary["comparisons"][0]["a"]["runs"] == [str(run) for run in runs_a]


def test_runs_sharing_no_test_image_are_refused_in_one_line(tmp_path, model_a, capsys):
    labels, predicted, groups = model_a
    probabilities = model_outputs(predicted)
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, probabilities, groups)
    run_b = write_run(tmp_path / "b", tmp_path / "data", labels, probabilities, groups,
                      names=[f"other_{i}.jpg" for i in range(len(labels))])
    status = main(["compare", str(run_a), str(run_b), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(error) == 1 and "share no test image" in error[0] and error[0].startswith("keras-med compare: error:")
    assert not (tmp_path / "out").exists()


def test_partly_shared_test_sets_are_compared_on_the_shared_images(tmp_path, model_a):
    labels, predicted, groups = model_a
    probabilities = model_outputs(predicted)
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, probabilities, groups)
    run_b = write_run(tmp_path / "b", tmp_path / "data", labels[:150], probabilities[:150], groups[:150])
    aligned, note = align_runs([load_run_predictions_for_comparison(run_a), load_run_predictions_for_comparison(run_b)])
    assert len(aligned[0].image_ids) == len(aligned[1].image_ids) == 150
    assert note.startswith("test sets differ") and "150 images" in note


def test_a_shared_image_labelled_differently_is_refused(tmp_path, model_a):
    labels, predicted, groups = model_a
    probabilities = model_outputs(predicted)
    relabelled = labels.copy()
    relabelled[3] = 2
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, probabilities, groups)
    run_b = write_run(tmp_path / "b", tmp_path / "data", relabelled, probabilities, groups)
    with pytest.raises(ComparisonError, match="img_0003.jpg is labelled differently"):
        align_runs([load_run_predictions_for_comparison(run_a), load_run_predictions_for_comparison(run_b)])


def test_binary_runs_use_their_thresholds(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 40)
    score = np.clip(labels * 0.3 + rng.uniform(0.0, 0.7, size=80), 0, 1)
    groups = np.arange(80).astype(str)
    run_a = write_run(tmp_path / "a", tmp_path / "data", labels, score[:, None], groups, task="binary",
                      class_names=["benign", "malignant"], metrics={"thresholds": [0.9]})
    run = load_run_predictions_for_comparison(run_a)
    np.testing.assert_array_equal(run.scored.decided, (score >= 0.9).astype(int))
    values = weighted_metrics(np.ones((1, 80)), run.scored)
    assert values["macro_auc"][0] == pytest.approx(roc_auc_score(labels, score))
    assert values["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(labels, score >= 0.9))


def test_weighted_ece_with_unit_weights_is_the_reports_ece(model_a):
    labels, predicted, _ = model_a
    probabilities = model_outputs(predicted, confidence=0.55)
    probabilities[::7] = model_outputs(predicted[::7], confidence=0.93)
    scored = Scored("multiclass", CLASSES, labels, probabilities, probabilities.argmax(axis=1))
    ece = weighted_metrics(np.ones((1, len(labels))), scored)["ece"][0]
    assert ece == pytest.approx(expected_calibration_error("multiclass", labels, probabilities), abs=1e-12)
    binary = Scored("binary", ["n", "p"], labels % 2, probabilities[:, 0], (probabilities[:, 0] >= 0.5).astype(int))
    ece = weighted_metrics(np.ones((1, len(labels))), binary)["ece"][0]
    assert ece == pytest.approx(expected_calibration_error("binary", labels % 2, probabilities[:, 0]), abs=1e-12)


def delong_reference(y_true, score_a, score_b):
    """DeLong, DeLong & Clarke-Pearson (1988) by its definition: every positive against every negative."""
    positives, negatives = y_true == 1, y_true == 0
    components = []
    for score in (score_a, score_b):
        x, y = score[positives][:, None], score[negatives][None, :]
        psi = (x > y) + 0.5 * (x == y)
        components.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components
    m, n = positives.sum(), negatives.sum()
    s10, s01 = np.cov(np.stack([v10_a, v10_b])), np.cov(np.stack([v01_a, v01_b]))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    z = (auc_b - auc_a) / np.sqrt(variance)
    return np.array([auc_a, auc_b]), covariance, 2 * scipy_stats.norm.sf(abs(z))


def test_fast_delong_matches_the_pairwise_definition():
    rng = np.random.default_rng(7)
    y_true = (rng.uniform(size=120) < 0.35).astype(int)
    # Scores rounded to one decimal, so there are many ties (the mid-ranks must count them one half).
    score_a = np.round(np.clip(0.3 * y_true + rng.normal(0.4, 0.2, 120), 0, 1), 1)
    score_b = np.round(np.clip(0.5 * y_true + rng.normal(0.3, 0.2, 120), 0, 1), 1)

    aucs, covariance = delong_covariance(y_true, np.stack([score_a, score_b]))
    reference_aucs, reference_covariance, reference_p = delong_reference(y_true, score_a, score_b)

    np.testing.assert_allclose(aucs, reference_aucs, rtol=1e-12)
    np.testing.assert_allclose(aucs, [roc_auc_score(y_true, score_a), roc_auc_score(y_true, score_b)], rtol=1e-12)
    np.testing.assert_allclose(covariance, reference_covariance, rtol=1e-10)
    result = delong_test(y_true, score_a, score_b)
    assert result.p_value == pytest.approx(reference_p, rel=1e-9)
    assert 0 < result.p_value < 1 and result.ci95[0] < result.difference < result.ci95[1]


def test_mcnemar_exact_and_chi_square():
    right_a = np.array([True] * 30 + [False] * 8 + [True] * 3 + [False] * 10)
    right_b = np.array([True] * 30 + [True] * 8 + [False] * 3 + [False] * 10)
    exact = mcnemar(right_a, right_b)
    assert (exact.a_only, exact.b_only, exact.method) == (3, 8, "exact")
    assert exact.p_value == pytest.approx(scipy_stats.binomtest(8, 11, 0.5).pvalue)
    many_a = np.r_[np.ones(10, bool), np.zeros(30, bool)]
    many_b = ~many_a
    chi2 = mcnemar(many_a, many_b)
    assert 10 + 30 >= MCNEMAR_EXACT_BELOW and chi2.method == "chi2"
    assert chi2.statistic == pytest.approx((abs(10 - 30) - 1) ** 2 / 40)
    assert chi2.p_value == pytest.approx(scipy_stats.chi2.sf((abs(10 - 30) - 1) ** 2 / 40, df=1))
    # The continuity-corrected chi-square is close to the exact test at these counts.
    assert chi2.p_value == pytest.approx(scipy_stats.binomtest(30, 40, 0.5).pvalue, rel=0.25)


def test_compare_needs_two_runs(capsys):
    assert main(["compare", "only_one"]) == 2
    assert "expected at least two runs" in capsys.readouterr().err


def test_multilabel_metrics_with_unit_weights_match_scikit_learn():
    rng = np.random.default_rng(5)
    y_true = (rng.uniform(size=(60, 3)) < 0.4).astype(int)
    y_prob = np.clip(y_true * 0.35 + rng.uniform(0, 0.65, size=(60, 3)), 0, 1)
    decided = (y_prob >= 0.5).astype(int)
    scored = Scored("multilabel", ["x", "y", "z"], y_true, y_prob, decided)
    values = {name: value[0] for name, value in weighted_metrics(np.ones((1, 60)), scored).items()}
    assert values["macro_auc"] == pytest.approx(np.mean([roc_auc_score(y_true[:, k], y_prob[:, k]) for k in range(3)]))
    assert values["balanced_accuracy"] == pytest.approx(
        np.mean([balanced_accuracy_score(y_true[:, k], decided[:, k]) for k in range(3)]))
    assert values["recall/y"] == pytest.approx(decided[y_true[:, 1] == 1, 1].mean())
    assert values["ece"] == pytest.approx(expected_calibration_error("multilabel", y_true, y_prob), abs=1e-12)


def test_an_external_evaluation_folder_becomes_comparable(tmp_path, model_a):
    import pandas as pd

    from keras_med.comparison.runs import save_test_predictions
    from keras_med.data.table import ImageTable

    labels, predicted, groups = model_a
    frame = pd.DataFrame({"path": [str(tmp_path / "ext" / f"e{i}.png") for i in range(len(labels))],
                          "label": [CLASSES[k] for k in labels], "group": groups})
    table = ImageTable(frame, CLASSES, "multiclass")
    for name, decided in (("first", predicted), ("second", labels)):
        out = tmp_path / name
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({"class_names": CLASSES, "task": "multiclass",
                                                      "thresholds": [0.5] * 4, "decision_rule": None}))
        save_test_predictions(out, table, np.eye(4)[labels], model_outputs(decided))
    first, second = (load_run_predictions_for_comparison(tmp_path / name) for name in ("first", "second"))
    aligned, note = align_runs([first, second])
    assert note.startswith("same test set") and len(aligned[0].image_ids) == len(labels)
    comparison = compare([aligned[0].scored], [aligned[1].scored], aligned[0].groups, n_bootstrap=100)
    assert comparison.difference("balanced_accuracy").difference == pytest.approx(0.2, abs=1e-12)
