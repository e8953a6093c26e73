"""The one backend-specific step of Grad-CAM: the gradient of a score with respect to a feature map.

Everything else of Grad-CAM is `keras.ops` (`keras_med.explain.cam`); Keras 3 has no public
backend-agnostic gradient, so each backend's own is called here: `tf.GradientTape` (also while a
SavedModel's signature is traced) and `jax.grad`.
"""

from __future__ import annotations

import keras


def gradient_with_aux(score_fn, feature_map):
    """`(d total / d feature_map, aux)` where `score_fn(feature_map)` returns `(total, aux)`, total a scalar.

    Args:
        score_fn: A function of the feature map returning a scalar and any auxiliary value.
        feature_map: The tensor differentiated against.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_gradient(score_fn, feature_map)
    if backend == "jax":
        return _jax_gradient(score_fn, feature_map)
    raise NotImplementedError(f"Grad-CAM needs the tensorflow or jax backend, not {backend!r}")


def _tensorflow_gradient(score_fn, feature_map):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(feature_map)
        total, aux = score_fn(feature_map)
    return tape.gradient(total, feature_map), aux


def _jax_gradient(score_fn, feature_map):
    import jax

    return jax.grad(score_fn, has_aux=True)(feature_map)
