"""Classification metrics per task, point estimates from scikit-learn with 95% bootstrap intervals.

`compute_metrics` returns plain JSON-ready data: headline figures as `{"value", "ci95"}`, a
`per_class` table, confusion matrices and the figures at the given operating thresholds.

A class or label with no positive (or no negative) test image has no AUC, PR-AUC, recall or F1:
those are `None` (null in metrics.json, "undefined" in the report), never 0, its entry says why
(`undefined`), it is listed in `undefined_labels["test"]` with a warning, and the means are over
the other labels. Small multilabel sets hit this (a rare label in one patient of the training split).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)

import keras_med.evaluation.bootstrap as bs
from keras_med.evaluation.arrays import canonical_arrays, one_vs_rest

logger = logging.getLogger(__name__)

# Per-class figures that need positive test images; `None` when there are none.
NEEDS_POSITIVES = ("auc", "auc_ci95", "pr_auc", "precision", "recall", "f1", "sensitivity_at_threshold")

# Headline figures per task, in the order the report shows them.
HEADLINES = {
    "multiclass": ("accuracy", "balanced_accuracy", "macro_auc", "weighted_auc"),
    "binary": ("roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy"),
    "multilabel": ("mean_auc", "mean_pr_auc"),
}


def compute_metrics(task: str, y_true, y_prob, class_names, thresholds=None, groups=None,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of one set of predictions, with 95% bootstrap intervals on the headline figures.

    Args:
        task: "multiclass", "binary" or "multilabel".
        y_true: targets in the pipeline's encoding (see `keras_med.evaluation.arrays`).
        y_prob: model probabilities.
        class_names: class names in output order (binary: `[negative, positive]`).
        thresholds: one threshold per one-vs-rest column (C, or 1 for binary: the positive class);
            None uses 0.5. Multiclass accuracy uses the argmax; the thresholds give the per-class
            one-vs-rest sensitivity and specificity.
        groups: optional `(N,)` group ids for a group bootstrap.
        n_bootstrap: bootstrap resamples (0 skips the intervals).
        seed: bootstrap random seed.

    Returns:
        `{headline_name: {"value", "ci95"}, "per_class": {...}, "confusion_matrix": ..., ...}`.
    """
    class_names = list(class_names)
    y_true, y_prob = canonical_arrays(task, y_true, y_prob, class_names)
    indicator, scores, column_names = one_vs_rest(task, y_true, y_prob, class_names)
    if thresholds is None:
        thresholds = [0.5] * len(column_names)
    thresholds = [float(t) for t in thresholds]
    if len(thresholds) != len(column_names):
        raise ValueError(f"thresholds: expected {len(column_names)} values (one per "
                         f"{'positive class' if task == 'binary' else 'class'}), got {len(thresholds)}")
    decisions = (scores >= np.asarray(thresholds)[None, :]).astype(np.int64)

    with warnings.catch_warnings():
        # Classes absent from a small test set are reported as null instead of warned about.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        point = _point_estimates(task, y_true, y_prob, indicator, scores, decisions, class_names)
    per_column_auc = [_auc_or_none(indicator[:, k], scores[:, k]) for k in range(len(column_names))]

    result: dict = {"task": task, "class_names": class_names, "n_samples": int(y_true.shape[0])}
    intervals = {}
    column_intervals: dict[str, list] = {}
    if n_bootstrap > 0:
        draws = bs.bootstrap_statistics(
            lambda w: _weighted_statistics(task, w, y_true, y_prob, indicator, scores, decisions),
            y_true.shape[0], groups=groups, n_bootstrap=n_bootstrap, seed=seed)
        intervals = {key: bs.percentile_interval(values) for key, values in draws.items()}
        column_intervals = {name: intervals.get(f"auc/{k}") for k, name in enumerate(column_names)}
    for key in HEADLINES[task]:
        result[key] = {"value": _clean(point[key]), "ci95": intervals.get(key)}
    result["per_class"] = _per_class_table(task, y_true, y_prob, indicator, scores, decisions, class_names,
                                           column_names, per_column_auc, column_intervals, thresholds)
    result["undefined_labels"] = {"test": _mark_undefined(result["per_class"], indicator, column_names, task)}
    if task == "multiclass":
        result["confusion_matrix"] = confusion_matrix(y_true, y_prob.argmax(axis=1),
                                                      labels=range(len(class_names))).tolist()
    elif task == "binary":
        result["confusion_matrix"] = confusion_matrix(y_true, decisions[:, 0], labels=[0, 1]).tolist()
    result["thresholds"] = thresholds
    return result


