"""The trust outputs of the serving graph: `in_distribution`, `ood_score` and `prediction_set`.

The out-of-distribution score is `keras_med.evaluation.ood.ood_scores`, the same `keras.ops` code
the report's figures come from, traced here into the SavedModel with the guard's arrays as
constants. The conformal set is one comparison per class against the calibrated thresholds.

The thresholds themselves (the guard's, the sets') and the validation scores' quantiles are
variables, not graph constants: `keras-med calibrate` re-fits them on a site's own images and
writes a new version by rewriting `variables/` alone, so the graph and its signatures stay
byte-identical (`keras_med.export.site_calibration`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_med.evaluation.ood import ood_scores, pixel_spread

GUARD_OUTPUT_KEYS = ("in_distribution", "ood_score", "prediction_set")
# The variables `keras-med calibrate` rewrites (names are distinct from any model weight's).
THRESHOLD_VARIABLE = "km_ood_threshold"
QUANTILES_VARIABLE = "km_ood_score_quantiles"
SET_THRESHOLDS_VARIABLE = "km_set_thresholds"
SETS_ON_ANSWER_VARIABLE = "km_sets_on_answer"
PASS_RATE_VARIABLE = "km_ood_pass_rate"


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
        arrays = {}
        if guard is not None:
            from keras_med.evaluation.ood import SCORE_QUANTILES

            quantiles = np.asarray(guard.score_quantiles or np.full(SCORE_QUANTILES, np.nan), np.float32)
            arrays.update(guard.parameters, **{THRESHOLD_VARIABLE: np.asarray([guard.threshold], np.float32),
                                               QUANTILES_VARIABLE: quantiles,
                                               PASS_RATE_VARIABLE: np.asarray([guard.validation_pass_rate], np.float32)})
        if sets is not None:
            arrays.update({SET_THRESHOLDS_VARIABLE: np.asarray(sets.thresholds, np.float32),
                           SETS_ON_ANSWER_VARIABLE: np.asarray([sets.applies_to == "answer"], np.float32)})
        self.weights_layer = GuardWeights(arrays) if arrays else None

    def _variable(self, name):
        return tf.convert_to_tensor(self.weights_layer.parameters[name])

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
            in_distribution = valid & (score <= self._variable(THRESHOLD_VARIABLE)[0]) & varied
        if self.sets is None:
            members = decisions
        else:
            # Both comparisons are made and one kept, so that a site calibration may switch which
            # probabilities the sets read without a new graph.
            calibrated_on = tf.where(self._variable(SETS_ON_ANSWER_VARIABLE)[0] > 0.5, answer, probabilities)
            members = calibrated_on >= self._variable(SET_THRESHOLDS_VARIABLE)[None, :]
        return {"in_distribution": in_distribution, "ood_score": tf.where(valid, score, 0.0),
                "prediction_set": tf.logical_and(members, valid[:, None])}

    def describe(self) -> dict:
        """Constants for the `metadata` signature."""
        guard, sets = self.guard, self.sets
        return {
            "ood_method": tf.constant(guard.method if guard else "none", tf.string),
            "ood_threshold": self._variable(THRESHOLD_VARIABLE)[0] if guard else tf.constant(0.0, tf.float32),
            "ood_score_quantiles": self._variable(QUANTILES_VARIABLE) if guard else tf.zeros([0], tf.float32),
            "ood_pass_rate": self._variable(PASS_RATE_VARIABLE)[0] if guard else tf.constant(1.0, tf.float32),
            "conformal_coverage": tf.constant(sets.coverage if sets else 0.0, tf.float32),
            "conformal_thresholds": self._variable(SET_THRESHOLDS_VARIABLE) if sets else tf.zeros([0], tf.float32),
            "conformal_applies_to": tf.where(self._variable(SETS_ON_ANSWER_VARIABLE)[0] > 0.5, "answer", "model")
            if sets else tf.constant("none", tf.string),
        }

    def summary(self) -> dict:
        """JSON-able description for the SavedModel's `assets.extra/keras_med.json`."""
        return {"ood": self.guard.summary() if self.guard else None,
                "conformal": self.sets.summary() if self.sets else None}
