"""Grad-CAM and Grad-CAM++, written once in `keras.ops`: the report, the JAX backend and the served
`explain` signature all call `GradcamModel.logits_and_maps`, so their heat maps cannot drift apart.

The formulas are tf-keras-vis's (the reference the tests hold this to; Selvaraju et al. 2017,
Chattopadhay et al. 2018): the score is the explained class's *linear* output (the Dense
`predictions` layer's kernel and bias without its softmax/sigmoid, as tf-keras-vis's
`ReplaceToLinear`; binary: the logit, negated for the negative class); Grad-CAM weighs the feature
map's channels by the spatial mean of the score's gradients; the map is the ReLU of the weighted
sum, resized to the image size with corner-aligned bilinear interpolation (tf-keras-vis uses
`scipy.ndimage.zoom(order=1)`, which aligns corners, and `keras.ops.image.resize` does not), and
scaled to 0..1 per image as `(m - min) / (max - min + 1e-7)`.

The gradient is the one backend-specific step (`keras_med.explain.gradients`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_med.explain.gradients import gradient_with_aux
from keras_med.models.features import feature_map_layer_name

METHODS = ("gradcam", "gradcam++")
# tf-keras-vis normalises with keras.backend.epsilon()'s default.
EPSILON = 1e-7


def corner_aligned_resize_matrix(source: int, target: int) -> np.ndarray:
    """`(target, source)` weights of 1-D bilinear interpolation with the end points aligned.

    Output pixel i samples the input at i * (source - 1) / (target - 1), as `scipy.ndimage.zoom`
    with order=1 does; resizing a map is then two matrix products, the same in every backend.
    """
    positions = np.linspace(0.0, source - 1.0, target)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, source - 1)
    fraction = positions - low
    weights = np.zeros((target, source), np.float32)
    weights[np.arange(target), low] += 1.0 - fraction
    weights[np.arange(target), high] += fraction
    return weights


class GradcamModel:
    """A model's Grad-CAM: its feature-map layer, and the linear class scores above it.

    Args:
        model: A Keras model to the contract (float32 0..255 in, a Dense `predictions` layer out).
        layer_name: The feature-map layer; None asks the model (`feature_map_layer_name`).
    """

    def __init__(self, model: keras.Model, layer_name: str | None = None):
        self.layer_name = layer_name or feature_map_layer_name(model)
        self.output_layer = model.get_layer("predictions")
        if not isinstance(self.output_layer, keras.layers.Dense):
            raise ValueError(f"Grad-CAM needs a Dense 'predictions' layer; '{model.name}' has a "
                             f"{type(self.output_layer).__name__}")
        feature_tensor = model.get_layer(self.layer_name).output
        # Keras 3 builds a functional model between any two tensors of the graph: image -> feature
        # map, and feature map -> the output layer's input. The gradient is taken at the seam, which
        # works for both backends (JAX cannot watch an intermediate tensor as a tape does).
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.features_model = keras.Model(inputs, feature_tensor, name=f"{model.name}_gradcam_features")
        self.head_model = keras.Model(feature_tensor, self.output_layer.input, name=f"{model.name}_gradcam_head")
        self.binary = self.output_layer.units == 1

    @property
    def class_count(self) -> int:
        """Classes a map can explain (binary: 2, negative and positive)."""
        return 2 if self.binary else self.output_layer.units

    def linear_scores(self, head_input, class_index):
        """`(logits (B, units), score (B,))`: the output layer without its activation, and the explained class's."""
        logits = ops.matmul(ops.cast(head_input, "float32"), ops.cast(self.output_layer.kernel, "float32"))
        if self.output_layer.use_bias:
            logits = logits + ops.cast(self.output_layer.bias, "float32")
        class_index = ops.cast(class_index, "int32")
        if self.binary:
            return logits, logits[:, 0] * ops.where(ops.equal(class_index, 1), 1.0, -1.0)
        return logits, ops.take_along_axis(logits, ops.expand_dims(class_index, 1), axis=1)[:, 0]

    def logits_and_maps(self, images, class_index, method: str = "gradcam"):
        """The linear outputs `(B, units)` and the 0..1 heat maps `(B, S, S)` of `class_index` `(B,)`.

        Args:
            images: float32 `(B, S, S, 3)` in 0..255 (S static).
            class_index: int `(B,)`: the class explained per row (binary: 0 negative, 1 positive), in range.
            method: "gradcam" or "gradcam++".
        """
        if method not in METHODS:
            raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
        feature_map = self.features_model(images, training=False)

        def total_score(features):
            logits, score = self.linear_scores(self.head_model(features, training=False), class_index)
            return ops.sum(score), (logits, score)

        gradients, (logits, scores) = gradient_with_aux(total_score, feature_map)
        # float32 under mixed precision too, as tf-keras-vis casts them.
        cam = self._cam(ops.cast(feature_map, "float32"), ops.cast(gradients, "float32"), scores, method)
        size = tuple(images.shape[1:3])
        rows = ops.convert_to_tensor(corner_aligned_resize_matrix(cam.shape[1], size[0]))
        columns = ops.convert_to_tensor(corner_aligned_resize_matrix(cam.shape[2], size[1]))
        cam = ops.einsum("hi,bij,wj->bhw", rows, cam, columns)
        low = ops.min(cam, axis=(1, 2), keepdims=True)
        high = ops.max(cam, axis=(1, 2), keepdims=True)
        return logits, (cam - low) / (high - low + EPSILON)

    @staticmethod
    def _cam(features, gradients, scores, method: str):
        spatial = (1, 2)
        if method == "gradcam":
            weights = ops.mean(gradients, axis=spatial, keepdims=True)
        else:
            # Grad-CAM++ as tf-keras-vis computes it: exp(score) makes the higher derivatives of the
            # linear score explicit.
            first = ops.exp(scores)[:, None, None, None] * gradients
            second, third = first * gradients, first * gradients * gradients
            total = ops.sum(features, axis=spatial, keepdims=True)
            denominator = 2.0 * second + third * total
            alphas = second / ops.where(denominator == 0.0, 1.0, denominator)
            norm = ops.sum(alphas, axis=spatial, keepdims=True)
            alphas = alphas / ops.where(norm == 0.0, 1.0, norm)
            weights = ops.sum(ops.relu(first) * alphas, axis=spatial, keepdims=True)
        return ops.relu(ops.sum(features * weights, axis=-1))
