"""The classification head shared by every model, and the output layer's activation per task."""

from __future__ import annotations

import keras
from keras import layers

OUTPUT_ACTIVATIONS = {"multiclass": "softmax", "multilabel": "sigmoid", "binary": "sigmoid"}


def classification_head(features, *, output_units: int, task: str, dropout: float, head_units: int,
                        pool: bool = True, input_dropout: bool = True):
    """Head of the sources: GlobalAveragePooling, Dropout, Dense, ReLU, Dropout, Dense(out).

    Layers are named `head_*` so a fit plan can train "only the head", and the output layer is
    `predictions` with dtype float32 so probabilities stay float32 under mixed precision.

    Args:
        features: 4D feature map (pooled here) or 2D features when `pool=False`.
        output_units: Units of the output layer (C, or 1 for binary).
        task: "multiclass", "multilabel" or "binary"; picks softmax or sigmoid.
        dropout: Dropout rate used before and after the hidden Dense layer.
        head_units: Hidden Dense width; 0 leaves the hidden layer out.
        pool: Apply GlobalAveragePooling2D first.
        input_dropout: Apply Dropout on the pooled features (the custom CNN's head does not).
    """
    x = features
    if pool:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    if input_dropout and dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout_in")(x)
    if head_units > 0:
        x = layers.Dense(head_units, name="head_dense")(x)
        x = layers.ReLU(name="head_relu")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(output_units, activation=OUTPUT_ACTIVATIONS[task], dtype="float32",
                        name="predictions")(x)


def image_input(image_size: int) -> keras.KerasTensor:
    """The model input: float32 images in 0..255, (S, S, 3)."""
    return keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="images")
