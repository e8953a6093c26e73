"""Grad-CAM and Grad-CAM++ heat maps for a batch of images, on the feature map the model names.

Grad-CAM is the project's one `keras.ops` implementation (`keras_med.explain.cam.GradcamModel`,
the same function the served `explain` signature traces), on every backend. Grad-CAM++ is
tf-keras-vis's on TensorFlow and the `keras.ops` formula on JAX, where tf-keras-vis's
`tf.GradientTape` cannot see the model's arrays. tf-keras-vis also stays as the reference the
tests hold the `keras.ops` version to (`reference_gradcam`).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_med.explain.cam import METHODS, GradcamModel
from keras_med.models.features import feature_map_layer_name


def compute_gradcam(model: keras.Model, images, class_index=None, method: str = "gradcam",
                    layer_name: str | None = None) -> np.ndarray:
    """Class activation heatmaps in 0..1 with the images' size.

    Args:
        model: a Keras model whose Dense `predictions` layer gives class probabilities.
        images: float `(N, S, S, 3)` images in 0..255 (or one `(S, S, 3)` image).
        class_index: the class explained, one int for all images or one per image; None explains
            each image's predicted class (binary: index 1 when the probability is at least 0.5).
        method: "gradcam" or "gradcam++".
        layer_name: the feature-map layer; None asks the model (`feature_map_layer_name`).

    Returns:
        `(N, S, S)` float32 heatmaps, each normalised to 0..1.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected (N, S, S, 3) or (S, S, 3) arrays, got shape {images.shape}")
    n_outputs = model.outputs[0].shape[-1]
    if class_index is None:
        probabilities = np.asarray(model.predict(images, verbose=0))
        indices = (probabilities[:, 0] >= 0.5).astype(np.int64) if n_outputs == 1 else probabilities.argmax(axis=1)
    else:
        indices = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (images.shape[0],)).copy()
    n_classes = 2 if n_outputs == 1 else n_outputs
    if indices.min() < 0 or indices.max() >= n_classes:
        raise ValueError(f"class_index: expected class indices in 0..{n_classes - 1}, got {indices.tolist()}")
    layer_name = layer_name or feature_map_layer_name(model)
    if method == "gradcam++" and keras.backend.backend() == "tensorflow":
        return reference_gradcam(model, images, indices, method, layer_name)
    _, heatmaps = GradcamModel(model, layer_name).logits_and_maps(images, indices.astype(np.int32), method)
    return np.asarray(keras.ops.convert_to_numpy(heatmaps), dtype=np.float32)


def reference_gradcam(model: keras.Model, images: np.ndarray, class_indices: np.ndarray, method: str,
                      layer_name: str) -> np.ndarray:
    """tf-keras-vis's `Gradcam` / `GradcamPlusPlus` (TensorFlow backend), `(N, S, S)` in 0..1.

    Args:
        model: The Keras model.
        images: float32 `(N, S, S, 3)` in 0..255.
        class_indices: int `(N,)`, the class each image is explained for.
        method: "gradcam" or "gradcam++".
        layer_name: The feature-map layer.
    """
    # Imported here: tf-keras-vis is TensorFlow-only and only this reference and Grad-CAM++ need it.
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if model.outputs[0].shape[-1] == 1:
        # A binary model's one sigmoid output is the positive class (index 1); the negative class
        # is explained through the negated logit.
        signs = np.where(np.asarray(class_indices) == 1, 1.0, -1.0).astype(np.float32)

        def score(output):
            return output[:, 0] * signs
    else:
        score = CategoricalScore(np.asarray(class_indices).tolist())
    explainer = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}[method]
    # clone=True: ReplaceToLinear edits the output activation, and the caller's model must keep its softmax.
    heatmaps = explainer(model, model_modifier=ReplaceToLinear(), clone=True)(
        score, images, penultimate_layer=layer_name, seek_penultimate_conv_layer=False)
    return np.asarray(heatmaps, dtype=np.float32).reshape(images.shape[:3])
