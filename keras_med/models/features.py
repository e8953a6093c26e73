"""The parts of a trained model the rest of keras_med asks for: Grad-CAM's layer and the guard's features.

An `ImageClassifier` knows them (`feature_map_layer`, `features_and_predictions_model`); these
functions ask it, and refuse any other model in one line. Callers never look at layer names themselves.
"""

from __future__ import annotations

import keras

from keras_med.models.classifier import ImageClassifier


def _require_classifier(model: keras.Model) -> ImageClassifier:
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"model: expected a keras_med ImageClassifier (a model built by create_model), got "
                         f"{type(model).__name__} '{model.name}'")
    return model


def feature_map_layer_name(model: keras.Model) -> str:
    """Name of the layer whose output is the feature map Grad-CAM explains.

    Args:
        model: An `ImageClassifier` (its `feature_map` layer).
    """
    return _require_classifier(model).feature_map_layer.name


def guard_features_source(model: keras.Model) -> str:
    """What the out-of-distribution guard of `model` scores: `middle_block` or `pooled`
    (`ImageClassifier.guard_features_source`)."""
    return _require_classifier(model).guard_features_source()


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
    return _require_classifier(model).features_and_predictions_model(features or guard_features_source(model))
