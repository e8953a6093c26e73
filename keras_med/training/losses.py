"""A per-label weighted binary cross-entropy for multi-label tasks (CheXNet's loss).

Keras's `BinaryCrossentropy` averages over labels before any sample weight applies, and
`class_weight` needs one class per row, so neither can weight each label's positives and
negatives separately; this small loss does, with `keras.ops` only (backend-agnostic).
It is registered, so a checkpoint compiled with it reloads once `keras_med` is imported; the
model itself (`compile=False`, as keras_med's own loaders use) needs nothing.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_med")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a positive and a negative weight per label.

    loss = mean over labels of -(w+_j y_j log p_j + w-_j (1 - y_j) log(1 - p_j)).

    Args:
        positive_weights: One weight per label for its positive targets.
        negative_weights: One weight per label for its negative targets.
        label_smoothing: Squeeze targets towards 0.5 by this amount, as Keras's loss does.
    """

    def __init__(self, positive_weights, negative_weights, label_smoothing: float = 0.0,
                 name: str = "weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in positive_weights]
        self.negative_weights = [float(w) for w in negative_weights]
        if len(self.positive_weights) != len(self.negative_weights) or not self.positive_weights:
            raise ValueError("positive_weights and negative_weights: expected one weight per label each, got "
                             f"{len(self.positive_weights)} and {len(self.negative_weights)}")
        if min(self.positive_weights + self.negative_weights) < 0:
            raise ValueError("positive_weights and negative_weights: expected weights >= 0")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        epsilon = keras.config.epsilon()
        y_pred = ops.clip(y_pred, epsilon, 1.0 - epsilon)
        positive = ops.convert_to_tensor(self.positive_weights, dtype=y_pred.dtype)
        negative = ops.convert_to_tensor(self.negative_weights, dtype=y_pred.dtype)
        losses = -(positive * y_true * ops.log(y_pred) + negative * (1.0 - y_true) * ops.log(1.0 - y_pred))
        return ops.mean(losses, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights,
                "negative_weights": self.negative_weights, "label_smoothing": self.label_smoothing}
