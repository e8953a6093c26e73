"""Bootstrap confidence intervals, resampling by group (lesion, patient) when groups are given.

A resample is represented as a row of sample weights (how many times each sample was drawn),
so every statistic is computed for all resamples at once as weighted sums over a `(B, N)`
matrix. scikit-learn's metrics accept one `sample_weight` vector per call, and 1000 calls per
metric per class made a 1500-image test set take minutes; the weighted statistics below give
the same values as scikit-learn on unit weights (tests check this) in a few vectorised passes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Resamples are processed in chunks so the (B, N) weight matrix stays near 40 MB in float64.
_MAX_WEIGHT_CELLS = 5_000_000


def resample_weights(group_index: np.ndarray, n_groups: int, n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Draw `n_resamples` bootstrap resamples of groups and return per-sample weights `(B, N)`.

    Args:
        group_index: `(N,)` group number 0..n_groups-1 of every sample.
        n_groups: number of distinct groups.
        n_resamples: number of resamples (rows of the result).
        rng: numpy random generator.
    """
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    offsets = np.arange(n_resamples)[:, None] * n_groups
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_groups)
    return counts.reshape(n_resamples, n_groups)[:, group_index].astype(np.float64)


def bootstrap_statistics(statistics: Callable[[np.ndarray], dict[str, np.ndarray]], n_samples: int,
                         groups=None, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Evaluate `statistics` on `n_bootstrap` resamples and return each statistic's `(B,)` values.

    Args:
        statistics: function of a weight matrix `(b, N)` returning `{name: (b,) values}`.
        n_samples: N, the number of samples.
        groups: optional `(N,)` group ids; whole groups are resampled so correlated images of one
            lesion or patient do not make the interval too narrow.
        n_bootstrap: number of resamples.
        seed: random seed.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap: expected a positive number of resamples, got {n_bootstrap}")
    if groups is None:
        group_index, n_groups = np.arange(n_samples), n_samples
    else:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups: expected shape ({n_samples},) aligned with the samples, got {groups.shape}")
        _, group_index = np.unique(groups, return_inverse=True)
        n_groups = int(group_index.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_WEIGHT_CELLS // max(n_samples, 1))
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_bootstrap, chunk):
        weights = resample_weights(group_index, n_groups, min(chunk, n_bootstrap - start), rng)
        for key, values in statistics(weights).items():
            collected.setdefault(key, []).append(np.asarray(values, dtype=np.float64))
    return {key: np.concatenate(parts) for key, parts in collected.items()}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of bootstrap values, ignoring resamples where the statistic is undefined."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


# --- weighted statistics: all take weights (B, N) and return (B,) -----------------------------

def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted mean of `values` `(N,)` (e.g. correct predictions: accuracy)."""
    return _safe_ratio(weights @ values.astype(np.float64), weights.sum(axis=1))


def weighted_balanced_accuracy(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                               n_classes: int) -> np.ndarray:
    """Mean recall over the classes present in each resample (scikit-learn's balanced accuracy)."""
    correct = (y_true == y_pred).astype(np.float64)
    recalls = []
    for label in range(n_classes):
        member = (y_true == label).astype(np.float64)
        recalls.append(_safe_ratio(weights @ (member * correct), weights @ member))
    with np.errstate(invalid="ignore"):
        stacked = np.stack(recalls, axis=1)
        present = np.isfinite(stacked)
        return _safe_ratio(np.where(present, stacked, 0.0).sum(axis=1), present.sum(axis=1).astype(np.float64))


def weighted_confusion_rates(weights: np.ndarray, y_true: np.ndarray, decision: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV and F1 of a 0/1 decision against 0/1 targets."""
    positive, negative = y_true.astype(np.float64), 1.0 - y_true
    flagged, cleared = decision.astype(np.float64), 1.0 - decision
    tp, fn = weights @ (positive * flagged), weights @ (positive * cleared)
    fp, tn = weights @ (negative * flagged), weights @ (negative * cleared)
    return {
        "sensitivity": _safe_ratio(tp, tp + fn),
        "specificity": _safe_ratio(tn, tn + fp),
        "ppv": _safe_ratio(tp, tp + fp),
        "npv": _safe_ratio(tn, tn + fn),
        "f1": _safe_ratio(2 * tp, 2 * tp + fp + fn),
    }


def weighted_roc_auc(weights: np.ndarray, y_true: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC as the weighted Mann-Whitney statistic (ties count one half), like `roc_auc_score`."""
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    new_value = np.r_[True, sorted_score[1:] != sorted_score[:-1]]
    tie_group = np.cumsum(new_value) - 1
    group_end = np.r_[np.flatnonzero(new_value)[1:], sorted_score.size] - 1
    positive = y_true[order].astype(np.float64)
    pos_weights = weights[:, order] * positive
    neg_weights = weights[:, order] * (1.0 - positive)
    negatives_through_group = np.cumsum(neg_weights, axis=1)[:, group_end]
    negatives_below = np.concatenate([np.zeros((weights.shape[0], 1)), negatives_through_group[:, :-1]], axis=1)
    negatives_tied = negatives_through_group - negatives_below
    credit = negatives_below[:, tie_group] + 0.5 * negatives_tied[:, tie_group]
    return _safe_ratio((pos_weights * credit).sum(axis=1), pos_weights.sum(axis=1) * neg_weights.sum(axis=1))


def weighted_average_precision(weights: np.ndarray, y_true: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision (area under the PR curve, step-wise), like `average_precision_score`."""
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    threshold_end = np.r_[np.flatnonzero(sorted_score[1:] != sorted_score[:-1]), sorted_score.size - 1]
    positive = y_true[order].astype(np.float64)
    true_pos = np.cumsum(weights[:, order] * positive, axis=1)[:, threshold_end]
    false_pos = np.cumsum(weights[:, order] * (1.0 - positive), axis=1)[:, threshold_end]
    total_pos = true_pos[:, -1:]
    precision = np.nan_to_num(_safe_ratio(true_pos, true_pos + false_pos), nan=1.0)
    recall = np.nan_to_num(_safe_ratio(true_pos, np.broadcast_to(total_pos, true_pos.shape)), nan=0.0)
    recall_step = np.diff(np.concatenate([np.zeros((weights.shape[0], 1)), recall], axis=1), axis=1)
    average_precision = (recall_step * precision).sum(axis=1)
    return np.where(total_pos[:, 0] > 0, average_precision, np.nan)
