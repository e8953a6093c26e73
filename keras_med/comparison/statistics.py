"""Paired statistics for two (groups of) models scored on the same test images.

Every figure is computed for model A and model B on the *same* bootstrap resample, so the
interval of the difference B - A is narrower than the overlap of two separate intervals suggests
(the images both models find hard cancel out). Resamples draw whole groups (lesions, patients),
as `keras_med.evaluation.bootstrap` does for one model, so correlated images of one lesion do not
make the interval too narrow.

Metrics, all from canonical arrays (`keras_med.evaluation.arrays`) and the decisions the runs' own
reports use (argmax after the decision rule; thresholds for binary and multilabel):
- `balanced_accuracy`: mean recall over classes (binary: (sensitivity + specificity) / 2;
  multilabel: the mean over labels of that).
- `macro_auc`: mean one-vs-rest ROC AUC (binary: the ROC AUC of the positive class).
- `recall/<class>`: recall of each class (multilabel: of each label's positives).
- `ece`: expected calibration error (15 equal-width bins, as `keras_med.evaluation.calibration`);
  lower is better.

McNemar's test and DeLong's test take the images as independent (they know no groups); the
bootstrap intervals are the ones that respect the grouping.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as scipy_stats

from keras_med.evaluation import bootstrap as bs

ECE_BINS = 15
# Below this many discordant pairs McNemar's chi-square approximation is poor; the exact binomial is used.
MCNEMAR_EXACT_BELOW = 25
# Metrics where a smaller value is better.
LOWER_IS_BETTER = frozenset({"ece"})
# Resamples are scored in chunks so each (B, N) weight matrix stays near 40 MB in float64.
_MAX_WEIGHT_CELLS = 5_000_000


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (a class absent from a resample)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


@dataclass
class Scored:
    """One model's canonical test predictions and decisions, aligned with the other models'.

    Attributes:
        task: "multiclass", "binary" or "multilabel".
        class_names: class names in output order (binary: `[negative, positive]`).
        y_true: canonical targets (`(N,)` indices or 0/1; multilabel `(N, C)`).
        y_prob: canonical probabilities, after the run's decision rule (`(N, C)`; binary `(N,)`).
        decided: the decisions: `(N,)` class index (multiclass, binary 0/1) or `(N, C)` 0/1 (multilabel).
    """

    task: str
    class_names: list[str]
    y_true: np.ndarray
    y_prob: np.ndarray
    decided: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """`(N,)` bool: the decision is right (multilabel: on every label)."""
        right = self.decided == self.y_true
        return right.all(axis=1) if right.ndim == 2 else right

    def score_columns(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One-vs-rest `(indicator (N, K), scores (N, K), column names)`; binary: the positive class only."""
        if self.task == "multiclass":
            return np.eye(len(self.class_names), dtype=np.int64)[self.y_true], self.y_prob, list(self.class_names)
        if self.task == "binary":
            return self.y_true[:, None], self.y_prob[:, None], [self.class_names[1]]
        return self.y_true, self.y_prob, list(self.class_names)


def metric_names(scored: Scored) -> list[str]:
    """The names `weighted_metrics` returns, in the order reports show them."""
    return ["balanced_accuracy", "macro_auc", "ece"] + [f"recall/{name}" for name in scored.class_names]


