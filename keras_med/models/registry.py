"""Model registry: builder functions registered by name, created with one call (timm-style).

A builder is registered with `@register_model("name", pretrained=True)` and receives the
validated arguments of `create_model`. Adding an architecture is one decorated function; no
caller ever branches on model names.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from keras_med.config.rules import MIN_IMAGE_SIZE
from keras_med.errors import ConfigError
from keras_med.models.preprocessing import COLOUR_CONSTANCY, colour_constancy_layer
from keras_med.models.weights import normalize_weights
from keras_med.tasks import TASKS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes:
        name: Registry name, e.g. "mobilenetv2".
        builder: Function building the `keras.Model` from `create_model`'s arguments.
        pretrained: True when the model has an ImageNet-pretrainable backbone, which makes the
            'auto' fit plan fine-tune it when weights are given.
        has_width: True when the builder takes a width multiplier other than 1.0.
    """

    name: str
    builder: Callable[..., keras.Model]
    pretrained: bool
    has_width: bool = False


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, pretrained: bool, has_width: bool = False) -> Callable:
    """Decorator registering a model builder under `name`.

    Args:
        name: Registry name; must be unique.
        pretrained: Whether the model has a backbone with ImageNet weights.
        has_width: Whether the builder takes a width multiplier (`create_model(width=...)`).
    """

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"model name '{name}' is already registered")
        _REGISTRY[name] = ModelSpec(name=name, builder=builder, pretrained=pretrained, has_width=has_width)
        return builder

    return decorate


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def known_model(name: str) -> bool:
    """Whether `name` is a registered model or a KerasHub preset (`kerashub:PRESET` / `kerashub:DIR`)."""
    from keras_med.models.kerashub import is_kerashub_name

    return name in _REGISTRY or is_kerashub_name(name)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; a clear error lists the known names otherwise.

    Args:
        name: Registry name, or `kerashub:PRESET` / `kerashub:/path/to/preset_dir` (a KerasHub backbone).
    """
    from keras_med.models.kerashub import build_kerashub_model, is_kerashub_name

    if is_kerashub_name(name):
        return ModelSpec(name=name, builder=functools.partial(build_kerashub_model, name), pretrained=True)
    if name not in _REGISTRY:
        raise ConfigError(f"model: unknown model '{name}'; expected one of {available_models()} or "
                          "kerashub:PRESET")
    return _REGISTRY[name]


def model_argument_problems(name: str, weights: str | None = None, width: float = 1.0,
                            name_only: bool = False) -> list[tuple[str, str]]:
    """What is wrong with `create_model`'s `name`, `weights` and `width`, without building anything.

    The one home of these rules: `create_model` raises on them and the configuration's validation
    (`keras_med.config.validation`) reports them under the flags' names.

    Args:
        name: a registry name or `kerashub:PRESET`.
        weights: "imagenet", "none"/None/"", a weights file or a `.keras` checkpoint.
        width: the width multiplier.
        name_only: check the name alone (a detection step will still adapt weights and width).

    Returns:
        `[(argument, "expected ..., got ...")]`, empty when all is well (at most one entry).
    """
    if not known_model(name):
        return [("model", f"expected one of {available_models()} (keras-med models lists them) or kerashub:PRESET, "
                          f"got {name!r}")]
    if name_only:
        return []
    spec = model_spec(name)
    if width != 1.0 and not spec.has_width:
        return [("width", f"model {name!r} has no width multiplier; expected 1.0, got {width}")]
    given = str(weights or "").strip()
    if given.lower() in ("", "none"):
        return []
    if given.endswith(".keras") and Path(given).expanduser().is_file():
        return []  # a checkpoint of any model: its backbone with a new head (keras_med.models.transfer)
    if not spec.pretrained:
        return [("weights", f"model {name!r} has no pretrained backbone; expected 'none', got {weights!r}")]
    if given != "imagenet" and not Path(given).expanduser().is_file():
        return [("weights", f"expected 'imagenet', 'none' or an existing weights file, got {weights!r}")]
    return []


def create_model(name: str, *, num_classes: int, image_size: int, task: str = "multiclass",
                 weights: str | None = None, dropout: float = 0.3, head_units: int = 256,
                 width: float = 1.0, colour_constancy: str = "none") -> keras.Model:
    """Build a registered model taking float32 images in 0..255 of shape (S, S, 3).

    Args:
        name: Registry name (see `available_models()`), or `kerashub:PRESET` / `kerashub:/path/to/preset_dir`
            for a KerasHub backbone (`keras_med.models.kerashub`).
        num_classes: Number of classes C. For `task="binary"` pass 2 (negative, positive) or 1;
            the model has one sigmoid output either way.
        image_size: Side S of the square input images, in pixels (at least 32).
        task: "multiclass" (softmax over C), "multilabel" (C sigmoids) or "binary" (1 sigmoid).
        weights: "imagenet", a path to a weights file for the backbone, None / "none", or a
            `.keras` model of an earlier run: its backbone (and architecture, whatever `name` says)
            with a new head (`transfer.model_from_checkpoint`).
        dropout: Dropout rate of the classification head, in [0, 1).
        head_units: Width of the head's hidden Dense layer (0: no hidden layer).
        width: Width multiplier (MobileNetV2's alpha, the custom CNN's filter multiplier).
        colour_constancy: "none", or "shades_of_gray": each image's colour cast removed inside the
            model, before the backbone's normalisation (`preprocessing.ShadesOfGray`). A `.keras`
            model fine-tuned from keeps its own step (it is not applied twice).

    Returns:
        An `ImageClassifier` (a functional `keras.Model`) whose output layer is named `predictions` (float32).

    Example:
        >>> model = create_model("custom_cnn", num_classes=7, image_size=64, weights=None)
        >>> model.output_shape
        (None, 7)
    """
    spec = model_spec(name)
    if task not in TASKS:
        raise ConfigError(f"task: expected one of {list(TASKS)}, got {task!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if task == "binary" and num_classes not in (1, 2):
        raise ConfigError(f"num_classes: a binary task has 2 classes (negative, positive), got {num_classes}")
    if task == "multiclass" and num_classes < 2:
        raise ConfigError(f"num_classes: a multiclass task needs at least 2 classes, got {num_classes}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size: expected an integer of at least {MIN_IMAGE_SIZE} pixels, got {image_size!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    if not isinstance(head_units, int) or head_units < 0:
        raise ConfigError(f"head_units: expected a non-negative integer, got {head_units!r}")
    if not width > 0:
        raise ConfigError(f"width: expected a positive multiplier, got {width!r}")
    weights = normalize_weights(weights)
    output_units = 1 if task == "binary" else num_classes
    from keras_med.models.transfer import is_checkpoint, model_from_checkpoint

    if colour_constancy not in COLOUR_CONSTANCY:
        raise ConfigError(f"colour_constancy: expected one of {list(COLOUR_CONSTANCY)}, got {colour_constancy!r}")
    step = colour_constancy_layer(colour_constancy)
    if is_checkpoint(weights):
        model = model_from_checkpoint(weights, output_units=output_units, image_size=image_size, task=task,
                                      dropout=dropout, head_units=head_units)
    else:
        for argument, problem in model_argument_problems(name, weights, width):
            raise ConfigError(f"{argument}: {problem}")
        logger.info("building %s: %d outputs (%s), %dpx, weights=%s", name, output_units, task, image_size,
                    weights)
        model = spec.builder(output_units=output_units, image_size=image_size, task=task, weights=weights,
                             dropout=dropout, head_units=head_units, width=width)
    if step is None or any(isinstance(layer, type(step)) for layer in model.input_steps()):
        return model
    logger.info("colour constancy: %s before the backbone's preprocessing", colour_constancy)
    return model.with_input_step(step)
