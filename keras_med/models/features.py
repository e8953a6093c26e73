"""The one place that knows where a model's pooled (penultimate) features are.

The out-of-distribution guard scores these features. Models are built flat today (see
docs/contracts.md), so the features are found by layer name: the head's global pooling
(`head_pool`) or, for the custom CNN built with `flatten=True`, `head_flatten`. Issue 11 gives the
model an explicit feature layer; swap the lookup below for it then, and nothing else changes.
"""

from __future__ import annotations

import keras

FEATURE_LAYER_NAMES = ("head_pool", "head_flatten")


def feature_layer_name(model) -> str:
    """Name of the layer whose output is the model's pooled features.

    Args:
        model: A Keras model built to the contract (head layers named `head_*`).

    Returns:
        `"head_pool"` or `"head_flatten"`.
    """
    names = {layer.name for layer in model.layers}
    for name in FEATURE_LAYER_NAMES:
        if name in names:
            return name
    raise ValueError(f"the model has none of the feature layers {list(FEATURE_LAYER_NAMES)}; "
                     "the out-of-distribution guard needs the pooled features (see docs/contracts.md)")


def features_and_predictions_model(model) -> keras.Model:
    """A model with the same input answering `[predictions, features]` in one pass.

    Args:
        model: A Keras model built to the contract.

    Returns:
        A `keras.Model` sharing `model`'s layers and weights, with outputs
        `(predictions (B, C), features (B, D))`.

    Example:
    >>> both = features_and_predictions_model(model)
    >>> probabilities, features = both.predict(images)
    """
    features = model.get_layer(feature_layer_name(model)).output
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_with_features")
