"""`evaluate_run`: the end of every training run, from predictions to metrics.json, plots and model card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import keras_med.evaluation.plots as plots
from keras_med.evaluation.arrays import canonical_arrays, one_vs_rest
from keras_med.evaluation.calibration import apply_temperature, calibration_summary, reliability_bins
from keras_med.evaluation.decision_rule import LogitAdjustment, balanced_accuracy, fit_decision_rule
from keras_med.evaluation.health import check_training_health
from keras_med.evaluation.metrics import compute_metrics
from keras_med.evaluation.model_card import build_model_card
from keras_med.evaluation.operating_points import DEFAULT_THRESHOLD, choose_thresholds
from keras_med.evaluation.predictions import decide, fetch_images
from keras_med.evaluation.report import write_card
from keras_med.run_directory import RunDirectory
from keras_med.training.environment import read_environment

logger = logging.getLogger(__name__)

MISTAKES_SHOWN = 12


def evaluate_run(run_dir: str | Path, *, class_names, task: str, y_true_test, y_prob_test,
                 y_true_val=None, y_prob_val=None, groups_test=None, history: pd.DataFrame | None = None,
                 config=None, data_summary=None,
                 test_images: Callable[[int], np.ndarray] | np.ndarray | None = None, model=None,
                 long_names: dict | None = None, n_bootstrap: int = 1000,
                 operating_point: str = "youden", target: float = 0.9, explain: int = 4,
                 thresholds=None, seed: int = 0, title: str | None = None, diverged: dict | None = None,
                 trust: dict | None = None, decision_rule: str | LogitAdjustment | None = "none") -> dict:
    """Evaluate a model's test predictions and write metrics.json, plots, Grad-CAM and the model card.

    Args:
        run_dir: the run directory; gets `metrics.json`, `plots/*.png`, `gradcam/*.png`,
            `report.md` and `report.html`.
        class_names: class names in output order (binary: `[negative, positive]`).
        task: "multiclass", "binary" or "multilabel".
        y_true_test: test targets in the pipeline's encoding. y_prob_test: test probabilities.
        y_true_val: validation targets, y_prob_val: validation probabilities; they choose the
            thresholds and fit the temperature. None: thresholds 0.5, no temperature scaling.
        groups_test: optional `(N,)` group ids (lesion, patient) of the test images: the bootstrap
            then resamples whole groups.
        history: the CSVLogger history DataFrame, or None.
        config: a RecipeConfig or a dict, written into the card (the settings below are not read
            from it: the caller passes them).
        data_summary: counts per class and split (DataFrame or `{split: {class: count}}`), or None.
        test_images: the test images (float 0..255 `(N, S, S, 3)` array, or a callable
            `index -> image`), for the grid of mistakes and Grad-CAM examples; or None.
        model: the trained Keras model, for Grad-CAM examples (needs `test_images`); or None.
        long_names: optional `{class name: long name}` for the card.
        n_bootstrap: bootstrap resamples.
        operating_point: "youden", "f1", "sensitivity" or "specificity".
        target: target sensitivity/specificity.
        explain: Grad-CAM overlays for this many right and this many wrong predictions.
        thresholds: fixed thresholds (one per model output) instead of choosing them on validation,
            e.g. the stored ones when scoring an external test set.
        seed: bootstrap seed.
        title: the card's title (default: "Model card: <run dir name>").
        diverged: how training diverged, when the model evaluated is the good checkpoint kept
            before it (`Divergence.to_dict()` plus a `message`); None for a run that did not.
        trust: `{"ood": ..., "conformal": ...}` from `keras_med.evaluation.trust.assess_trust`, merged
            into the metrics and shown in the card ("Unfamiliar inputs", "Prediction sets"); or None.
        decision_rule: multiclass only: "balanced", "prior" or "none" fits that rule on the
            validation predictions (`keras_med.evaluation.decision_rule`); a `LogitAdjustment`
            applies a given one (e.g. the run's, on an external set). Every figure is then of the
            adjusted probabilities, as the exported model serves them; `metrics["decision_rule"]`
            records the biases and the test balanced accuracy without them. None: no rule.

    Returns:
        The metrics dictionary written to metrics.json; `thresholds` holds one threshold per model
        output (C for multiclass and multilabel, one for binary: on the positive class).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    class_names = list(class_names)

    y_true, y_prob = canonical_arrays(task, y_true_test, y_prob_test, class_names, "_test")
    have_val = y_true_val is not None and y_prob_val is not None
    val_true = val_prob = None
    if have_val:
        val_true, val_prob = canonical_arrays(task, y_true_val, y_prob_val, class_names, "_val")
    rule_record = None
    if task == "multiclass":
        rule, y_prob, val_prob = _apply_decision_rule(decision_rule, y_true, y_prob, val_true, val_prob)
        if rule is not None:
            rule_record = {**rule.to_dict(class_names), "test_balanced_accuracy_without": balanced_accuracy(
                y_true, np.asarray(y_prob_test, np.float64).argmax(axis=1), len(class_names))}
    indicator, scores, column_names = one_vs_rest(task, y_true, y_prob, class_names)
    if thresholds is not None:
        chosen_on, method = "given (fixed before this evaluation)", "given"
        thresholds = [float(t) for t in thresholds]
    elif have_val:
        chosen_on, method = "validation", operating_point
        val_indicator, val_scores, _ = one_vs_rest(task, val_true, val_prob, class_names)
        thresholds = choose_thresholds(val_indicator, val_scores, operating_point, target)
    else:
        logger.warning("No validation predictions: thresholds stay at %.2f and no temperature is fitted",
                       DEFAULT_THRESHOLD)
        chosen_on, method = f"none (default {DEFAULT_THRESHOLD})", "default"
        thresholds = [DEFAULT_THRESHOLD] * len(column_names)

    metrics = compute_metrics(task, y_true, y_prob, class_names, thresholds=thresholds, groups=groups_test,
                              n_bootstrap=n_bootstrap, seed=seed)
    metrics["operating_point"] = {"method": method, "target": target, "chosen_on": chosen_on}
    metrics["decision_rule"] = rule_record
    if have_val and method != "given":
        # choose_thresholds falls back to the default for these: no positive (or negative) to tune on
        unmeasured = [name for name, column in zip(column_names, val_indicator.T) if column.min() == column.max()]
        metrics["undefined_labels"]["val"] = unmeasured
        if unmeasured:
            logger.warning("%d of %d outputs have no positive (or no negative) validation image: %s; their "
                           "thresholds stay at %.2f", len(unmeasured), len(column_names), unmeasured,
                           DEFAULT_THRESHOLD)
    metrics["bad_images"] = read_bad_images_summary(run_dir)
    metrics["bootstrap"] = {"n": n_bootstrap,
                            "groups": None if groups_test is None else int(len(np.unique(groups_test)))}
    metrics["calibration"] = calibration_summary(task, y_true, y_prob, val_true, val_prob)
    # The validation figures are evidence beside the test ones for "no better than chance".
    val_metrics = (compute_metrics(task, val_true, val_prob, class_names, thresholds=thresholds,
                                   n_bootstrap=n_bootstrap, seed=seed) if have_val else None)
    metrics["health"] = check_training_health(task, class_names, y_true, y_prob, history, thresholds,
                                              metrics=metrics, val_metrics=val_metrics)
    if trust:
        metrics.update(trust)

    plot_files = _write_plots(run_dir, task, class_names, metrics, history, y_true, y_prob, indicator,
                              scores, column_names)
    decisions = decide(task, y_true, y_prob, class_names, thresholds)
    if test_images is not None:
        mistakes = decisions.most_confident(False, MISTAKES_SHOWN)
        if mistakes.size:
            path = plots.plot_image_grid(
                fetch_images(test_images, mistakes),
                [f"#{i} true: {decisions.true_text[i]}\npred: {decisions.predicted_text[i]} "
                 f"({decisions.confidence[i]:.2f})" for i in mistakes],
                run_dir / "plots" / "confident_mistakes.png")
            plot_files["Most confident mistakes (true label, prediction, confidence)"] = path
    gradcam = []
    if model is not None and test_images is not None and explain > 0:
        gradcam = _gradcam_examples(run_dir, model, test_images, decisions, explain)

    metrics["plots"] = {caption: str(path.relative_to(run_dir)) for caption, path in plot_files.items()}
    metrics["gradcam"] = [item["path"] for item in gradcam]
    metrics["diverged"] = diverged
    RunDirectory(run_dir).write_metrics(metrics)
    card = build_model_card(metrics, title or f"Model card: {run_dir.name}", config=config,
                            data_summary=data_summary, long_names=long_names, plots=metrics["plots"],
                            gradcam=gradcam, environment=read_environment(run_dir))
    write_card(card, run_dir)
    headline = {key: value["value"] for key, value in metrics.items()
                if isinstance(value, dict) and "ci95" in value}
    logger.info("Evaluation written to %s: %s", run_dir, headline)
    return metrics


def _apply_decision_rule(rule, y_true, y_prob, val_true, val_prob):
    """`(rule, test probabilities, validation probabilities)` after the decision rule (None: unchanged)."""
    if isinstance(rule, str):
        if rule == "none":
            return None, y_prob, val_prob
        if val_prob is None:
            logger.warning("No validation predictions: the %s decision rule is not fitted (argmax decides)", rule)
            return None, y_prob, val_prob
        rule = fit_decision_rule(rule, val_true, val_prob)
        logger.info("decision rule %s fitted on %d validation images: biases %s", rule.method, rule.fitted_on,
                    np.round(rule.biases, 3).tolist())
    if rule is None:
        return None, y_prob, val_prob
    return rule, rule.apply(y_prob), None if val_prob is None else rule.apply(val_prob)


def read_bad_images_summary(run_dir: Path) -> dict | None:
    """How many images the run skipped (`--on-bad-image skip`) and why, from its `bad_images.csv`; None if none."""
    # Imported here: importing keras_med.data loads TensorFlow, which evaluating metrics does not need.
    from keras_med.data.files import BAD_IMAGES_FILE

    path = run_dir / BAD_IMAGES_FILE
    if not path.is_file():
        return None
    listed = pd.read_csv(path, dtype=str, keep_default_na=False)
    reasons = listed["reason"].str.split(":").str[0].value_counts().to_dict() if len(listed) else {}
    return {"count": len(listed), "file": BAD_IMAGES_FILE, "reasons": reasons}


def _write_plots(run_dir, task, class_names, metrics, history, y_true, y_prob, indicator, scores,
                 column_names) -> dict[str, Path]:
    plot_dir = run_dir / "plots"
    files: dict[str, Path] = {}
    if history is not None and len(history) > 0:
        files["Training curves"] = plots.plot_training_curves(history, plot_dir / "training_curves.png")
    if task == "multilabel":
        files["Confusion matrix per label, at its threshold"] = plots.plot_label_confusions(
            metrics["per_class"], plot_dir / "confusion_matrices.png")
    else:
        decision = "argmax" if task == "multiclass" else f"threshold {metrics['thresholds'][0]:.2f}"
        files[f"Confusion matrix ({decision})"] = plots.plot_confusion_matrix(
            metrics["confusion_matrix"], class_names, plot_dir / "confusion_matrix.png")
    files["ROC curves (one vs rest)"] = plots.plot_roc_curves(indicator, scores, column_names,
                                                              plot_dir / "roc_curves.png")
    files["Precision-recall curves"] = plots.plot_pr_curves(indicator, scores, column_names,
                                                            plot_dir / "pr_curves.png")
    calibration = metrics["calibration"]
    after = None
    if calibration["temperature"] is not None:
        after = reliability_bins(task, y_true, apply_temperature(task, y_prob, calibration["temperature"]),
                                 calibration["n_bins"])
    files["Reliability diagram"] = plots.plot_reliability(
        reliability_bins(task, y_true, y_prob, calibration["n_bins"]), plot_dir / "reliability.png", after,
        calibration["ece_before"], calibration["ece_after"])
    return files


def _gradcam_examples(run_dir: Path, model, test_images, decisions, count: int) -> list[dict]:
    # Imported here: keras_med.explain needs TensorFlow (tf-keras-vis); metrics alone do not.
    from keras_med.explain import save_overlays

    examples = []
    for correct, kind in ((True, "right"), (False, "wrong")):
        indices = decisions.most_confident(correct, count)
        if indices.size == 0:
            continue
        paths = save_overlays(model, fetch_images(test_images, indices), run_dir / "gradcam",
                              names=[f"{kind}_{i}" for i in indices],
                              class_indices=decisions.predicted_index[indices])
        examples += [{"path": str(path.relative_to(run_dir)),
                      "caption": f"Test image #{i} ({kind}): true {decisions.true_text[i]}, predicted "
                                 f"{decisions.predicted_text[i]} ({decisions.confidence[i]:.2f}); Grad-CAM of the "
                                 "predicted class."}
                     for i, path in zip(indices, paths)]
    return examples
