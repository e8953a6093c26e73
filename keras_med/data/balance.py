"""Class imbalance: balanced class weights and the sampling strata used for oversampling."""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from keras_med.data.errors import DataError


def single_label_indices(targets: np.ndarray) -> np.ndarray:
    """Class index per image from one-hot `(N, C)`, binary `(N, 1)` or integer `(N,)` targets."""
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return targets.astype(np.int64)
    if targets.ndim == 2 and targets.shape[1] == 1:
        return np.rint(targets[:, 0]).astype(np.int64)
    if targets.ndim == 2 and np.allclose(targets.sum(axis=1), 1.0):
        return targets.argmax(axis=1)
    raise DataError(f"expected one-hot (N, C), binary (N, 1) or integer (N,) targets, got shape {targets.shape} "
                    "with rows that do not sum to 1 (multilabel targets have no single class)")


def _require_every_class(counts: np.ndarray, what: str) -> None:
    missing = np.flatnonzero(np.asarray(counts) == 0).tolist()
    if missing:
        raise DataError(f"class index(es) {missing} have no example in these targets; "
                        f"{what} need every class in the training split")


def balanced_class_weights(targets: np.ndarray) -> dict[int, float]:
    """`{class_index: weight}` inversely proportional to class frequency (sklearn's "balanced").

    Pass the training split's targets; the result goes to `model.fit(class_weight=...)`.

    Args:
        targets: one-hot `(N, C)`, binary `(N, 1)` or integer `(N,)` targets. Every class must be
            present: a class absent from training cannot be weighted, so that is an error.
    """
    indices = single_label_indices(targets)
    targets = np.asarray(targets)
    num_classes = targets.shape[1] if targets.ndim == 2 and targets.shape[1] > 1 else int(max(indices.max(), 1)) + 1
    present = np.unique(indices)
    _require_every_class(np.bincount(indices, minlength=num_classes), "balanced weights")
    weights = compute_class_weight("balanced", classes=present, y=indices)
    return {int(index): float(weight) for index, weight in zip(present, weights)}


def class_priors(targets: np.ndarray) -> tuple[float, ...]:
    """Each class's share of `targets` (the training split's), for the logit-adjusted loss.

    Args:
        targets: one-hot `(N, C)` targets of a multi-class task. Every class must be present: a
            class with prior 0 would get an infinite adjustment, so that is an error.
    """
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[1] < 2:
        raise DataError(f"class priors need one-hot (N, C) targets with C >= 2, got shape {targets.shape}")
    counts = np.bincount(single_label_indices(targets), minlength=targets.shape[1])
    _require_every_class(counts, "class priors")
    return tuple(float(count) for count in counts / counts.sum())


def sampling_strata(targets: np.ndarray) -> np.ndarray:
    """One stratum per image for oversampling: its class, or for multi-hot its rarest positive label.

    Multi-hot rows with no positive label get their own stratum (index C).
    """
    targets = np.asarray(targets)
    try:
        return single_label_indices(targets)
    except DataError:
        counts = targets.sum(axis=0)
        masked = np.where(targets > 0, counts[None, :], np.inf)
        return np.where(targets.sum(axis=1) > 0, masked.argmin(axis=1), targets.shape[1]).astype(np.int64)


def balanced_label_weights(targets: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-label `(positive_weights, negative_weights)` for multi-hot targets, balanced per label.

    For label j with P positives and N negatives among the training rows: w+ = (P + N) / (2 P),
    w- = (P + N) / (2 N), so positives and negatives of each label carry equal total weight and
    the mean weight is 1. The ratio w+ / w- = N / P is CheXNet's weighting (Rajpurkar et al. 2017,
    which writes it as w+ = N / (P + N), w- = P / (P + N)); scikit-learn's `compute_class_weight`
    is the single-label form of the same "balanced" rule, applied here to each label.

    Args:
        targets: multi-hot `(N, L)` training targets. A label with no positive or no negative row
            cannot be balanced, so that is an error naming it.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2:
        raise DataError(f"expected multi-hot (N, L) targets, got shape {targets.shape}")
    positives = targets.sum(axis=0)
    negatives = len(targets) - positives
    empty = [int(j) for j in np.flatnonzero((positives == 0) | (negatives == 0))]
    if empty:
        raise DataError(f"label index(es) {empty} are positive in none or in all training rows; "
                        "balanced label weights need both (turn class_weights off, or add data)")
    total = float(len(targets))
    return ([float(w) for w in total / (2 * positives)], [float(w) for w in total / (2 * negatives)])
