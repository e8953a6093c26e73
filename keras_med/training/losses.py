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


@keras.saving.register_keras_serializable(package="keras_med")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on logits shifted by `tau * log(prior)`: logit adjustment for long tails.

    Menon et al., "Long-tail learning via logit adjustment" (ICLR 2021); with tau = 1 it is Ren et
    al.'s balanced softmax (NeurIPS 2020). The loss sees `softmax(z + tau * log prior)`, so the
    model's own logits `z` learn the class-conditional evidence without the training prior, and
    their argmax is the Bayes rule for equally common classes: what balanced accuracy rewards. Class
    weights push the same way but, on a network that fits its training set, mostly make it memorise
    the few heavily weighted images of rare classes; the adjustment changes the margin instead.
    Keras has no such loss. It takes the model's softmax probabilities (keras_med's models end in a
    float32 softmax): `log p = z - logsumexp(z)`, a shift every class shares, so
    `log p + tau * log prior` gives the same softmax as the shifted logits. Serving is unchanged: the
    model's outputs are its balanced posteriors.

    Args:
        class_priors: The training split's class frequencies, one per class (normalised here).
        tau: Strength of the adjustment; 1 = the full prior (Menon et al.'s default).
        label_smoothing: Squeeze targets towards uniform by this amount, as Keras's loss does.
    """

    def __init__(self, class_priors, tau: float = 1.0, label_smoothing: float = 0.0,
                 name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        priors = [float(prior) for prior in class_priors]
        if len(priors) < 2 or min(priors) <= 0:
            raise ValueError(f"class_priors: expected a positive frequency for each of at least 2 classes, got {priors}")
        total = sum(priors)
        self.class_priors = [prior / total for prior in priors]
        self.tau = float(tau)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        log_prior = ops.log(ops.convert_to_tensor(self.class_priors, dtype=y_pred.dtype))
        logits = ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0)) + self.tau * log_prior
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "class_priors": self.class_priors, "tau": self.tau,
                "label_smoothing": self.label_smoothing}
