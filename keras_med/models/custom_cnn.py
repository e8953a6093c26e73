"""The sources' custom CNN: Conv-BN-ReLU-MaxPool blocks with growing filters, then a Dense head.

The blocks are the classifier's backbone (layers `block{N}_*`, one block each for
`keras_med.models.blocks`); the input is scaled to 0..1 by the classifier's preprocessing.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_med.models.batch_norm import BatchNormalization
from keras_med.models.classifier import ImageClassifier
from keras_med.models.preprocessing import preprocessing_layer
from keras_med.models.registry import register_model


def build_custom_cnn(*, output_units: int, image_size: int, task: str, dropout: float = 0.3,
                     head_units: int = 256, width: float = 1.0, filters: tuple[int, ...] = (32, 64, 128, 256),
                     flatten: bool = False, name: str = "custom_cnn") -> ImageClassifier:
    """Build the custom CNN.

    Args:
        output_units: Units of the output layer.
        image_size: Input side in pixels; must survive len(filters) halvings.
        task: "multiclass", "multilabel" or "binary".
        dropout: Head dropout rate.
        head_units: Head hidden Dense width.
        width: Multiplier on every block's filters.
        filters: Filters of each block; one MaxPool halving per block.
        flatten: Flatten the last feature map instead of global average pooling.
        name: Model name.
    """
    if image_size // 2 ** len(filters) < 1:
        raise ValueError(f"image_size: {image_size}px is too small for {len(filters)} pooling blocks")
    inputs = keras.Input(shape=(image_size, image_size, 3), name="scaled_images")
    x = inputs
    for index, block_filters in enumerate(filters, start=1):
        x = layers.Conv2D(max(1, int(round(block_filters * width))), 3, padding="same", use_bias=False,
                          name=f"block{index}_conv")(x)
        # momentum 0.9 rather than Keras's 0.99: medical sets are small, epochs are a few dozen
        # steps, and with 0.99 the moving statistics lag so far that validation (inference
        # mode) looks collapsed for the first epochs.
        x = BatchNormalization(momentum=0.9, name=f"block{index}_bn")(x)
        x = layers.ReLU(name=f"block{index}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
    backbone = keras.Model(inputs, x, name=f"{name}_backbone")
    return ImageClassifier(backbone, output_units=output_units, image_size=image_size, task=task,
                           preprocessing=preprocessing_layer("unit"), pooling="flatten" if flatten else "avg",
                           dropout=dropout, head_units=head_units, feature_dropout=False, name=name)


@register_model("custom_cnn", pretrained=False, has_width=True)
def custom_cnn(*, output_units, image_size, task, weights, dropout, head_units, width):
    """Four Conv-BN-ReLU-MaxPool blocks (32, 64, 128, 256 filters) and a GAP-Dense-Dropout head."""
    return build_custom_cnn(output_units=output_units, image_size=image_size, task=task, dropout=dropout,
                            head_units=head_units, width=width)
