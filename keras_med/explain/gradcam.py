"""Grad-CAM and Grad-CAM++ heatmaps with tf-keras-vis, on the model's feature map.

The layer is the one the model names (`ImageClassifier.feature_map_layer`, the backbone's output;
`keras_med.models.features.feature_map_layer_name`).

tf-keras-vis 0.8.7 works with Keras 3.15 / TensorFlow 2.21 (checked: `Gradcam` and
`GradcamPlusPlus` with the `ReplaceToLinear` modifier run on a Keras 3 functional model), so
the library is used as is. It is TensorFlow-specific, which is why it lives in this package only;
on the JAX backend the same formulas run on `keras.ops` and `jax.grad` (`gradcam_jax.py`).
"""

from __future__ import annotations


import keras
import numpy as np
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore

from keras_med.models.features import feature_map_layer_name

METHODS = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}


def _score(model: keras.Model, class_indices: np.ndarray):
    """The score Grad-CAM differentiates: the class's (linearised) output for each image.

    A binary model has one sigmoid output (the positive class, index 1 in `[negative, positive]`);
    its negative class is explained through the negated logit.
    """
    if model.outputs[0].shape[-1] == 1:
        signs = np.where(class_indices == 1, 1.0, -1.0).astype(np.float32)
        return lambda output: output[:, 0] * signs
    return CategoricalScore(class_indices.tolist())


def compute_gradcam(model: keras.Model, images, class_index=None, method: str = "gradcam",
                    layer_name: str | None = None) -> np.ndarray:
    """Class activation heatmaps in 0..1 with the images' size.

    Args:
        model: a Keras model whose output layer gives class probabilities.
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
    if keras.backend.backend() == "jax":
        from keras_med.explain.gradcam_jax import compute_gradcam_jax

        return compute_gradcam_jax(model, images, indices, method, layer_name)
    # clone=True: ReplaceToLinear edits the output activation, and the caller's model must keep its softmax.
    explainer = METHODS[method](model, model_modifier=ReplaceToLinear(), clone=True)
    heatmaps = explainer(_score(model, indices), images, penultimate_layer=layer_name,
                         seek_penultimate_conv_layer=False)
    return np.asarray(heatmaps, dtype=np.float32).reshape(images.shape[:3])
