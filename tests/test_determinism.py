"""Reproducible runs: a seeded augmentation stream that does not depend on thread timing, and a
seeded demo run that repeats bit for bit."""

import numpy as np
import tensorflow as tf

from keras_med.data.pipeline import finish_pipeline


def _augmented_epochs(num_parallel_calls, seed=3, epochs=2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 24, 24, 3), dtype=np.uint8)
    targets = np.eye(3, dtype="float32")[np.arange(48) % 3]
    batches = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    dataset = finish_pipeline(batches, True, "dermoscopy", 0.2, 1.0, seed, num_parallel_calls=num_parallel_calls)
    return images, [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(epochs)]


def test_the_augmentation_stream_is_the_same_for_one_call_and_autotune_and_new_each_epoch():
    images, serial = _augmented_epochs(1)
    _, parallel = _augmented_epochs(tf.data.AUTOTUNE)
    for serial_epoch, parallel_epoch in zip(serial, parallel):
        for (serial_x, serial_y), (parallel_x, parallel_y) in zip(serial_epoch, parallel_epoch):
            np.testing.assert_array_equal(serial_x, parallel_x)
            np.testing.assert_array_equal(serial_y, parallel_y)
    first, second = (np.concatenate([x for x, _ in epoch]) for epoch in serial)
    assert not np.array_equal(first, images.astype("float32")), "the images should be augmented"
    assert not np.array_equal(first, second), "each epoch should see new variants"
    _, other_seed = _augmented_epochs(tf.data.AUTOTUNE, seed=4, epochs=1)
    assert not np.array_equal(first, np.concatenate([x for x, _ in other_seed[0]]))
