"""--augment-on: augmentation and MixUp/CutMix in the training step (device) instead of tf.data (host)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_med.config import DataConfig, RecipeConfig
from keras_med.data.pipeline import batch_augmentation
from keras_med.engine.run import fit_arguments
from keras_med.models import create_model
from keras_med.training import fit_model
from keras_med.training.runtime import augment_on_device, prepare_train_step

AUGMENTATION_LAYERS = (keras.layers.Pipeline, keras.layers.MixUp, keras.layers.CutMix, keras.layers.RandomFlip,
                       keras.layers.RandomRotation)


def _dense_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    return model


def test_the_training_step_trains_on_the_augmented_batch_and_does_not_stack_wrappers():
    model = _dense_model()
    images = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    targets = np.eye(2, dtype="float32")[np.arange(8) % 2]
    probabilities = model.predict(images, verbose=0)
    loss = keras.losses.CategoricalCrossentropy()
    # A deterministic stand-in for augmentation: the step must see swapped targets.
    prepare_train_step(model, lambda batch, labels: (batch, labels[:, ::-1]))
    swapped = model.train_on_batch(images, targets, return_dict=True)["loss"]
    assert swapped == pytest.approx(float(loss(targets[:, ::-1], probabilities)), rel=1e-5)
    prepare_train_step(model)
    plain = model.train_on_batch(images, targets, return_dict=True)["loss"]
    assert plain == pytest.approx(float(loss(targets, probabilities)), rel=1e-5)


def test_batch_augmentation_mixes_one_hot_targets_inside_a_compiled_function():
    augmentation = batch_augmentation("light", mixup=0.4, cutmix=1.0, seed=0)
    images = tf.random.uniform((16, 16, 16, 3), 0, 255, seed=1)
    targets = tf.one_hot(tf.range(16) % 3, 3)
    mixed_images, mixed = tf.function(augmentation)(images, targets)
    mixed = mixed.numpy()
    assert mixed_images.shape == images.shape and 0.0 <= float(tf.reduce_min(mixed_images))
    assert float(tf.reduce_max(mixed_images)) <= 255.0
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
    assert ((mixed > 0.01) & (mixed < 0.99)).any(), "some targets should be mixtures"
    assert batch_augmentation("none") is None


def test_augment_on_resolves_auto_to_the_host_without_a_gpu():
    assert augment_on_device(DataConfig(augment_on="device"))
    assert not augment_on_device(DataConfig(augment_on="host"))
    assert not augment_on_device(DataConfig(augment_on="auto")), "this machine has no GPU"
    with pytest.raises(ValueError, match="augment_on"):
        augment_on_device(DataConfig(augment_on="gpu"))


def test_device_augmentation_trains_and_leaves_the_model_free_of_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2
    images = (rng.uniform(0, 80, (32, 32, 32, 3)) + 150 * labels[:, None, None, None]).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.eye(2, dtype="float32")[labels])).batch(8)
    config = RecipeConfig.from_dict({
        "data": {"augment": "dermoscopy", "mixup": 0.2, "augment_on": "device"},
        "model": {"model": "custom_cnn", "weights": "none"},
        "train": {"plan": "scratch", "epochs": 2, "patience": 5, "learning_rate": 3e-3}})

    def plain_model():
        keras.utils.set_random_seed(0)
        return create_model("custom_cnn", num_classes=2, image_size=32, weights=None, head_units=16, dropout=0.1)

    model = plain_model()
    history = fit_model(model, dataset, dataset, tmp_path, **fit_arguments(config), augment_in_step=config.data)
    assert history["epoch"].tolist() == [0, 1] and np.isfinite(history["loss"]).all()
    best = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    # The checkpoint (what export and inference load) is the architecture of the host path, layer
    # for layer, and answers exactly as the trained model does.
    plain = plain_model()
    assert [type(layer) for layer in best.layers] == [type(layer) for layer in plain.layers]
    assert not any(isinstance(layer, AUGMENTATION_LAYERS) for layer in best._flatten_layers())
    np.testing.assert_allclose(best.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
