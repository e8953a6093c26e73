"""Models of the old layout: flat functional models whose head layers are named `head_*`.

Checkpoints written before `ImageClassifier` existed are one flat functional
model: the backbone's layers built in with `input_tensor=`, head layers named `head_*`, the output
layer `predictions`. They still load, predict, evaluate, explain, export and serve as backbones for
`--weights old.keras`; the three lookups below are the only code that reads their layer names.
Training a loaded old-layout model further (its freezing) needs an `ImageClassifier`: fine-tune
from it with `--weights old.keras` instead, which builds one around its backbone.
"""

from __future__ import annotations

import keras

HEAD_PREFIX = "head_"
OUTPUT_LAYER = "predictions"
POOLED_FEATURE_LAYERS = ("head_pool", "head_flatten")
_FLATTENING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten)


def is_head_layer(layer) -> bool:
    """A head layer of the old layout: `head_*` or `predictions`."""
    return layer.name.startswith(HEAD_PREFIX) or layer.name == OUTPUT_LAYER


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last layer with a 4-D output before the model's last global pooling or flatten layer.

    The layer list of a flat functional model is in graph order; the head's pooling is the *last*
    pooling layer (EfficientNet's squeeze-and-excitation blocks pool too, much earlier).
    """
    layers = model.layers
    pooling = [index for index, layer in enumerate(layers) if isinstance(layer, _FLATTENING)]
    end = pooling[-1] if pooling else len(layers)
    for layer in reversed(layers[:end]):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if hasattr(layer.output, "shape") and len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model: expected a convolutional model with a 4-D feature map before the global "
                     f"pooling or flatten layer; found none in '{model.name}'")


def pooled_features(model: keras.Model):
    """The output of the head's pooling layer (`head_pool`, or `head_flatten`)."""
    names = {layer.name for layer in model.layers}
    for name in POOLED_FEATURE_LAYERS:
        if name in names:
            return model.get_layer(name).output
    raise ValueError(f"'{model.name}' is neither a keras_med ImageClassifier nor a flat model with one of the "
                     f"feature layers {list(POOLED_FEATURE_LAYERS)}; the out-of-distribution guard needs the "
                     "pooled features (see docs/contracts.md)")


def backbone(model: keras.Model) -> keras.Model:
    """The old model's backbone with its preprocessing: its input up to the input of the first head layer.

    Args:
        model: A flat model of the old layout (trained, saved, reloaded).

    Returns:
        A functional `keras.Model` sharing the old model's layers and weights, answering the 4-D
        feature map the old head pooled.
    """
    for layer in model.layers:
        if is_head_layer(layer):
            features = layer.input
            if len(features.shape) != 4:
                raise ValueError(f"{model.name}: the head's input has shape {features.shape}; expected a 4-D "
                                 "feature map (a model built by keras_med's create_model)")
            return keras.Model(model.inputs, features, name=f"{model.name}_backbone")
    raise ValueError(f"{model.name}: neither a keras_med ImageClassifier nor a flat model with head_* layers; "
                     "expected a model built by keras_med's create_model")
