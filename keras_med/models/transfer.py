"""Fine-tuning from one's own model: the backbone of a trained `.keras` file under a new head.

An X-ray backbone trained by the Kermany or CheXNet recipe is a better start for a new X-ray task
than ImageNet (torchxrayvision's users fine-tune X-ray-pretrained DenseNets the same way).
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from keras_med.models.heads import classification_head

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".keras"


def is_checkpoint(weights: str | None) -> bool:
    """Whether `weights` names a whole saved model (`.keras`) rather than a backbone weights file."""
    return bool(weights) and str(weights).lower().endswith(CHECKPOINT_SUFFIX)


def backbone_features(model: keras.Model):
    """The backbone's output in a `create_model` model: the input of its first head layer.

    The one place that knows where the backbone ends. Models built by `create_model` name their
    head layers `head_*` and the output `predictions` (see `heads.classification_head`), and every
    layer before the first of them is the backbone (with its preprocessing). Issue 11 gives the
    model an explicit `backbone` attribute (KerasHub style); this function then becomes that.

    Args:
        model: a functional model built by `create_model` (and trained, saved, reloaded).

    Returns:
        The symbolic 4-D feature map the head pooled.
    """
    for layer in model.layers:
        if layer.name.startswith("head_") or layer.name == "predictions":
            features = layer.input
            if len(features.shape) != 4:
                raise ValueError(f"{model.name}: the head's input has shape {features.shape}; expected a 4-D "
                                 "feature map (a model built by keras_med's create_model)")
            return features
    raise ValueError(f"{model.name}: no layer named head_* or 'predictions'; expected a model built by "
                     "keras_med's create_model")


def model_from_checkpoint(path: str | Path, *, output_units: int, image_size: int, task: str, dropout: float,
                          head_units: int) -> keras.Model:
    """A new model: the backbone of the model saved at `path` (its weights), and a new head.

    Args:
        path: a `.keras` file written by a keras_med run (`runs/<recipe>/<run>/checkpoints/best.keras`).
        output_units: units of the new output layer (C, or 1 for binary).
        image_size: the side the new run feeds; must be the saved model's input side.
        task: the new task (`multiclass`, `multilabel`, `binary`).
        dropout: the new head's dropout.
        head_units: the new head's hidden width (0: none).

    Returns:
        A functional model named like the saved one, whose backbone layers hold the saved weights.

    Example:
        >>> model = model_from_checkpoint("runs/kermany/x/checkpoints/best.keras", output_units=14,  # doctest: +SKIP
        ...                               image_size=64, task="multilabel", dropout=0.2, head_units=128)
    """
    import keras_med.models  # noqa: F401  (registers keras_med's custom layers for loading)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} is not a file; expected a .keras model from an earlier run "
                                "(runs/<recipe>/<run>/checkpoints/best.keras)")
    saved = keras.saving.load_model(path, compile=False)
    side = saved.input_shape[1]
    if side != image_size:
        raise ValueError(f"weights: {path} takes {side} px images; use --image-size {side} to fine-tune from it, "
                         f"got {image_size}")
    features = backbone_features(saved)
    outputs = classification_head(features, output_units=output_units, task=task, dropout=dropout,
                                  head_units=head_units)
    model = keras.Model(saved.input, outputs, name=saved.name)
    logger.info("fine-tuning from %s: its %s backbone with a new %d-unit %s head", path, saved.name,
                output_units, task)
    return model


def checkpoint_input_side(path: str | Path) -> int:
    """The image side a saved `.keras` model takes (to size a run that fine-tunes from it)."""
    import keras_med.models  # noqa: F401

    return int(keras.saving.load_model(Path(path), compile=False).input_shape[1])