def weighted_metrics(weights: np.ndarray, scored: Scored) -> dict[str, np.ndarray]:
    """Every compared metric of `scored` under each row of bootstrap weights `(B, N)`, as `(B,)` arrays.

    Unit weights give the plain figures (tests check them against scikit-learn).
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    result: dict[str, np.ndarray] = {}
    indicator, scores, _ = scored.score_columns()
    aucs = np.stack([bs.weighted_roc_auc(weights, indicator[:, k], scores[:, k])
                     for k in range(indicator.shape[1])], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = np.isfinite(aucs)
        result["macro_auc"] = np.where(present.any(axis=1),
                                       np.where(present, aucs, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1),
                                       np.nan)
    if scored.task in ("multiclass", "binary"):
        n_classes = len(scored.class_names)
        result["balanced_accuracy"] = bs.weighted_balanced_accuracy(weights, scored.y_true, scored.decided, n_classes)
        right = (scored.decided == scored.y_true).astype(np.float64)
        for k, name in enumerate(scored.class_names):
            member = (scored.y_true == k).astype(np.float64)
            result[f"recall/{name}"] = _ratio(weights @ (member * right), weights @ member)
    else:
        per_label = []
        for k, name in enumerate(scored.class_names):
            per_label.append(bs.weighted_balanced_accuracy(weights, scored.y_true[:, k], scored.decided[:, k], 2))
            positive = scored.y_true[:, k].astype(np.float64)
            result[f"recall/{name}"] = _ratio(weights @ (positive * scored.decided[:, k]), weights @ positive)
        stacked = np.stack(per_label, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            valid = np.isfinite(stacked)
            result["balanced_accuracy"] = np.where(valid.any(axis=1), np.where(valid, stacked, 0.0).sum(axis=1)
                                                   / np.maximum(valid.sum(axis=1), 1), np.nan)
    result["ece"] = weighted_ece(weights, scored)
    return result


def weighted_ece(weights: np.ndarray, scored: Scored, n_bins: int = ECE_BINS) -> np.ndarray:
    """Expected calibration error under each row of weights; unit weights equal
    `keras_med.evaluation.calibration.expected_calibration_error` (same bins, same confidences).

    Per bin, count x |mean confidence - frequency| = |sum of confidences - sum of outcomes|, so the
    ECE is the sum over bins of that, over the total count, and both sums are linear in the weights.
    """
    if scored.task == "multiclass":
        confidence = scored.y_prob.max(axis=1)[:, None]
        outcome = (scored.y_prob.argmax(axis=1) == scored.y_true).astype(np.float64)[:, None]
    else:
        confidence = scored.y_prob.reshape(len(scored.y_true), -1)
        outcome = scored.y_true.reshape(len(scored.y_true), -1).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    gap = confidence - outcome
    total = np.zeros(weights.shape[0])
    for b in range(n_bins):
        in_bin = bin_index == b
        if in_bin.any():
            total += np.abs(weights @ np.where(in_bin, gap, 0.0).sum(axis=1))
    counts = weights.sum(axis=1) * confidence.shape[1]
    return _ratio(total, counts)


@dataclass
class Difference:
    """B - A for one metric: point estimate, 95% interval, two-sided bootstrap p-value.

    `shown` is True when the 95% interval excludes 0.
    """

    metric: str
    a: float | None
    b: float | None
    difference: float | None
    ci95: list[float] | None
    p_value: float | None
    lower_is_better: bool = False

    @property
    def shown(self) -> bool:
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "a": self.a, "b": self.b, "difference": self.difference,
                "ci95": self.ci95, "p_value": self.p_value, "shown": self.shown,
                "lower_is_better": self.lower_is_better}


def bootstrap_p_value(draws: np.ndarray) -> float | None:
    """Two-sided p-value of "the difference is 0" from bootstrap draws of it (percentile method).

    Twice the smaller share of draws on either side of 0, with the +1 correction so that a finite
    number of draws never gives exactly 0; capped at 1 (draws all equal to 0 give 1).
    """
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None
    below = (np.sum(draws <= 0) + 1) / (draws.size + 1)
    above = (np.sum(draws >= 0) + 1) / (draws.size + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def _clean(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _group_index(groups, n_samples: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n_samples), n_samples
    groups = np.asarray(groups)
    if groups.shape != (n_samples,):
        raise ValueError(f"groups: expected shape ({n_samples},) aligned with the images, got {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    return index, int(index.max()) + 1


def compare_groups(runs_a: list[Scored], runs_b: list[Scored], groups=None, n_bootstrap: int = 2000,
                   seed: int = 0) -> list[Difference]:
    """B - A for every metric, with a bootstrap over image groups and, for seed groups, over seeds.

    With one run on each side this is the paired group bootstrap. With several (the same recipe
    trained with different seeds), the figure is the mean over B's runs minus the mean over A's,
    and each resample draws image groups *and*, independently, runs of A and of B with replacement,
    so the interval holds both the test set's and the seeds' variation (a hierarchical bootstrap).

    Args:
        runs_a, runs_b: scored runs, every one on the same images in the same order.
        groups: `(N,)` patient/lesion ids of those images (None: each image alone).
        n_bootstrap: resamples.
        seed: random seed of the resampling.
    """
    if not runs_a or not runs_b:
        raise ValueError("compare_groups: expected at least one run on each side")
    n_samples = len(runs_a[0].y_true)
    names = metric_names(runs_a[0])
    ones = np.ones((1, n_samples))
    point_a = [weighted_metrics(ones, run) for run in runs_a]
    point_b = [weighted_metrics(ones, run) for run in runs_b]
    group_index, n_groups = _group_index(groups, n_samples)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_WEIGHT_CELLS // max(n_samples, 1))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        weights = bs.resample_weights(group_index, n_groups, size, rng)
        values_a = [weighted_metrics(weights, run) for run in runs_a]
        values_b = [weighted_metrics(weights, run) for run in runs_b]
        pick_a = rng.integers(0, len(runs_a), size=(size, len(runs_a)))
        pick_b = rng.integers(0, len(runs_b), size=(size, len(runs_b)))
        rows = np.arange(size)[:, None]
        for name in names:
            stack_a = np.stack([values[name] for values in values_a], axis=1)  # (size, runs)
            stack_b = np.stack([values[name] for values in values_b], axis=1)
            with warnings.catch_warnings():
                # a class absent from a resample makes a NaN, which the interval drops
                warnings.simplefilter("ignore", RuntimeWarning)
                mean_a = np.nanmean(stack_a[rows, pick_a], axis=1)
                mean_b = np.nanmean(stack_b[rows, pick_b], axis=1)
            draws[name].append(mean_b - mean_a)
    differences = []
    for name in names:
        a = _mean_of_points(point_a, name)
        b = _mean_of_points(point_b, name)
        values = np.concatenate(draws[name])
        differences.append(Difference(
            metric=name, a=a, b=b, difference=None if a is None or b is None else b - a,
            ci95=bs.percentile_interval(values), p_value=bootstrap_p_value(values),
            lower_is_better=name in LOWER_IS_BETTER))
    return differences


def _mean_of_points(points: list[dict], name: str) -> float | None:
    values = [float(point[name][0]) for point in points if np.isfinite(point[name][0])]
    return float(np.mean(values)) if values else None


@dataclass
class McNemar:
    """McNemar's test on paired right/wrong decisions.

    Attributes:
        a_only: images A got right and B wrong. b_only: images B got right and A wrong.
        p_value: two-sided; exact binomial below `MCNEMAR_EXACT_BELOW` discordant pairs, else
            the chi-square with continuity correction. 1.0 when there is no discordant pair.
        method: "exact" or "chi2".
    """

    a_only: int
    b_only: int
    p_value: float
    method: str
    statistic: float | None = None

    def to_dict(self) -> dict:
        return {"a_right_b_wrong": self.a_only, "b_right_a_wrong": self.b_only, "p_value": self.p_value,
                "method": self.method, "statistic": self.statistic}


def mcnemar(correct_a, correct_b) -> McNemar:
    """McNemar's test of "A and B make as many mistakes" from `(N,)` right/wrong flags of each.

    scipy has the exact binomial test (`binomtest`) and the chi-square distribution, not McNemar
    itself; statsmodels (which has it) is not a dependency of this project.
    """
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    if discordant == 0:
        return McNemar(a_only, b_only, 1.0, "exact")
    if discordant < MCNEMAR_EXACT_BELOW:
        return McNemar(a_only, b_only, float(scipy_stats.binomtest(b_only, discordant, 0.5).pvalue), "exact")
    statistic = (abs(a_only - b_only) - 1.0) ** 2 / discordant
    return McNemar(a_only, b_only, float(scipy_stats.chi2.sf(statistic, df=1)), "chi2", float(statistic))


@dataclass
class DeLong:
    """DeLong's test of two correlated ROC AUCs on the same images (one one-vs-rest column)."""

    column: str
    auc_a: float
    auc_b: float
    difference: float
    standard_error: float
    ci95: list[float]
    p_value: float

    def to_dict(self) -> dict:
        return {"column": self.column, "auc_a": self.auc_a, "auc_b": self.auc_b, "difference": self.difference,
                "standard_error": self.standard_error, "ci95": self.ci95, "p_value": self.p_value}


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores of the same images and their DeLong covariance matrix.

    The fast algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)): the structural
    components of DeLong, DeLong & Clarke-Pearson (1988) come from mid-ranks, in O(N log N) instead
    of comparing every positive with every negative. Neither scikit-learn nor scipy has DeLong's
    test (scikit-learn gives the AUC only, scipy the Mann-Whitney U of one score), so it is written here.

    Args:
        y_true: `(N,)` 0/1 targets, with at least one positive and one negative.
        scores: `(K, N)` scores of K models.

    Returns:
        `(aucs (K,), covariance (K, K))`.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, y_true], scores[:, ~y_true]
    m, n = positives.shape[1], negatives.shape[1]
    if m == 0 or n == 0:
        raise ValueError("delong_covariance: expected at least one positive and one negative image")
    rank_positives = scipy_stats.rankdata(positives, axis=1)
    rank_negatives = scipy_stats.rankdata(negatives, axis=1)
    rank_all = scipy_stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    # V10: for each positive, the share of negatives it outranks; V01: for each negative, the share
    # of positives that outrank it (ties count one half, through the mid-ranks).
    v10 = (rank_all[:, :m] - rank_positives) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_negatives) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, s10 / m + s01 / n


