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
    missing = sorted(set(range(num_classes)) - set(present.tolist()))
    if missing:
        raise DataError(f"class index(es) {missing} have no example in these targets; "
                        "balanced weights need every class in the training split")
    weights = compute_class_weight("balanced", classes=present, y=indices)
    return {int(index): float(weight) for index, weight in zip(present, weights)}


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
