"""Out-of-distribution guard: is this image like the training images at all?

A classifier answers every image with a class; a chest X-ray sent to a skin-lesion model comes back
"mel 1.000". The guard scores how unlike the training split an image is and passes it when the
score is at most a threshold chosen so that a set share of validation images (default 95%) passes.

Scores (higher = more unusual), all on what one forward pass already gives. The features are the
mean over space of the backbone's middle block output (`keras_med.models.features`; the head's
pooled features for a backbone without one): the last layer of a fine-tuned model stops telling
another modality apart (below).
- `knn`: cosine distance from the features to the k-th nearest (k = 10) of up to
  4096 training images' features (Sun et al., ICML 2022).
- `mahalanobis` (default): the smallest Mahalanobis distance of the features to a class mean, with one
  shared covariance estimated by scikit-learn's `LedoitWolf` (the features can have more dimensions,
  e.g. 1280 for MobileNetV2's pooled features, than a medical set has images per class; the shrunk estimate keeps the
  inverse stable).
- `max_softmax`: one minus the top probability.
Besides the score, an image whose pixels barely vary (spatial standard deviation under half the
lowest of any training image) is out of distribution: a blank or constant image, or a 1x1 image
scaled up, carries nothing to classify, and a weak model's features do not always set it apart.
The default is chosen by measurement on the real sets (docs/lab_notes.md, "Trust at the point of use"):
for a HAM10000 MobileNetV2 with frozen ImageNet features, at a 95% validation pass rate, kNN on the
pooled features flagged 100% of 1000 Kermany chest X-rays and of every blank, noise, tiny, blurred,
over-exposed and darkened image while passing 95.4% of the test split; Mahalanobis also flagged every
X-ray but let 38% of the tiny, 98% of the blurred and 53% of the over-exposed images through; the top
probability, the energy and the maximum logit flagged almost no X-ray (0-0.1%). On a Kermany X-ray
model both feature scores flagged every HAM10000 image. On the recipe's fully fine-tuned default
HAM10000 model the pooled features failed: kNN passed 80% of the X-rays (flagged 20.2%);
on the middle block's features kNN flagged 100% of them (test split passed 95.6%), but let most
heavily blurred (47-80%) and some over-exposed lesions (23% on one seed) through, and on the demo's
custom CNN 97% of its synthetic X-rays. Mahalanobis on the middle block flagged 100% of the X-rays and of
every corrupted kind on both fine-tuned models (test split passed 95.8-95.9%) and every X-ray of the
demo, so it is the default.

The scores are written with `keras.ops` so that the very same function runs on numpy arrays for the
report and inside the exported SavedModel's graph (keras_med.export.guards): the report's figures
are the served model's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from keras_med.atomic import atomic_path, write_text_atomic

OOD_METHODS = ("knn", "mahalanobis", "max_softmax")
DEFAULT_OOD_METHOD = "mahalanobis"
DEFAULT_PASS_RATE = 0.95
KNN_NEIGHBOURS = 10
# The kNN bank is stored in the SavedModel; 4096 x 1280 float32 is 21 MB.
KNN_BANK_SIZE = 4096
# Quantiles of the validation scores kept with the guard: every 0.1%, enough to say "99.7%".
SCORE_QUANTILES = 1001


def validation_quantiles(scores) -> list[float]:
    """`SCORE_QUANTILES` evenly spaced quantiles of `scores` (the validation images' scores)."""
    scores = np.asarray(scores, np.float64)
    if scores.size == 0:
        return []
    return [float(value) for value in np.quantile(scores, np.linspace(0.0, 1.0, SCORE_QUANTILES))]


def score_percentile(quantiles, score: float) -> float | None:
    """The share (0..1) of validation images scoring below `score`, read off their stored quantiles.

    Args:
        quantiles: `validation_quantiles` of the validation scores (empty: unknown).
        score: An image's out-of-distribution score.

    Returns:
        0 at or below the lowest validation score, 1 above the highest, linear between stored
        quantiles; None when no quantiles are stored.
    """
    quantiles = np.asarray(quantiles, np.float64)
    if quantiles.size < 2 or score is None:
        return None
    if score > quantiles[-1]:
        return 1.0
    # The highest grid position whose quantile is still below the score: ties (many equal scores)
    # count as "not farther".
    grid = np.linspace(0.0, 1.0, quantiles.size)
    below = np.searchsorted(quantiles, score, side="left")
    if below == 0:
        return 0.0
    low, high = quantiles[below - 1], quantiles[below]
    fraction = 0.0 if high <= low else (score - low) / (high - low)
    return float(grid[below - 1] + fraction * (grid[below] - grid[below - 1]))


def reference_answers(probabilities) -> dict:
    """What the model answered on the validation images: the counts of each top class and the mean top probability."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.size == 0:
        return {}
    counts = np.bincount(np.argmax(probabilities, axis=1), minlength=probabilities.shape[1])
    return {"n": int(len(probabilities)), "top_class_counts": [int(value) for value in counts],
            "mean_top_probability": float(np.mean(np.max(probabilities, axis=1)))}


@dataclass
class OODGuard:
    """A fitted out-of-distribution score and its threshold.

    Args:
        method: One of `OOD_METHODS`.
        threshold: An image passes (is in distribution) when its score is at most this.
        pass_rate: The share of validation images the threshold was chosen to pass.
        validation_pass_rate: The share of validation images that do pass (at least `pass_rate`).
        parameters: Arrays of the score: `mahalanobis`: `whitener (D, D)`, `means (C, D)` (already
            whitened); `knn`: `bank (N, D)` (unit rows); `max_softmax`: none.
        n_fit: Number of training images the score was fitted on.
        min_pixel_spread: An image whose pixel spread (`pixel_spread`, 0..255 scale) is below this is out of
            distribution whatever its score.
        features: The model features the score reads (`keras_med.models.features`): `middle_block`
            or `pooled` (a backbone without a 4-D middle block).
        score_quantiles: The validation scores' quantiles at 0, 0.1%, ..., 100% (`SCORE_QUANTILES`
            points), so that a served score is stated as a percentile of the images the threshold was
            chosen on (`score_percentile`); empty for guards fitted before they were kept.
        reference: What the model answered on those validation images, for drift monitoring
            (`keras-med monitor`): `{"n", "top_class_counts", "mean_top_probability"}`; empty when unknown.

    Example:
    >>> guard = fit_ood_guard(train_features, train_labels, val_features, val_probabilities)
    >>> guard.in_distribution(features, probabilities)
    array([ True, False])
    """

    method: str
    threshold: float
    pass_rate: float
    validation_pass_rate: float
    parameters: dict = field(default_factory=dict)
    n_fit: int = 0
    min_pixel_spread: float = 0.0
    features: str = "pooled"
    score_quantiles: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)

    @property
    def dimension(self) -> int | None:
        """The width of the features the score reads, or None (`max_softmax` reads none)."""
        if "bank" in self.parameters:
            return int(np.shape(self.parameters["bank"])[1])
        if "whitener" in self.parameters:
            return int(np.shape(self.parameters["whitener"])[0])
        return None

    def score(self, features, probabilities, batch_size: int = 512) -> np.ndarray:
        """Scores of a batch of images (higher = more unusual) as a float32 numpy array.

        Args:
            features: The model features the guard was fitted on `(N, D)` (see `features`).
            probabilities: Probabilities as served `(N, K)` (binary: `[1 - p, p]`).
            batch_size: Rows scored at a time (the kNN score holds an `(rows, bank)` matrix).
        """
        features = np.asarray(features, np.float32)
        probabilities = np.asarray(probabilities, np.float32)
        parts = [keras.ops.convert_to_numpy(ood_scores(self.method, self.parameters, features[start:start + batch_size],
                                                       probabilities[start:start + batch_size]))
                 for start in range(0, len(features), batch_size)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros([0], np.float32)

    def in_distribution(self, features, probabilities, spread=None) -> np.ndarray:
        """True for the rows whose score is at most the threshold (and whose pixels vary enough).

        Args:
            features: The model features the guard was fitted on `(N, D)` (see `features`).
            probabilities: Probabilities as served `(N, K)`.
            spread: `pixel_spread` of each image `(N,)`, or None to skip that check.
        """
        passed = self.score(features, probabilities) <= self.threshold
        if spread is not None:
            passed &= np.asarray(spread) >= self.min_pixel_spread
        return passed

    def summary(self) -> dict:
        """The JSON-able description stored in metrics.json and the SavedModel's metadata."""
        return {"method": self.method, "threshold": float(self.threshold), "pass_rate": float(self.pass_rate),
                "validation_pass_rate": float(self.validation_pass_rate), "n_fit": int(self.n_fit),
                "min_pixel_spread": float(self.min_pixel_spread), "features": self.features,
                "score_quantiles": [float(value) for value in self.score_quantiles], "reference": self.reference}

    def percentile(self, score: float) -> float | None:
        """The share of validation images whose score is below `score` (see `score_percentile`)."""
        return score_percentile(self.score_quantiles, score)

    def save(self, path: str | Path) -> Path:
        """Write the guard to `path` (`.npz` arrays) and `path.json` (the summary), atomically."""
        path = Path(path)
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **{name: np.asarray(value) for name, value in self.parameters.items()})
        write_text_atomic(path.with_suffix(".json"), json.dumps(self.summary(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "OODGuard":
        """Read a guard written by `save`."""
        path = Path(path)
        summary = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        with np.load(path) as arrays:
            parameters = {name: arrays[name] for name in arrays.files}
        return cls(method=summary["method"], threshold=summary["threshold"], pass_rate=summary["pass_rate"],
                   validation_pass_rate=summary["validation_pass_rate"], parameters=parameters,
                   n_fit=summary.get("n_fit", 0), min_pixel_spread=summary.get("min_pixel_spread", 0.0),
                   features=summary["features"], score_quantiles=summary.get("score_quantiles", []),
                   reference=summary.get("reference", {}))


def ood_scores(method: str, parameters: dict, features, probabilities):
    """The out-of-distribution score per row, in `keras.ops` (numpy in, a backend tensor out; graph-safe).

    Args:
        method: One of `OOD_METHODS`.
        parameters: The guard's arrays (see `OODGuard`).
        features: Pooled features `(B, D)`, float32.
        probabilities: Probabilities as served `(B, K)`, float32.

    Returns:
        A float32 tensor `(B,)`.
    """
    ops = keras.ops
    if method == "mahalanobis":
        # Whitened, the Mahalanobis distance is a Euclidean one, |z - m|^2. Computed from the
        # differences, (B, C, D): the expansion |z|^2 - 2 z.m + |m|^2 cancels large terms and, in
        # float32, moved served scores of ~4 by 5e-4 from the report's.
        whitened = ops.matmul(ops.cast(features, "float32"), ops.convert_to_tensor(parameters["whitener"], "float32"))
        means = ops.convert_to_tensor(parameters["means"], "float32")
        differences = ops.expand_dims(whitened, 1) - ops.expand_dims(means, 0)
        return ops.min(ops.sum(differences * differences, axis=-1), axis=-1)
    if method == "knn":
        unit = _unit_rows(ops.cast(features, "float32"))
        similarity = ops.matmul(unit, ops.transpose(ops.convert_to_tensor(parameters["bank"], "float32")))
        neighbours = int(parameters["k"]) if "k" in parameters else KNN_NEIGHBOURS
        top, _ = ops.top_k(similarity, k=neighbours)
        return 1.0 - top[:, -1]
    if method == "max_softmax":
        return 1.0 - ops.max(ops.cast(probabilities, "float32"), axis=-1)
    raise ValueError(f"out-of-distribution method must be one of {list(OOD_METHODS)}, got {method!r}")


def pixel_spread(images):
    """Per image, the largest over channels of the pixels' spatial standard deviation (keras.ops; graph-safe).

    A constant colour, however bright or coloured, has a spread of 0.
    """
    ops = keras.ops
    return ops.max(ops.std(ops.cast(images, "float32"), axis=(1, 2)), axis=-1)


def _unit_rows(features):
    ops = keras.ops
    return features / ops.maximum(ops.sqrt(ops.sum(features * features, axis=-1, keepdims=True)), 1e-12)


def fit_ood_parameters(method: str, train_features, train_labels=None, seed: int = 0) -> dict:
    """The arrays of an out-of-distribution score, fitted on training features.

    Args:
        method: One of `OOD_METHODS`.
        train_features: Pooled features of the training images `(N, D)`.
        train_labels: Class index per training image `(N,)` for per-class means, or None for one
            mean (multi-label models).
        seed: Seed for the kNN bank's subsample.
    """
    features = np.asarray(train_features, np.float64)
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        labels = np.zeros(len(features), np.int64) if train_labels is None else np.asarray(train_labels, np.int64)
        classes = np.unique(labels)
        means = np.stack([features[labels == label].mean(axis=0) for label in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf().fit(centred).precision_
        # precision = W W^T, so (x - m)^T P (x - m) = |(x - m) W|^2.
        whitener = np.linalg.cholesky((precision + precision.T) / 2.0)
        return {"whitener": whitener.astype(np.float32), "means": (means @ whitener).astype(np.float32)}
    if method == "knn":
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(features), size=min(KNN_BANK_SIZE, len(features)), replace=False)
        bank = features[np.sort(rows)]
        bank /= np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        return {"bank": bank.astype(np.float32), "k": np.asarray(min(KNN_NEIGHBOURS, len(bank)), np.int64)}
    if method == "max_softmax":
        return {}
    raise ValueError(f"out-of-distribution method must be one of {list(OOD_METHODS)}, got {method!r}")


def choose_threshold(validation_scores, pass_rate: float = DEFAULT_PASS_RATE) -> float:
    """The smallest observed score that at least `pass_rate` of the validation scores do not exceed.

    Args:
        validation_scores: Scores of in-distribution validation images.
        pass_rate: Share of them that must pass, in (0, 1].
    """
    if not 0.0 < pass_rate <= 1.0:
        raise ValueError(f"pass_rate must be in (0, 1], got {pass_rate}")
    scores = np.sort(np.asarray(validation_scores, np.float64))
    if scores.size == 0:
        raise ValueError("choosing an out-of-distribution threshold needs at least one validation image")
    return float(scores[min(scores.size - 1, math.ceil(pass_rate * scores.size) - 1)])


def fit_ood_guard(train_features, train_labels, val_features, val_probabilities, *,
                  method: str = DEFAULT_OOD_METHOD, pass_rate: float = DEFAULT_PASS_RATE, seed: int = 0,
                  train_spread=None, val_spread=None, features: str = "pooled") -> OODGuard:
    """Fit the score on the training split and choose its threshold on the validation split.

    Args:
        train_features: Pooled features of the training images `(N, D)`.
        train_labels: Class index per training image, or None (one mean).
        val_features: Pooled features of the validation images `(M, D)`.
        val_probabilities: Probabilities of the validation images as served `(M, K)`.
        method: One of `OOD_METHODS`.
        pass_rate: Share of validation images the threshold passes.
        seed: Seed for the kNN bank.
        train_spread: `pixel_spread` of each training image, for `min_pixel_spread`; or
            None (no such check).
        val_spread: The same for the validation images, for the measured pass rate.
        features: Which model features the arrays are (`OODGuard.features`), recorded for the export.

    Returns:
        The fitted `OODGuard`.
    """
    parameters = fit_ood_parameters(method, train_features, train_labels, seed)
    min_pixel_spread = 0.0 if train_spread is None else 0.5 * float(np.min(train_spread))
    guard = OODGuard(method=method, threshold=0.0, pass_rate=pass_rate, validation_pass_rate=0.0,
                     parameters=parameters, n_fit=len(train_features), min_pixel_spread=min_pixel_spread,
                     features=features)
    val_scores = guard.score(val_features, val_probabilities)
    guard.threshold = choose_threshold(val_scores, pass_rate)
    guard.score_quantiles = validation_quantiles(val_scores)
    guard.reference = reference_answers(val_probabilities)
    guard.validation_pass_rate = float(np.mean(guard.in_distribution(val_features, val_probabilities, val_spread)))
    return guard


def separation(in_scores, out_scores, threshold: float, out_passed=None) -> dict:
    """How well a threshold separates in-distribution images from a set of outsiders.

    Args:
        in_scores: Scores of in-distribution images (e.g. the test split).
        out_scores: Scores of images that should be flagged.
        threshold: The guard's threshold.
        out_passed: Whether each outsider passes the whole guard (score and pixel check); None:
            the score alone decides.

    Returns:
        `{"auroc", "false_pass_rate", "flagged_rate", "n"}`: AUROC of the score for "outsider",
        the share of outsiders that pass, and the share flagged.
    """
    from sklearn.metrics import roc_auc_score

    in_scores, out_scores = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    labels = np.r_[np.zeros(in_scores.size), np.ones(out_scores.size)]
    auroc = float(roc_auc_score(labels, np.r_[in_scores, out_scores])) if in_scores.size and out_scores.size else None
    if out_passed is None:
        out_passed = out_scores <= threshold
    passed = float(np.mean(out_passed)) if out_scores.size else None
    return {"auroc": auroc, "false_pass_rate": passed,
            "flagged_rate": None if passed is None else 1.0 - passed, "n": int(out_scores.size)}
