"""Split conformal prediction sets: the classes a model cannot rule out, at a stated coverage.

Calibrated on the validation split (the test split stays untouched for measuring): with the
score "one minus the probability of the true class" (LAC, Sadinle et al. 2019), the set of an
image is every class whose probability reaches `1 - q`, where `q` is the
`ceil((n + 1)(1 - alpha)) / n` empirical quantile of the calibration scores. For exchangeable
images the set holds the true class with probability at least `1 - alpha`. Mondrian
(class-conditional) calibration computes one `q` per true class, so that rare classes get their own
guarantee instead of hiding under the marginal one (with HAM10000's imbalance, `nv` alone is 67%).

Why these lines are ours and not MAPIE's: MAPIE 1.6.0 installs cleanly here, but it wraps a
scikit-learn estimator (we hold a Keras model's probabilities), and the SavedModel needs the
calibrated threshold itself as a number, which MAPIE keeps inside its fitted conformity-score
object rather than returning it. The method is one quantile per class, written out below.

Multi-label models have no prediction set: each label's thresholded decision already is the
per-label answer (docs/serving.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_med.evaluation.bootstrap import bootstrap_statistics, percentile_interval

DEFAULT_COVERAGE = 0.9
CONFORMAL_MODES = ("marginal", "mondrian")
# What a served set compares with its thresholds (keras_med.export.guards): "model", the model's own
# probabilities on the original image (an ensemble's first member's, before averaging, flips and
# the decision rule), or "answer", the served probabilities themselves (an ensemble whose members
# share one validation split calibrates its sets on their averaged, served answer).
SET_INPUTS = ("model", "answer")


@dataclass
class ConformalSets:
    """Calibrated probability thresholds per class: class k is in the set when `p_k >= thresholds[k]`.

    Args:
        coverage: The target coverage `1 - alpha`.
        mode: `"marginal"` (one threshold for every class) or `"mondrian"` (one per class).
        thresholds: Probability threshold per class, `(K,)`.
        n_calibration: Calibration images used (per class for Mondrian: the smallest class's count
            bounds how exact its guarantee is).
        applies_to: Which probabilities the served set compares with the thresholds: "model" or
            "answer" (`SET_INPUTS`); they must be the ones the thresholds were calibrated on.
        mean_set_size: The average set size on the calibration images (the reference `keras-med
            monitor` compares served sets with), or None when unknown.
        measured: What the sets achieved on the test split, `{"coverage", "per_class": {name:
            coverage}}`, so that the served model and its page state per-class coverage; or None.

    Example:
    >>> sets = calibrate_conformal(val_probabilities, val_labels, coverage=0.9)
    >>> sets.predict(test_probabilities)   # (N, K) booleans
    """

    coverage: float
    mode: str
    thresholds: np.ndarray
    n_calibration: int
    applies_to: str = "model"
    mean_set_size: float | None = None
    measured: dict | None = None

    def predict(self, probabilities) -> np.ndarray:
        """The prediction set per row: bool `(N, K)`."""
        return np.asarray(probabilities, np.float64) >= self.thresholds[None, :]

    def summary(self) -> dict:
        return {"coverage": float(self.coverage), "mode": self.mode,
                "thresholds": [float(value) for value in self.thresholds], "n_calibration": int(self.n_calibration),
                "applies_to": self.applies_to,
                "mean_set_size": None if self.mean_set_size is None else float(self.mean_set_size),
                "measured": self.measured}


def conformal_quantile(scores, coverage: float) -> float:
    """The split-conformal quantile of calibration scores: the `ceil((n + 1) * coverage)`-th smallest.

    Returns +inf (every class in the set) when there are too few scores for the coverage asked.
    """
    scores = np.sort(np.asarray(scores, np.float64))
    rank = math.ceil((scores.size + 1) * coverage)
    return float(scores[rank - 1]) if 0 < rank <= scores.size else math.inf


def calibrate_conformal(probabilities, labels, coverage: float = DEFAULT_COVERAGE,
                        mode: str = "marginal", applies_to: str = "model") -> ConformalSets:
    """Calibrate prediction-set thresholds on held-out (validation) probabilities.

    Args:
        probabilities: `(N, K)` probabilities as served (binary: `[1 - p, p]`).
        labels: True class index per row `(N,)`.
        coverage: Target share of sets that hold the true class, in (0, 1).
        mode: `"marginal"` or `"mondrian"` (class-conditional).
        applies_to: "model" or "answer": which served probabilities these are (`SET_INPUTS`).

    Returns:
        The calibrated `ConformalSets`.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    if mode not in CONFORMAL_MODES:
        raise ValueError(f"conformal mode must be one of {list(CONFORMAL_MODES)}, got {mode!r}")
    if applies_to not in SET_INPUTS:
        raise ValueError(f"applies_to must be one of {list(SET_INPUTS)}, got {applies_to!r}")
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    scores = 1.0 - probabilities[np.arange(len(labels)), labels]
    n_classes = probabilities.shape[1]
    if mode == "marginal":
        quantiles = np.full(n_classes, conformal_quantile(scores, coverage))
    else:
        quantiles = np.array([conformal_quantile(scores[labels == k], coverage) for k in range(n_classes)])
    # A threshold at or below 0 puts the class in every set (too few calibration images for it).
    thresholds = np.clip(1.0 - quantiles, 0.0, 1.0)
    mean_set_size = float(np.mean(np.sum(probabilities >= thresholds[None, :], axis=1))) if len(labels) else None
    return ConformalSets(coverage=coverage, mode=mode, thresholds=thresholds, n_calibration=len(labels),
                         applies_to=applies_to, mean_set_size=mean_set_size)


