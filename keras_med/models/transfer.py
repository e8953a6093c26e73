"""Fine-tuning from one's own model: the backbone of a trained `.keras` file under a new head.

An X-ray backbone trained by the Kermany or CheXNet recipe is a better start for a new X-ray task
than ImageNet (torchxrayvision's users fine-tune X-ray-pretrained DenseNets the same way).
"""

from __future__ import annotations

import logging
from pathlib import Path

from keras_med.models.classifier import ImageClassifier
from keras_med.models.saving import load_keras_model

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".keras"


def is_checkpoint(weights: str | None) -> bool:
    """Whether `weights` names a whole saved model (`.keras`) rather than a backbone weights file."""
    return bool(weights) and str(weights).lower().endswith(CHECKPOINT_SUFFIX)


def model_from_checkpoint(path: str | Path, *, output_units: int, image_size: int, task: str, dropout: float,
                          head_units: int) -> ImageClassifier:
    """A new classifier: the backbone (and preprocessing) of the model saved at `path`, and a new head.

    Args:
        path: a `.keras` file written by a keras_med run (`runs/<recipe>/<run>/checkpoints/best.keras`), an
            `ImageClassifier`.
        output_units: units of the new output layer (C, or 1 for binary).
        image_size: the side the new run feeds; must be the saved model's input side.
        task: the new task (`multiclass`, `multilabel`, `binary`).
        dropout: the new head's dropout.
        head_units: the new head's hidden width (0: none).

    Returns:
        An `ImageClassifier` named like the saved model, whose backbone holds the saved weights.

    Example:
        >>> model = model_from_checkpoint("runs/kermany/x/checkpoints/best.keras", output_units=14,  # doctest: +SKIP
        ...                               image_size=64, task="multilabel", dropout=0.2, head_units=128)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} is not a file; expected a .keras model from an earlier run "
                                "(runs/<recipe>/<run>/checkpoints/best.keras)")
    saved = load_keras_model(path)
    side = saved.input_shape[1]
    if side != image_size:
        raise ValueError(f"weights: {path} takes {side} px images; use --image-size {side} to fine-tune from it, "
                         f"got {image_size}")
    if not isinstance(saved, ImageClassifier):
        raise ValueError(f"weights: {path} holds a {type(saved).__name__}; expected a keras_med ImageClassifier "
                         "(a checkpoint written by a keras_med run)")
    model = ImageClassifier(saved.backbone, output_units=output_units, image_size=image_size, task=task,
                            preprocessing=saved.preprocessing, pooling=saved.pooling, dropout=dropout,
                            head_units=head_units, name=saved.name)
    logger.info("fine-tuning from %s: its %s backbone with a new %d-unit %s head", path, saved.name,
                output_units, task)
    return model


def checkpoint_input_side(path: str | Path) -> int:
    """The image side a saved `.keras` model takes (to size a run that fine-tunes from it)."""
    return int(load_keras_model(Path(path)).input_shape[1])