def _point_estimates(task, y_true, y_prob, indicator, scores, decisions, class_names) -> dict:
    aucs = [_auc_or_none(indicator[:, k], scores[:, k]) for k in range(indicator.shape[1])]
    valid_aucs = [a for a in aucs if a is not None]
    if task == "multiclass":
        y_pred = y_prob.argmax(axis=1)
        support = indicator.sum(axis=0)
        weighted = [(a, s) for a, s in zip(aucs, support) if a is not None]
        return {
            "accuracy": accuracy_score(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "macro_auc": np.mean(valid_aucs) if valid_aucs else None,
            "weighted_auc": (sum(a * s for a, s in weighted) / sum(s for _, s in weighted)) if weighted else None,
        }
    if task == "binary":
        rates = bs.weighted_confusion_rates(np.ones((1, y_true.size)), y_true, decisions[:, 0])
        return {
            "roc_auc": aucs[0],
            "pr_auc": average_precision_score(y_true, y_prob) if y_true.max() > 0 else None,
            **{key: values[0] for key, values in rates.items()},
            "accuracy": accuracy_score(y_true, decisions[:, 0]),
            "balanced_accuracy": balanced_accuracy_score(y_true, decisions[:, 0]),
        }
    pr_aucs = [average_precision_score(indicator[:, k], scores[:, k])
               for k in range(indicator.shape[1]) if indicator[:, k].max() > 0]
    return {"mean_auc": np.mean(valid_aucs) if valid_aucs else None,
            "mean_pr_auc": np.mean(pr_aucs) if pr_aucs else None}


def _weighted_statistics(task, weights, y_true, y_prob, indicator, scores, decisions) -> dict[str, np.ndarray]:
    aucs = np.stack([bs.weighted_roc_auc(weights, indicator[:, k], scores[:, k])
                     for k in range(indicator.shape[1])], axis=1)
    stats = {f"auc/{k}": aucs[:, k] for k in range(aucs.shape[1])}
    if task == "multiclass":
        y_pred = y_prob.argmax(axis=1)
        support = weights @ indicator.astype(np.float64)
        present = np.isfinite(aucs)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats["accuracy"] = bs.weighted_mean(weights, y_true == y_pred)
            stats["balanced_accuracy"] = bs.weighted_balanced_accuracy(weights, y_true, y_pred, indicator.shape[1])
            stats["macro_auc"] = np.where(present, aucs, 0).sum(axis=1) / present.sum(axis=1)
            stats["weighted_auc"] = (np.where(present, aucs * support, 0).sum(axis=1)
                                     / np.where(present, support, 0).sum(axis=1))
    elif task == "binary":
        stats.update(bs.weighted_confusion_rates(weights, y_true, decisions[:, 0]))
        stats["roc_auc"] = aucs[:, 0]
        stats["pr_auc"] = bs.weighted_average_precision(weights, y_true, y_prob)
        stats["accuracy"] = bs.weighted_mean(weights, y_true == decisions[:, 0])
        stats["balanced_accuracy"] = bs.weighted_balanced_accuracy(weights, y_true, decisions[:, 0], 2)
    else:
        pr_aucs = np.stack([bs.weighted_average_precision(weights, indicator[:, k], scores[:, k])
                            for k in range(indicator.shape[1])], axis=1)
        with warnings.catch_warnings():
            # a resample may hold no positive of any label: its mean is NaN, dropped from the interval
            warnings.simplefilter("ignore", RuntimeWarning)
            stats["mean_auc"] = np.nanmean(np.where(np.isfinite(aucs), aucs, np.nan), axis=1)
            stats["mean_pr_auc"] = np.nanmean(pr_aucs, axis=1)
    return stats


def _per_class_table(task, y_true, y_prob, indicator, scores, decisions, class_names, column_names,
                     aucs, auc_intervals, thresholds) -> dict:
    table: dict[str, dict] = {}
    if task in ("multiclass", "binary"):
        y_pred = y_prob.argmax(axis=1) if task == "multiclass" else decisions[:, 0]
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=range(len(class_names)), zero_division=np.nan)
        for index, name in enumerate(class_names):
            table[name] = {"precision": _clean(precision[index]), "recall": _clean(recall[index]),
                           "f1": _clean(f1[index]), "support": int(support[index])}
    for k, name in enumerate(column_names):
        entry = table.setdefault(name, {})
        positives, flagged = indicator[:, k], decisions[:, k]
        matrix = confusion_matrix(positives, flagged, labels=[0, 1])
        (true_neg, false_pos), (false_neg, true_pos) = matrix
        entry.update({
            "auc": _clean(aucs[k]),
            "auc_ci95": auc_intervals.get(name),
            "pr_auc": _clean(average_precision_score(positives, scores[:, k])) if positives.max() > 0 else None,
            "threshold": thresholds[k],
            "sensitivity_at_threshold": _ratio(true_pos, true_pos + false_neg),
            "specificity_at_threshold": _ratio(true_neg, true_neg + false_pos),
        })
        if task == "multilabel":
            entry.update({"precision": _ratio(true_pos, true_pos + false_pos),
                          "recall": _ratio(true_pos, true_pos + false_neg),
                          "f1": _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
                          "support": int(positives.sum()), "confusion_matrix": matrix.tolist()})
    if task == "binary":
        table[class_names[0]].update({key: table[class_names[1]][key] for key in ("auc", "auc_ci95", "threshold")})
    return table


def _mark_undefined(per_class: dict, indicator: np.ndarray, column_names: list[str], task: str) -> list[str]:
    """Set the figures a class cannot have on this test set to None, say why, warn; return the names."""
    undefined = []
    for k, name in enumerate(column_names):
        positives = int(indicator[:, k].sum())
        if 0 < positives < indicator.shape[0]:
            continue
        entry = per_class[name]
        if positives == 0:
            entry["undefined"] = "no positive test image"
            entry.update(dict.fromkeys(NEEDS_POSITIVES))
        else:
            entry["undefined"] = "no negative test image"
            entry.update({"auc": None, "auc_ci95": None, "specificity_at_threshold": None})
        undefined.append(name)
    if undefined:
        logger.warning("%d of %d %s cannot be measured on these %d test images (%s): their figures that need "
                       "them are undefined (null in metrics.json, 'undefined' in the report) and left out of the "
                       "means", len(undefined), len(column_names), "labels" if task == "multilabel" else "classes",
                       indicator.shape[0], ", ".join(f"{name}: {per_class[name]['undefined']}" for name in undefined))
    return undefined


def _auc_or_none(positives: np.ndarray, score: np.ndarray) -> float | None:
    if positives.min() == positives.max():
        return None
    return float(roc_auc_score(positives, score))


def _ratio(numerator, denominator) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def _clean(value) -> float | None:
    """JSON-friendly float: NaN (undefined for this data) becomes None."""
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value