def evaluate_sets(sets: ConformalSets, probabilities, labels, class_names, groups=None,
                  n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Empirical coverage (with a bootstrap interval) and set sizes on a test split.

    Args:
        sets: Calibrated sets.
        probabilities: Test probabilities `(N, K)` as served.
        labels: True class index per test row.
        class_names: Names in output order.
        groups: Optional group id per row (lesion, patient): resamples whole groups.
        n_bootstrap: Bootstrap resamples for the coverage interval.
        seed: Bootstrap seed.

    Returns:
        `{"coverage": {"value", "ci95"}, "target", "mode", "average_set_size", "empty_set_rate",
        "per_class": {name: {"coverage", "average_set_size", "n"}}, "thresholds"}`.
    """
    labels = np.asarray(labels, np.int64)
    members = sets.predict(probabilities)
    covered = members[np.arange(len(labels)), labels].astype(np.float64)
    sizes = members.sum(axis=1).astype(np.float64)
    interval = _bootstrap_mean_interval(covered, groups, n_bootstrap, seed)
    per_class = {}
    for index, name in enumerate(class_names):
        rows = labels == index
        per_class[name] = {"coverage": float(covered[rows].mean()) if rows.any() else None,
                           "average_set_size": float(sizes[rows].mean()) if rows.any() else None,
                           "n": int(rows.sum()), "threshold": float(sets.thresholds[index])}
    return {"coverage": {"value": float(covered.mean()), "ci95": interval}, "target": float(sets.coverage),
            "mode": sets.mode, "average_set_size": float(sizes.mean()), "empty_set_rate": float(np.mean(sizes == 0)),
            "per_class": per_class, "thresholds": [float(value) for value in sets.thresholds],
            "n_calibration": int(sets.n_calibration)}


def _bootstrap_mean_interval(values: np.ndarray, groups, n_bootstrap: int, seed: int) -> list[float] | None:
    """95% percentile interval of the mean of `values`, resampling rows or whole groups."""
    if n_bootstrap <= 0 or values.size == 0:
        return None
    draws = bootstrap_statistics(lambda weights: {"mean": weights @ values / np.maximum(weights.sum(axis=1), 1e-12)},
                                 values.size, groups=groups, n_bootstrap=n_bootstrap, seed=seed)
    return percentile_interval(draws["mean"])
