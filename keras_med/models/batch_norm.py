"""BatchNormalization that trains with TensorFlow's fused kernel when the backend is TensorFlow.

Why our own layer: Keras 3.15 computes a training-mode BatchNormalization from `ops.moments` and
separate element-wise ops on every backend (no fused path, unlike tf.keras 2). On the 2-core CPU
that was most of MobileNetV2's training step from scratch (47 images/s against 117 with BatchNorm
frozen) and kept it below PyTorch; TensorFlow's fused kernel does the forward and backward pass of
a (32, 64, 64, 96) activation 2.8x faster (docs/lab_notes.md, "Training throughput"). The arithmetic is
the same up to float32 rounding (tests/test_models_batch_norm.py). Inference mode, other backends
(JAX) and the cases the fused kernel does not cover (masks, renorm, synchronized statistics, inputs
other than 4-D channels-last) run Keras's own code, so the layer is Keras's everywhere else.

Models whose BatchNormalization trains use it: the custom CNN, and keras.applications backbones
built without pretrained weights (`with_fused_batch_norm`). Pretrained backbones keep Keras's layer:
every keras_med plan keeps their BatchNormalization frozen (`ImageClassifier.unfreeze_top`).
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_med")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, trained with TensorFlow's fused kernel on that backend."""

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self._fused_kernel_applies(inputs, mask):
            from keras_med.models.batch_norm_tf import fused_batch_norm_training

            return fused_batch_norm_training(self, inputs)
        return super().call(inputs, training=training, mask=mask)

    def _fused_kernel_applies(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """`model` (a functional model) with every `keras.layers.BatchNormalization` replaced by this module's
    layer: same names, configuration and weights."""

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    if not any(type(layer) is keras.layers.BatchNormalization for layer in model.layers):
        return model
    cloned = keras.models.clone_model(model, clone_function=clone)
    cloned.set_weights(model.get_weights())
    return cloned
