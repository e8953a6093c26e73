"""KerasHub backbones: `--model kerashub:PRESET` or `--model kerashub:/path/to/preset_dir`.

KerasHub is the maintained home of modern Keras image architectures (EfficientNetV2, ConvNeXt,
ViT, DINOv2, ...). A preset's backbone becomes the `backbone` of an `ImageClassifier`, and the
preset's own image converter (its rescaling and normalisation, without its resizing: the pipeline
already delivers `image_size` images) its `preprocessing`, so the model still takes 0..255 images;
a preset without a converter gets a 0..1 rescaling. `weights="imagenet"` means the preset's own
weights, `"none"` its architecture randomly initialised. keras_hub is imported only here (and when
a saved classifier holds a KerasHub backbone): it takes seconds to import.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from keras_med.errors import ConfigError
from keras_med.models.classifier import ImageClassifier
from keras_med.models.preprocessing import preprocessing_layer
from keras_med.models.weights import WeightsUnavailableError

logger = logging.getLogger(__name__)

PREFIX = "kerashub:"
CONVERTER_FILE = "image_converter.json"


def is_kerashub_name(name: str) -> bool:
    """Whether a model name asks for a KerasHub preset (`kerashub:PRESET` or `kerashub:DIR`)."""
    return isinstance(name, str) and name.startswith(PREFIX) and len(name) > len(PREFIX)


def _is_path(preset: str) -> bool:
    return "/" in preset or preset.startswith((".", "~"))


def _offline_message(preset: str, error: Exception) -> str:
    reason = " ".join(str(error).split())[:200]
    return (f"model: could not get the KerasHub preset '{preset}' ({type(error).__name__}: {reason}). "
            f"On an offline machine, download it where there is internet (`keras_hub.models.Backbone.from_preset("
            f"'{preset}')` keeps it under ~/.cache/kagglehub/models/keras/), copy that preset folder (the one "
            f"holding config.json) here and pass --model kerashub:/path/to/that/folder, or copy the whole "
            f"~/.cache/kagglehub folder to this machine's home")


def _image_converter(keras_hub, preset: str):
    """The preset's image converter without resizing, or None when the preset has none."""
    from keras_hub.src.utils.preset_utils import check_file_exists

    if not check_file_exists(preset, CONVERTER_FILE):
        return None
    return keras_hub.layers.ImageConverter.from_preset(preset, image_size=None, name="preprocessing")


def build_kerashub_model(name: str, *, output_units: int, image_size: int, task: str, weights: str | None,
                         dropout: float, head_units: int, width: float) -> ImageClassifier:
    """An `ImageClassifier` on the backbone of KerasHub preset `name[len("kerashub:"):]`; see `create_model`.

    Raises:
        ConfigError: a width multiplier or a weights file was given, or the folder is no preset.
        WeightsUnavailableError: a named preset could not be downloaded (the message says where to put it).
    """
    preset = name[len(PREFIX):]
    if width != 1.0:
        raise ConfigError(f"width: KerasHub presets have no width multiplier; use 1.0, got {width}")
    if weights not in (None, "imagenet"):
        raise ConfigError(f"weights: a KerasHub preset carries its own weights; use 'imagenet' (the preset's) or "
                          f"'none' (random initialisation), got {weights!r}")
    if _is_path(preset):
        folder = Path(preset).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model: {folder} is not a KerasHub preset folder (no config.json); write one with "
                              "`backbone.save_to_preset(folder)`")
        preset = str(folder)
    import keras_hub

    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=weights is not None)
    except Exception as error:  # kagglehub/requests raise many kinds when offline
        if _is_path(preset):
            raise ConfigError(f"model: cannot load the KerasHub preset in {preset} ({error})") from error
        raise WeightsUnavailableError(_offline_message(preset, error)) from error
    preprocessing = _image_converter(keras_hub, preset) or preprocessing_layer("unit")
    model_name = re.sub(r"\W+", "_", f"kerashub_{Path(preset).name}")
    logger.info("KerasHub preset %s: %s, preprocessing %s", preset, type(backbone).__name__,
                type(preprocessing).__name__)
    return ImageClassifier(backbone, output_units=output_units, image_size=image_size, task=task,
                           preprocessing=preprocessing, dropout=dropout, head_units=head_units, name=model_name)
