"""The parts of a trained model the rest of keras_med asks for: Grad-CAM's layer and the guard's features.

An `ImageClassifier` knows them (`feature_map_layer`, `pooled_features`); a flat model of the old
layout is read by `keras_med.models.legacy`. Callers never look at layer names themselves.
"""

from __future__ import annotations

import keras

import keras_med.models.legacy as legacy
from keras_med.models.classifier import ImageClassifier


def feature_map_layer_name(model: keras.Model) -> str:
    """Name of the layer whose output is the feature map Grad-CAM explains.

    Args:
        model: An `ImageClassifier` (its `feature_map` layer), or a flat functional model (its last
            4-D layer before the last global pooling or flatten layer).
    """
    if isinstance(model, ImageClassifier):
        return model.feature_map_layer.name
    return legacy.last_conv_layer(model)


def guard_features_source(model: keras.Model) -> str:
    """What the out-of-distribution guard of `model` scores: `middle_block` or `pooled`.

    An `ImageClassifier` answers (`ImageClassifier.guard_features_source`); a flat model of the old
    layout has only its pooled features.
    """
    return model.guard_features_source() if isinstance(model, ImageClassifier) else "pooled"


def features_and_predictions_model(model: keras.Model, features: str | None = None) -> keras.Model:
    """A model with the same input answering `[predictions, features]` in one pass.

    Args:
        model: An `ImageClassifier`, or a flat model of the old layout (`head_pool`/`head_flatten`).
        features: `middle_block` or `pooled` (see `ImageClassifier.features_and_predictions_model`);
            None: `guard_features_source(model)`. A guard fitted on one is scored on the same.

    Returns:
        A `keras.Model` sharing `model`'s layers and weights, with outputs
        `(predictions (B, C), features (B, D))`.

    Example:
    >>> both = features_and_predictions_model(model)
    >>> probabilities, features = both.predict(images)
    """
    features = features or guard_features_source(model)
    if isinstance(model, ImageClassifier):
        return model.features_and_predictions_model(features)
    if features != "pooled":
        raise ValueError(f"features: a flat model of the old layout has only its pooled features, got {features!r}")
    return keras.Model(model.inputs, [model.outputs[0], legacy.pooled_features(model)],
                       name=f"{model.name}_with_features")
