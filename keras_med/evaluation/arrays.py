"""Validate model outputs and targets and bring them to one canonical form per task.

Every evaluation function works on the canonical form, so the checks and the encodings
the pipeline may hand over (one-hot or indices, `(N,)` or `(N, 1)`) live in one place.

Canonical forms:
- multiclass: `y_true` int `(N,)` class indices, `y_prob` float `(N, C)`.
- binary: `y_true` int `(N,)` 0/1, `y_prob` float `(N,)` probability of the positive class.
- multilabel: `y_true` int `(N, C)` multi-hot, `y_prob` float `(N, C)`.
"""

from __future__ import annotations

import numpy as np

from keras_med.tasks import check_task


def canonical_arrays(task: str, y_true, y_prob, class_names, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check `y_true` and `y_prob` against the task and class names and return the canonical form.

    Args:
        task: "multiclass", "binary" or "multilabel".
        y_true: targets in the pipeline's encoding (indices or one-hot for multiclass; 0/1 `(N,)`
            or `(N, 1)` for binary; multi-hot `(N, C)` for multilabel).
        y_prob: model outputs (softmax `(N, C)`, sigmoid `(N, 1)`, sigmoid `(N, C)`).
        class_names: the class names, in output order (binary: `[negative, positive]`).
        name: suffix used in error messages (e.g. "_test"), so the caller sees which argument failed.

    Returns:
        `(y_true, y_prob)` in the canonical form described in the module docstring.
    """
    check_task(task)
    class_names = list(class_names)
    n_classes = len(class_names)
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.shape[0] != y_prob.shape[0]:
        raise ValueError(f"y_true{name} and y_prob{name}: expected the same number of rows, "
                         f"got {y_true.shape[0]} and {y_prob.shape[0]}")
    if y_true.shape[0] == 0:
        raise ValueError(f"y_true{name}: expected at least one sample, got none")
    if not np.all(np.isfinite(y_prob)) or y_prob.min() < 0 or y_prob.max() > 1:
        raise ValueError(f"y_prob{name}: expected finite probabilities in [0, 1]")

    if task == "multiclass":
        if n_classes < 2:
            raise ValueError(f"class_names: expected at least 2 names for multiclass, got {class_names}")
        if y_prob.ndim != 2 or y_prob.shape[1] != n_classes:
            raise ValueError(f"y_prob{name}: expected shape (N, {n_classes}) for {n_classes} classes, "
                             f"got {y_prob.shape}")
        if y_true.ndim == 2:
            if y_true.shape[1] != n_classes:
                raise ValueError(f"y_true{name}: expected one-hot (N, {n_classes}) or indices (N,), "
                                 f"got {y_true.shape}")
            y_true = np.argmax(y_true, axis=1)
        y_true = _as_int(y_true, f"y_true{name}")
        if y_true.ndim != 1 or y_true.min() < 0 or y_true.max() >= n_classes:
            raise ValueError(f"y_true{name}: expected class indices in 0..{n_classes - 1}")
        return y_true, y_prob

    if task == "binary":
        if n_classes != 2:
            raise ValueError(f"class_names: expected [negative, positive] for binary, got {class_names}")
        y_true = _as_int(_squeeze_column(y_true, f"y_true{name}"), f"y_true{name}")
        if y_prob.ndim == 2 and y_prob.shape[1] == 2:
            y_prob = y_prob[:, 1]
        y_prob = _squeeze_column(y_prob, f"y_prob{name}")
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError(f"y_true{name}: expected 0/1 targets for binary")
        return y_true, y_prob

    if y_true.ndim != 2 or y_true.shape[1] != n_classes or y_prob.shape != y_true.shape:
        raise ValueError(f"y_true{name} and y_prob{name}: expected multi-hot and probabilities of shape "
                         f"(N, {n_classes}), got {y_true.shape} and {y_prob.shape}")
    y_true = _as_int(y_true, f"y_true{name}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true{name}: expected 0/1 multi-hot targets for multilabel")
    return y_true, y_prob


def one_vs_rest(task: str, y_true: np.ndarray, y_prob: np.ndarray, class_names) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Indicator matrix, score matrix and names of the columns that get a ROC curve and a threshold.

    Multiclass and multilabel give one column per class; binary gives one column, the positive class.
    Takes canonical arrays (see `canonical_arrays`).
    """
    class_names = list(class_names)
    if task == "multiclass":
        indicator = np.eye(len(class_names), dtype=np.int64)[y_true]
        return indicator, y_prob, class_names
    if task == "binary":
        return y_true[:, None], y_prob[:, None], [class_names[1]]
    return y_true, y_prob, class_names


def _squeeze_column(values: np.ndarray, name: str) -> np.ndarray:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name}: expected shape (N,) or (N, 1) for binary, got {values.shape}")
    return values


def _as_int(values: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(values.astype(np.float64))) or not np.all(np.mod(values, 1) == 0):
        raise ValueError(f"{name}: expected integer-valued targets")
    return values.astype(np.int64)
