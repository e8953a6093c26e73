"""The trust outputs of the serving graph: `in_distribution`, `ood_score` and `prediction_set`.

The out-of-distribution score is `keras_med.evaluation.ood.ood_scores`, the same `keras.ops` code
the report's figures come from, traced here into the SavedModel with the guard's arrays as
constants. The conformal set is one comparison per class against the calibrated thresholds.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_med.evaluation.ood import ood_scores, pixel_spread

GUARD_OUTPUT_KEYS = ("in_distribution", "ood_score", "prediction_set")


class GuardWeights(keras.layers.Layer):
    """The guard's arrays as non-trainable weights, so the SavedModel keeps them in `variables/`.

    As graph constants they were embedded once per signature: a 4096 x 1280 kNN bank made
    saved_model.pb 44 MB (measured).

    Args:
        arrays: `{name: array}`; 0-d entries (such as kNN's `k`) stay Python numbers.
    """

    def __init__(self, arrays: dict, **kwargs):
        super().__init__(name="ood_guard", trainable=False, **kwargs)
        self.parameters = {}
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.ndim == 0:
                self.parameters[name] = value.item()
                continue
            weight = self.add_weight(name=name, shape=value.shape, dtype="float32", initializer="zeros",
                                     trainable=False)
            weight.assign(value.astype(np.float32))
            self.parameters[name] = weight
        self.built = True


class ServingGuards:
    """The in-graph guards of one exported model.

    Args:
        guard: A fitted `keras_med.evaluation.ood.OODGuard`, or None (every valid row passes, score 0).
        sets: Calibrated `keras_med.evaluation.conformal.ConformalSets`, or None (multi-label:
            `prediction_set` is the row's decisions).
    """

    def __init__(self, guard=None, sets=None):
        self.guard = guard
        self.sets = sets
        self.weights_layer = GuardWeights(guard.parameters) if guard is not None else None

    def outputs(self, features, probabilities, answer, decisions, valid, images) -> dict:
        """The guard outputs for a batch; an invalid row is not in distribution and has an empty set.

        Args:
            features: Pooled features `(B, D)` (`(B, 0)` without a guard).
            probabilities: The probabilities the guard was fitted on `(B, K)`, laid out as served: the
                model's own (an ensemble's first member's, before flips and the decision rule).
            answer: The served probabilities `(B, K)`; the set compares these with its thresholds
                when it was calibrated on them (`ConformalSets.applies_to == "answer"`).
            decisions: Thresholded decisions `(B, K)` of the served answer (the multi-label prediction set).
            valid: Per-row validity `(B,)`.
            images: The images the model saw `(B, S, S, 3)`, for the guard's pixel-variation check.
        """
        if self.guard is None:
            score = tf.zeros_like(probabilities[:, 0])
        else:
            score = tf.cast(ood_scores(self.guard.method, self.weights_layer.parameters, features, probabilities),
                            tf.float32)
        in_distribution = valid
        if self.guard is not None:
            varied = pixel_spread(images) >= self.guard.min_pixel_spread
            in_distribution = valid & (score <= self.guard.threshold) & varied
        if self.sets is None:
            members = decisions
        else:
            calibrated_on = answer if self.sets.applies_to == "answer" else probabilities
            members = calibrated_on >= tf.constant(self.sets.thresholds, tf.float32)[None, :]
        return {"in_distribution": in_distribution, "ood_score": tf.where(valid, score, 0.0),
                "prediction_set": tf.logical_and(members, valid[:, None])}

    def describe(self) -> dict:
        """Constants for the `metadata` signature."""
        guard, sets = self.guard, self.sets
        return {
            "ood_method": tf.constant(guard.method if guard else "none", tf.string),
            "ood_threshold": tf.constant(guard.threshold if guard else 0.0, tf.float32),
            "ood_pass_rate": tf.constant(guard.validation_pass_rate if guard else 1.0, tf.float32),
            "conformal_coverage": tf.constant(sets.coverage if sets else 0.0, tf.float32),
            "conformal_thresholds": tf.constant(list(sets.thresholds) if sets else [], tf.float32),
            "conformal_applies_to": tf.constant(sets.applies_to if sets else "none", tf.string),
        }

    def summary(self) -> dict:
        """JSON-able description for the SavedModel's `assets.extra/keras_med.json`."""
        return {"ood": self.guard.summary() if self.guard else None,
                "conformal": self.sets.summary() if self.sets else None}