def delong_test(y_true, score_a, score_b, column: str = "") -> DeLong:
    """DeLong's two-sided test of AUC(B) = AUC(A) on the same images, with a 95% interval of B - A."""
    aucs, covariance = delong_covariance(y_true, np.stack([score_a, score_b]))
    variance = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    difference = float(aucs[1] - aucs[0])
    standard_error = float(np.sqrt(max(variance, 0.0)))
    if standard_error == 0.0:
        # Identical rankings (or a perfect split by both): no evidence of a difference.
        p_value = 1.0 if difference == 0.0 else 0.0
    else:
        p_value = float(2.0 * scipy_stats.norm.sf(abs(difference) / standard_error))
    z = scipy_stats.norm.ppf(0.975)
    return DeLong(column, float(aucs[0]), float(aucs[1]), difference, standard_error,
                  [difference - z * standard_error, difference + z * standard_error], p_value)


def delong_columns(a: Scored, b: Scored) -> list[DeLong]:
    """DeLong's test for every one-vs-rest column with positives and negatives (binary: the one)."""
    indicator, scores_a, names = a.score_columns()
    _, scores_b, _ = b.score_columns()
    results = []
    for k, name in enumerate(names):
        column = indicator[:, k]
        if 0 < column.sum() < len(column):
            results.append(delong_test(column, scores_a[:, k], scores_b[:, k], name))
    return results


