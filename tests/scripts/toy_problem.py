"""The small training problem of two_replicas.py (one vs two replicas, exact to float32 rounding).

Imported by name: a script run as `python tests/scripts/x.py` has this folder first on sys.path.
"""

import keras
import numpy as np
import tensorflow as tf  # tf.data feeds every backend


def toy_dataset() -> tf.data.Dataset:
    """64 random 16x16 images of 3 classes, class 0 brighter at the top, in batches of 16."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[np.arange(64) % 3]
    images[labels[:, 0] == 1, :8] += 60.0
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


def toy_model() -> keras.Model:
    """A one-convolution classifier; build it inside the runtime's scope."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="head_dense")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)
