"""The parts of a trained model the rest of keras_med asks for: Grad-CAM's layer and the guard's features.

An `ImageClassifier` knows them (`feature_map_layer`, `pooled_features`); callers never look at
layer names themselves.
"""

from __future__ import annotations

import keras

from keras_med.models.classifier import ImageClassifier


def feature_map_layer_name(model: keras.Model) -> str:
    """Name of the layer whose output is the feature map Grad-CAM explains.

    Args:
        model: An `ImageClassifier` (its `feature_map` layer).
    """
    return _classifier(model).feature_map_layer.name


def _classifier(model: keras.Model) -> ImageClassifier:
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"model: expected a keras_med ImageClassifier, got a {type(model).__name__} "
                         f"({model.name!r}); build it with keras_med.models.create_model")
    return model


def guard_features_source(model: keras.Model) -> str:
    """What the out-of-distribution guard of `model` scores: `middle_block` or `pooled`.

    An `ImageClassifier` answers (`ImageClassifier.guard_features_source`).
    """
    return _classifier(model).guard_features_source()


def features_and_predictions_model(model: keras.Model, features: str | None = None) -> keras.Model:
    """A model with the same input answering `[predictions, features]` in one pass.

    Args:
        model: An `ImageClassifier`.
        features: `middle_block` or `pooled` (see `ImageClassifier.features_and_predictions_model`);
            None: `guard_features_source(model)`. A guard fitted on one is scored on the same.

    Returns:
        A `keras.Model` sharing `model`'s layers and weights, with outputs
        `(predictions (B, C), features (B, D))`.

    Example:
    >>> both = features_and_predictions_model(model)
    >>> probabilities, features = both.predict(images)
    """
    return _classifier(model).features_and_predictions_model(features or guard_features_source(model))
