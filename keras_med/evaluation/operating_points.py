"""Operating points: a decision threshold per class (one-vs-rest) chosen on the validation split.

The thresholds are chosen once on validation and applied unchanged to test, so the test figures
at the threshold are an honest estimate. They are returned to the caller so the export can store
them in the served model.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

logger = logging.getLogger(__name__)

METHODS = ("youden", "f1", "sensitivity", "specificity")
DEFAULT_THRESHOLD = 0.5


def choose_threshold(y_true: np.ndarray, score: np.ndarray, method: str = "youden", target: float = 0.9) -> float:
    """Threshold on `score` for one 0/1 target column; a sample is positive when `score >= threshold`.

    Args:
        y_true: `(N,)` 0/1 targets.
        score: `(N,)` probabilities of the positive class.
        method: "youden" (max sensitivity + specificity - 1), "f1" (max F1), "sensitivity" (the
            highest threshold whose sensitivity reaches `target`, so specificity is as high as it
            can be), "specificity" (the lowest threshold whose specificity reaches `target`).
        target: the sensitivity or specificity to reach, in (0, 1].

    Returns:
        The threshold, or 0.5 when the column has no positives or no negatives (logged).
    """
    if method not in METHODS:
        raise ValueError(f"operating_point: expected one of {list(METHODS)}, got {method!r}")
    if method in ("sensitivity", "specificity") and not 0.0 < target <= 1.0:
        raise ValueError(f"target: expected a {method} in (0, 1], got {target!r}")
    y_true = np.asarray(y_true).astype(int)
    if y_true.min() == y_true.max():
        logger.warning("A class has %s in the validation split; using threshold %.2f for it",
                       "no positives" if y_true.max() == 0 else "no negatives", DEFAULT_THRESHOLD)
        return DEFAULT_THRESHOLD
    if method == "f1":
        precision, recall, thresholds = precision_recall_curve(y_true, score)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        return float(thresholds[int(np.argmax(f1[:-1]))])
    false_pos_rate, true_pos_rate, thresholds = roc_curve(y_true, score, drop_intermediate=False)
    # roc_curve starts with an infinite threshold (nothing flagged); 1.0 behaves the same on probabilities.
    thresholds = np.minimum(thresholds, 1.0)
    if method == "youden":
        index = int(np.argmax(true_pos_rate - false_pos_rate))
    elif method == "sensitivity":
        index = int(np.flatnonzero(true_pos_rate >= target)[0])
    else:
        index = int(np.flatnonzero(1.0 - false_pos_rate >= target)[-1])
    return float(thresholds[index])


def choose_thresholds(indicator: np.ndarray, scores: np.ndarray, method: str = "youden",
                      target: float = 0.9) -> list[float]:
    """One threshold per column of a one-vs-rest indicator `(N, K)` and score `(N, K)` matrix."""
    return [choose_threshold(indicator[:, k], scores[:, k], method, target) for k in range(indicator.shape[1])]
