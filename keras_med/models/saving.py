"""Loading a `.keras` model the way `keras.saving` does, with every class keras_med saves known.

The one model-loading function of the package (as `keras.saving` is Keras's): evaluation, export,
explanation, fine-tuning and the run directory all load a checkpoint through `load_keras_model`.
Importing this module registers every custom object a keras_med `.keras` file names: the
`ImageClassifier`, its layers (`ReverseChannels`, `ShadesOfGray`, the fused `BatchNormalization`),
and the losses and metrics of its compile config (`BalancedAccuracy`, ...); `import keras_med`
imports it, so `keras.saving.load_model("best.keras")` works after `import keras_med` alone.

Example:
    >>> model = load_keras_model("runs/ham10000/20250101-120000/checkpoints/best.keras")
"""

from __future__ import annotations

from pathlib import Path

import keras

# Imported for their registration with Keras's serialisation (`register_keras_serializable`).
import keras_med.models.batch_norm  # noqa: F401
import keras_med.models.classifier  # noqa: F401
import keras_med.models.preprocessing  # noqa: F401
import keras_med.training.losses  # noqa: F401
import keras_med.training.metrics  # noqa: F401
from keras_med.errors import RunContentError, RunFileError
from keras_med.keras_files import LOAD_ERRORS, describe_load_error


def require_keras_file(model_path: str | Path) -> Path:
    """`model_path` as a Path when it is an existing `.keras` file; a RunFileError otherwise."""
    model_path = Path(model_path)
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise RunFileError(f"{model_path}: expected an existing .keras file such as "
                           "runs/<recipe>/<stamp>/checkpoints/best.keras")
    return model_path


def load_keras_model(model_path: str | Path, compile: bool = False):
    """Load a `.keras` file with every custom object keras_med registers.

    Args:
        model_path: the `.keras` file.
        compile: False (the default) loads it for inference, without its training-only losses
            and metrics; True restores its compile config too (to train it further).

    Raises:
        RunFileError: no such file, or not a `.keras` file.
        RunContentError: Keras cannot read it (a torn or foreign file).
    """
    model_path = require_keras_file(model_path)
    try:
        return keras.saving.load_model(model_path, compile=compile)
    except LOAD_ERRORS as error:
        raise RunContentError(describe_load_error(model_path, error)) from error