@dataclass
class PairedComparison:
    """Everything `keras-med compare` says about B against A."""

    label_a: str
    label_b: str
    runs_a: list[str]
    runs_b: list[str]
    n_images: int
    n_groups: int
    differences: list[Difference]
    mcnemar: McNemar | None = None
    delong: list[DeLong] = field(default_factory=list)

    def difference(self, metric: str) -> Difference:
        return next(item for item in self.differences if item.metric == metric)

    def to_dict(self) -> dict:
        return {"a": {"label": self.label_a, "runs": self.runs_a}, "b": {"label": self.label_b, "runs": self.runs_b},
                "n_images": self.n_images, "n_groups": self.n_groups,
                "differences": [item.to_dict() for item in self.differences],
                "mcnemar": None if self.mcnemar is None else self.mcnemar.to_dict(),
                "delong": [item.to_dict() for item in self.delong]}


def compare(runs_a: list[Scored], runs_b: list[Scored], groups=None, *, label_a: str = "A", label_b: str = "B",
            names_a=None, names_b=None, n_bootstrap: int = 2000, seed: int = 0) -> PairedComparison:
    """The paired comparison of B against A; McNemar and DeLong only for one run on each side.

    With seed groups the decisions of one run are not those of the group, so the two tests that
    need one model's decisions are left out (the bootstrap interval covers the question).
    """
    differences = compare_groups(runs_a, runs_b, groups, n_bootstrap=n_bootstrap, seed=seed)
    n_images = len(runs_a[0].y_true)
    single = len(runs_a) == 1 and len(runs_b) == 1
    return PairedComparison(
        label_a=label_a, label_b=label_b, runs_a=list(names_a or []), runs_b=list(names_b or []),
        n_images=n_images, n_groups=_group_index(groups, n_images)[1], differences=differences,
        mcnemar=mcnemar(runs_a[0].correct, runs_b[0].correct) if single else None,
        delong=delong_columns(runs_a[0], runs_b[0]) if single else [])
