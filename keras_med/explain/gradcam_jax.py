"""Grad-CAM and Grad-CAM++ on the JAX backend, with `keras.ops` and `jax.grad`.

tf-keras-vis differentiates with `tf.GradientTape`, which cannot see a JAX model's arrays, so on
JAX the same two formulas are computed here (Selvaraju et al. 2017; Chattopadhay et al. 2018, in
tf-keras-vis's form: the class score linearised, ReLU on the map, bilinear upsampling, min-max
normalisation per image). Computing it in place was chosen over reloading the `.keras` file
under TensorFlow because one process cannot hold two Keras backends.
"""

from __future__ import annotations

import jax
import keras
import numpy as np
from keras import ops


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    names = [layer.name for layer in model.layers]
    return model.get_layer("predictions") if "predictions" in names else model.layers[-1]


def _linear_scores(output_layer, features_in, class_indices: np.ndarray):
    """The explained class's score before the output activation (tf-keras-vis's ReplaceToLinear).

    A binary model's one sigmoid unit explains the positive class (index 1) by its logit and the
    negative class by the negated logit, as in `keras_med.explain.gradcam`.
    """
    logits = ops.matmul(features_in, output_layer.kernel) + output_layer.bias
    if logits.shape[-1] == 1:
        signs = np.where(class_indices == 1, 1.0, -1.0).astype(np.float32)
        return logits[:, 0] * signs
    return ops.take_along_axis(logits, ops.convert_to_tensor(class_indices[:, None]), axis=1)[:, 0]


def _cam(features, grads, scores, method: str):
    spatial = (1, 2)
    if method == "gradcam":
        weights = ops.mean(grads, axis=spatial, keepdims=True)
    else:
        # Grad-CAM++: exp(score) makes the higher derivatives of the linearised score explicit.
        first = ops.exp(scores)[:, None, None, None] * grads
        second, third = first * grads, first * grads * grads
        total = ops.sum(features, axis=spatial, keepdims=True)
        denominator = 2.0 * second + third * total
        alphas = second / ops.where(denominator == 0.0, 1.0, denominator)
        norm = ops.sum(alphas, axis=spatial, keepdims=True)
        alphas = alphas / ops.where(norm == 0.0, 1.0, norm)
        weights = ops.sum(ops.relu(first) * alphas, axis=spatial, keepdims=True)
    return ops.relu(ops.sum(features * weights, axis=-1))


def compute_gradcam_jax(model: keras.Model, images: np.ndarray, class_indices: np.ndarray, method: str,
                        layer_name: str) -> np.ndarray:
    """Heatmaps `(N, S, S)` in 0..1 for `images` `(N, S, S, 3)`, on the JAX backend.

    Args:
        model: The model (its output layer a Dense layer named `predictions`, as `create_model` builds).
        images: float32 images 0..255.
        class_indices: int array `(N,)`, the class each image is explained for.
        method: 'gradcam' or 'gradcam++'.
        layer_name: The feature-map layer.
    """
    output_layer = _output_layer(model)
    feature_tensor = model.get_layer(layer_name).output
    # Keras 3 builds a functional model between any two tensors of the graph: the image -> feature
    # map part and the feature map -> output layer's input part.
    features = keras.Model(model.inputs, feature_tensor)(images, training=False)
    tail = keras.Model(feature_tensor, output_layer.input)

    def total_score(feature_map):
        head_input = tail(feature_map, training=False)
        return ops.sum(_linear_scores(output_layer, head_input, class_indices)), head_input

    grads, head_input = jax.grad(total_score, has_aux=True)(features)
    scores = _linear_scores(output_layer, head_input, class_indices)
    # float32 under mixed precision too, as tf-keras-vis casts them
    cam = _cam(ops.cast(features, "float32"), ops.cast(grads, "float32"), ops.cast(scores, "float32"), method)
    size = images.shape[1:3]
    cam = ops.image.resize(cam[..., None], size, interpolation="bilinear")[..., 0]
    low = ops.min(cam, axis=(1, 2), keepdims=True)
    high = ops.max(cam, axis=(1, 2), keepdims=True)
    return np.asarray((cam - low) / (high - low + keras.config.epsilon()), dtype=np.float32)
