"""What a model's `weights` argument may be, and the error when ImageNet weights cannot be had.

A leaf module: the registry, the Keras Applications backbones and the KerasHub builder share it
without importing one another.
"""

from __future__ import annotations

from pathlib import Path

from keras_med.errors import ConfigError, UserError


class WeightsUnavailableError(UserError, RuntimeError):
    """ImageNet weights could not be downloaded (e.g. an offline machine); the message says where to put them."""


def normalize_weights(weights: str | None) -> str | None:
    """Map the `weights` argument to None, "imagenet" or an existing file path.

    Args:
        weights: "imagenet", a path to a weights file, or None / "none" / "" for random init.
    """
    if weights is None or str(weights).strip().lower() in ("", "none"):
        return None
    if weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"weights: expected 'imagenet', 'none' or a path to a weights file; {weights!r} is not a file")
    return str(path)
