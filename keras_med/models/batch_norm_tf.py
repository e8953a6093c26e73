"""The TensorFlow-only half of `keras_med.models.batch_norm`: a training step of BatchNormalization
through `tf.compat.v1.nn.fused_batch_norm` (imported only on the TensorFlow backend)."""

from __future__ import annotations

import tensorflow as tf


def fused_batch_norm_training(layer, inputs):
    """`layer`'s training-mode output for `(B, H, W, C)` `inputs`, its moving statistics updated as
    `keras.layers.BatchNormalization` updates them."""
    # Statistics in float32 whatever the compute dtype, as Keras computes them.
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels])
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels])
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        x, scale, offset, epsilon=layer.epsilon, data_format="NHWC", is_training=True)
    # The fused kernel returns the unbiased (Bessel-corrected) batch variance; Keras averages the
    # biased one into the moving variance (tf.keras 2 undid the correction the same way).
    count = tf.cast(tf.size(x) // channels, tf.float32)
    variance = variance * (count - 1.0) / count
    momentum = layer.momentum
    layer.moving_mean.assign(tf.cast(layer.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
    layer.moving_variance.assign(tf.cast(layer.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
    return tf.cast(outputs, layer.compute_dtype)
