"""keras_med's BatchNormalization: TensorFlow's fused kernel in training, the same arithmetic as Keras's layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_med.models import create_model
from keras_med.models.batch_norm import BatchNormalization, with_fused_batch_norm


def _train_step(layer, images):
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images, training=True)
        # Weights that vary over positions too: with one weight per channel the input gradient of a
        # normalised output is zero in exact arithmetic, and only rounding would be compared.
        loss = tf.reduce_sum(outputs * tf.constant(np.random.default_rng(2).normal(size=images.shape), tf.float32))
    gradients = tape.gradient(loss, [images, *layer.trainable_variables])
    return outputs, gradients


@pytest.mark.parametrize("settings", [{}, {"momentum": 0.9, "epsilon": 1.001e-5}, {"center": False, "scale": False}])
def test_fused_training_step_equals_keras_batch_normalization(settings):
    images = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (4, 6, 5, 8)), tf.float32)
    reference, fused = keras.layers.BatchNormalization(**settings), BatchNormalization(**settings)
    for layer in (reference, fused):
        layer.build(images.shape)
    assert fused._fused_kernel_applies(images, None)
    outputs_reference, gradients_reference = _train_step(reference, images)
    outputs_fused, gradients_fused = _train_step(fused, images)
    np.testing.assert_allclose(outputs_fused, outputs_reference, atol=1e-5)
    for got, expected in zip(gradients_fused, gradients_reference):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The moving statistics move, and by Keras's rule (biased batch variance).
    assert not np.allclose(fused.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), atol=1e-5)
    # Inference mode is Keras's own code, on the updated statistics.
    np.testing.assert_allclose(fused(images, training=False), reference(images, training=False), atol=1e-5)


def test_cases_the_fused_kernel_does_not_cover_fall_back_to_keras():
    layer = BatchNormalization(axis=1)
    assert not layer._fused_kernel_applies(tf.zeros((2, 3, 4, 5)), None)
    assert not BatchNormalization()._fused_kernel_applies(tf.zeros((2, 3)), None)


def test_models_trained_from_scratch_use_it_and_pretrained_backbones_keep_keras_layer(tmp_path):
    def batch_norm_types(model):
        return {type(layer) for layer in model.backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}

    scratch = create_model("mobilenetv2", num_classes=3, image_size=32, weights=None)
    assert batch_norm_types(scratch) == {BatchNormalization}
    assert batch_norm_types(create_model("custom_cnn", num_classes=3, image_size=32)) == {BatchNormalization}
    # The clone keeps names and weights: the same predictions as the model it was cloned from.
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    cloned = with_fused_batch_norm(base)
    assert [layer.name for layer in cloned.layers[1:]] == [layer.name for layer in base.layers[1:]]
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(cloned(images, training=False), base(images, training=False), atol=1e-6)
    # Saved and reloaded like any keras_med model.
    scratch.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert batch_norm_types(reloaded) == {BatchNormalization}
    np.testing.assert_allclose(reloaded(images * 127 + 128), scratch(images * 127 + 128), atol=1e-5)
