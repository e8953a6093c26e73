"""Training health check: read the history and the predictions, name what went wrong, and why.

Each finding carries its evidence (the numbers it was decided on) and a suggested fix. A run
with no finding gets one line saying it looks healthy. The rules are deliberately simple and
their thresholds are module constants, so a reader can see exactly when a finding fires.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Collapse: the most predicted class takes this share of predictions...
COLLAPSE_SHARE = 0.9
# ...or every other class present in the data has a recall at most this.
COLLAPSE_RECALL = 0.05
# Overfitting: validation loss ends this much (relative) above its minimum, and the train loss kept falling.
OVERFIT_RISE = 0.10
# Still improving: validation loss fell by this much (relative) over the last three epochs.
STILL_FALLING = 0.03
# Flat loss: training loss changed by less than this (relative) over the whole run.
FLAT_CHANGE = 0.02
# Oscillation: at least this share of epoch-to-epoch changes flip sign, with swings this large (relative).
OSCILLATION_FLIPS = 0.6
OSCILLATION_SWING = 0.10
# Divergence: the final training loss is this many times its minimum.
DIVERGENCE_FACTOR = 2.0
# Underfitting: final training balanced accuracy within this margin of chance.
CHANCE_MARGIN = 0.15
# Too small to measure: a class (binary/multiclass) or label (positives) with fewer test images.
MIN_TEST_IMAGES_PER_CLASS = 20
# The headline whose 95% interval decides "no better than chance", and the chance level per task.
SKILL_HEADLINE = {"multiclass": "balanced_accuracy", "binary": "roc_auc"}
NO_SKILL_FIX = ("More (and more varied) training data, a backbone pretrained on this modality (fine-tune from an "
                "earlier model of the same kind of image), or a different split (check that the test split is "
                "from the same population and that labels line up with images).")


def _finding(kind: str, message: str, evidence: dict, fix: str) -> dict:
    return {"kind": kind, "message": message, "evidence": evidence, "fix": fix}


def check_training_health(task: str, class_names, y_true: np.ndarray | None = None,
                          y_prob: np.ndarray | None = None, history: pd.DataFrame | None = None,
                          thresholds=None, metrics: dict | None = None, val_metrics: dict | None = None) -> dict:
    """Findings about a training run from its history and its (canonical) predictions.

    Args:
        task: "multiclass", "binary" or "multilabel".
        class_names: class names in output order.
        y_true: canonical targets (see `keras_med.evaluation.arrays`), or None.
        y_prob: canonical probabilities, or None.
        history: the CSVLogger history (columns `loss`, `val_loss`, maybe `balanced_accuracy`,
            `val_balanced_accuracy`, `learning_rate`, `phase`), or None. Rows are taken in order
            as the run's epochs, across phases.
        thresholds: binary only, `[threshold]` for the decision; 0.5 when None.
        metrics: the test metrics (`compute_metrics`), for "no better than chance" and "test split too
            small"; or None.
        val_metrics: the same on the validation split, shown as evidence beside the test figures.

    Returns:
        `{"healthy": bool, "summary": str, "findings": [{"kind", "message", "evidence", "fix"}]}`.
    """
    class_names = list(class_names)
    findings: list[dict] = []
    if metrics is not None:
        findings += skill_findings(task, class_names, metrics, val_metrics)
    if y_true is not None and y_prob is not None:
        findings += _prediction_findings(task, class_names, y_true, y_prob, thresholds)
    if history is not None and len(history) > 0:
        findings += _history_findings(task, class_names, history)
    if findings:
        summary = f"{len(findings)} problem(s) found: " + ", ".join(f["kind"] for f in findings) + "."
        if findings[0]["kind"] == "no_skill":
            summary = findings[0]["message"] + " " + summary
    else:
        summary = "Training looks healthy: no collapse, over- or under-fitting, divergence or learning-rate problem found."
    return {"healthy": not findings, "summary": summary, "findings": findings}


def skill_findings(task: str, class_names, metrics: dict, val_metrics: dict | None = None) -> list[dict]:
    """"No better than chance" and "test split too small" findings from the metrics' bootstrap intervals.

    A model has no skill when the 95% interval of its test headline contains chance: balanced
    accuracy and 1/k (multiclass), ROC AUC and 0.5 (binary, and each label of a multi-label model).

    Args:
        task: "multiclass", "binary" or "multilabel".
        class_names: class names in output order.
        metrics: test metrics as `compute_metrics` returns them (with intervals).
        val_metrics: validation metrics, or None.

    Returns:
        Findings of kind `no_skill` (first) and `test_split_too_small`.
    """
    findings = []
    if task == "multilabel":
        entries = metrics.get("per_class", {})
        chance_labels = [name for name in class_names
                         if _contains(entries.get(name, {}).get("auc_ci95"), 0.5)]
        if chance_labels:
            every = len(chance_labels) == len(class_names)
            evidence = {name: {"test_auc": entries[name].get("auc"), "test_auc_ci95": entries[name].get("auc_ci95"),
                               "val_auc": _per_class_value(val_metrics, name, "auc"),
                               "val_auc_ci95": _per_class_value(val_metrics, name, "auc_ci95")}
                        for name in chance_labels}
            findings.append(_finding(
                "no_skill",
                ("The model is no better than chance on every label" if every else
                 f"The model is no better than chance on {len(chance_labels)} of {len(class_names)} labels "
                 f"({', '.join(chance_labels)})") + ": the 95% interval of their test ROC AUC contains 0.5.",
                {"chance": 0.5, "labels": evidence}, NO_SKILL_FIX))
    else:
        key = SKILL_HEADLINE[task]
        chance = 0.5 if task == "binary" else 1.0 / len(class_names)
        entry = metrics.get(key) or {}
        if _contains(entry.get("ci95"), chance):
            low, high = entry["ci95"]
            val_entry = (val_metrics or {}).get(key) or {}
            val_text = ""
            if val_entry.get("value") is not None:
                val_text = f"; validation {val_entry['value']:.3f}"
                if val_entry.get("ci95"):
                    val_text += f" (95% CI {val_entry['ci95'][0]:.3f}-{val_entry['ci95'][1]:.3f})"
            findings.append(_finding(
                "no_skill",
                f"The model is no better than chance: test {key.replace('_', ' ')} {entry['value']:.3f} "
                f"(95% CI {low:.3f}-{high:.3f}) contains the chance level {chance:.3f}{val_text}.",
                {"metric": key, "chance": chance, "test": entry.get("value"), "test_ci95": entry.get("ci95"),
                 "validation": val_entry.get("value"), "validation_ci95": val_entry.get("ci95")},
                NO_SKILL_FIX))
    small = {}
    for name in class_names:
        entry = metrics.get("per_class", {}).get(name) or {}
        support, interval = entry.get("support"), entry.get("auc_ci95")
        if support is not None and support < MIN_TEST_IMAGES_PER_CLASS:
            small[name] = {"test_images": int(support), "auc_ci95": interval,
                           "auc_interval_width": None if not interval else float(interval[1] - interval[0])}
    if small:
        parts = [f"{name} ({item['test_images']} images; AUC interval "
                 + (f"{item['auc_interval_width']:.2f} wide)" if item["auc_interval_width"] is not None
                    else "not measurable)") for name, item in small.items()]
        findings.append(_finding(
            "test_split_too_small",
            f"The test split is too small to measure {', '.join(small)}: fewer than {MIN_TEST_IMAGES_PER_CLASS} "
            f"images of {'that class' if len(small) == 1 else 'each'}: {'; '.join(parts)}.",
            {"min_images": MIN_TEST_IMAGES_PER_CLASS, "classes": small},
            "Use a larger test fraction (--test-fraction), k-fold cross-validation, or an external test set "
            "(keras-med evaluate) with more images of these classes."))
    return findings


def _contains(interval, value: float) -> bool:
    return bool(interval) and interval[0] <= value <= interval[1]


def _per_class_value(metrics: dict | None, name: str, key: str):
    return ((metrics or {}).get("per_class", {}).get(name) or {}).get(key)


def _prediction_findings(task, class_names, y_true, y_prob, thresholds) -> list[dict]:
    if task == "multilabel":
        spread = y_prob.std(axis=0)
        constant = [name for name, s in zip(class_names, spread) if s < 1e-3]
        if len(constant) == len(class_names):
            return [_finding("collapse", "The model gives every image the same probabilities.",
                             {"max_std_of_probability": float(spread.max())},
                             "Check the labels reach the model, lower the learning rate, and weight the loss "
                             "by label frequency.")]
        return []
    if task == "binary":
        threshold = 0.5 if thresholds is None else float(thresholds[0])
        y_pred = (y_prob >= threshold).astype(np.int64)
    else:
        y_pred = y_prob.argmax(axis=1)
    n_classes = len(class_names)
    predicted_share = np.bincount(y_pred, minlength=n_classes) / y_pred.size
    true_share = np.bincount(y_true, minlength=n_classes) / y_true.size
    top = int(np.argmax(predicted_share))
    recalls = {}
    for label in range(n_classes):
        if label != top and true_share[label] > 0:
            recalls[class_names[label]] = float(np.mean(y_pred[y_true == label] == label))
    others_dead = bool(recalls) and max(recalls.values()) <= COLLAPSE_RECALL
    concentrated = predicted_share[top] >= COLLAPSE_SHARE and true_share[top] < COLLAPSE_SHARE
    if not (others_dead or concentrated):
        return []
    return [_finding(
        "collapse",
        f"Predictions collapse onto '{class_names[top]}': {predicted_share[top]:.0%} of test predictions "
        f"(its true share is {true_share[top]:.0%}); the other classes are rarely recognised.",
        {"predicted_share": {class_names[top]: float(predicted_share[top])},
         "true_share": {class_names[top]: float(true_share[top])}, "recall_of_other_classes": recalls},
        "Use class weights or oversampling, monitor val_balanced_accuracy instead of accuracy, lower the "
        "learning rate, and check that labels are aligned with the images.")]


def _history_findings(task, class_names, history) -> list[dict]:
    findings: list[dict] = []
    loss = history["loss"].to_numpy(dtype=np.float64) if "loss" in history else None
    val_loss = history["val_loss"].to_numpy(dtype=np.float64) if "val_loss" in history else None
    if loss is None:
        return findings
    epochs = len(loss)

    bad = [int(i) + 1 for i in np.flatnonzero(~np.isfinite(loss))]
    if val_loss is not None:
        bad += [int(i) + 1 for i in np.flatnonzero(~np.isfinite(val_loss))]
    if bad:
        return [_finding("divergence", f"The loss became NaN or infinite at epoch {min(bad)}.",
                         {"first_bad_epoch": min(bad), "loss": _numbers(loss)},
                         "Lower the learning rate, clip gradients (--clipnorm 1.0), check the input images for "
                         "NaN and keep the output layer in float32 under mixed precision.")]
    if epochs >= 3 and loss[-1] > DIVERGENCE_FACTOR * loss.min() and loss[-1] > loss[0]:
        return [_finding("divergence",
                         f"The training loss rose from a minimum of {loss.min():.3g} to {loss[-1]:.3g}.",
                         {"min_loss": float(loss.min()), "final_loss": float(loss[-1]), "loss": _numbers(loss)},
                         "Lower the learning rate (by 10x) or add gradient clipping.")]

    if epochs >= 5:
        steps = np.diff(loss)
        flips = np.mean(np.sign(steps[1:]) != np.sign(steps[:-1]))
        swing = float(np.median(np.abs(steps)) / np.median(loss))
        if flips >= OSCILLATION_FLIPS and swing >= OSCILLATION_SWING:
            findings.append(_finding(
                "learning_rate_too_high",
                f"The training loss oscillates: {flips:.0%} of epoch-to-epoch changes flip direction, "
                f"typical swing {swing:.0%} of the loss.",
                {"sign_flip_share": float(flips), "median_relative_swing": swing, "loss": _numbers(loss)},
                "Lower the learning rate (by 3-10x) or use ReduceLROnPlateau with a shorter patience."))
    if epochs >= 3:
        change = float((loss[0] - loss[-1]) / max(abs(loss[0]), 1e-12))
        if abs(change) < FLAT_CHANGE:
            findings.append(_finding(
                "learning_rate_too_low",
                f"The training loss barely moved over {epochs} epochs ({change:+.1%}).",
                {"first_loss": float(loss[0]), "final_loss": float(loss[-1]), "relative_change": change},
                "Raise the learning rate (run the learning-rate finder), and check the layers are trainable."))

    if val_loss is not None and epochs >= 3:
        best = int(np.argmin(val_loss))
        rise = float((val_loss[-1] - val_loss[best]) / max(abs(val_loss[best]), 1e-12))
        gap_at_best = float(val_loss[best] - loss[best])
        gap_at_end = float(val_loss[-1] - loss[-1])
        if best < epochs - 1 and rise >= OVERFIT_RISE and loss[-1] < loss[best] and gap_at_end > gap_at_best:
            findings.append(_finding(
                "overfitting",
                f"Validation loss was lowest at epoch {best + 1} ({val_loss[best]:.3g}) and rose {rise:.0%} to "
                f"{val_loss[-1]:.3g} while the training loss kept falling; the gap widened from "
                f"{gap_at_best:.3g} to {gap_at_end:.3g}.",
                {"best_epoch": best + 1, "best_val_loss": float(val_loss[best]), "final_val_loss": float(val_loss[-1]),
                 "gap_at_best": gap_at_best, "gap_at_end": gap_at_end},
                "Keep EarlyStopping with restore_best_weights, add augmentation or dropout, use weight decay, "
                "or fine-tune fewer layers."))
        recent = val_loss[-3:]
        falling = float((recent[0] - recent[-1]) / max(abs(recent[0]), 1e-12))
        if best == epochs - 1 and falling >= STILL_FALLING and loss[-1] < loss[-3]:
            findings.append(_finding(
                "underfitting",
                f"Both losses were still falling at the last epoch (validation loss -{falling:.0%} over the last "
                "three epochs).",
                {"val_loss_last_epochs": _numbers(recent), "loss_last_epochs": _numbers(loss[-3:])},
                "Train for more epochs (or raise the EarlyStopping patience)."))

    if "balanced_accuracy" in history and task != "multilabel":
        final = float(history["balanced_accuracy"].iloc[-1])
        chance = 1.0 / len(class_names)
        if math.isfinite(final) and final < chance + CHANCE_MARGIN:
            findings.append(_finding(
                "underfitting",
                f"The training balanced accuracy ended at {final:.2f}, near chance ({chance:.2f}): the model has "
                "not learned the training data.",
                {"final_train_balanced_accuracy": final, "chance": chance},
                "Train longer, use a larger model or pretrained weights, raise the learning rate, and check labels."))
    return findings


def _numbers(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.ravel(values)]
