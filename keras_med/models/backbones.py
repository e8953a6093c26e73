"""Pretrained backbones from `keras.applications`, each the `backbone` of an `ImageClassifier`.

Each backbone gets its own ImageNet preprocessing inside the model (the classifier's
`preprocessing`) and the shared head; its blocks are read by `keras_med.models.blocks`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import keras

from keras_med.models.batch_norm import with_fused_batch_norm
from keras_med.models.classifier import ImageClassifier
from keras_med.models.preprocessing import preprocessing_layer
from keras_med.models.registry import register_model
from keras_med.models.weights import WeightsUnavailableError

logger = logging.getLogger(__name__)

# Input sizes MobileNetV2 has ImageNet files for; Keras falls back to the 224 file otherwise.
_MOBILENETV2_SIZES = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class Backbone:
    """How to build one `keras.applications` backbone.

    Attributes:
        application: The `keras.applications` constructor.
        preprocessing: Preprocessing mode (see `preprocessing_layer`).
        imagenet_file: File name Keras downloads into ~/.keras/models/ for (image_size, width).
        has_width: Whether the application takes a width multiplier (`alpha`).
    """

    application: Callable[..., keras.Model]
    preprocessing: str
    imagenet_file: Callable[[int, float], str]
    has_width: bool = field(default=False)


def _mobilenetv2_file(image_size: int, width: float) -> str:
    rows = image_size if image_size in _MOBILENETV2_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"


def _fixed_file(name: str) -> Callable[[int, float], str]:
    return lambda image_size, width: name


BACKBONES: dict[str, Backbone] = {
    "mobilenetv2": Backbone(keras.applications.MobileNetV2, "tf", _mobilenetv2_file, has_width=True),
    "densenet121": Backbone(keras.applications.DenseNet121, "torch",
                            _fixed_file("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    "resnet50": Backbone(keras.applications.ResNet50, "caffe",
                         _fixed_file("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    "vgg16": Backbone(keras.applications.VGG16, "caffe",
                      _fixed_file("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    **{f"efficientnetb{index}": Backbone(getattr(keras.applications, f"EfficientNetB{index}"), "none",
                                         _fixed_file(f"efficientnetb{index}_notop.h5"))
       for index in range(5)},
}


def build_backbone_model(name: str, *, output_units: int, image_size: int, task: str, weights: str | None,
                         dropout: float, head_units: int, width: float) -> ImageClassifier:
    """Build backbone `name` with its preprocessing and the head; see `create_model` for Args."""
    backbone = BACKBONES[name]
    extra = {"alpha": width} if backbone.has_width else {}
    try:
        # input_shape: without it MobileNetV2 picks the 224px ImageNet file whatever the image size.
        base = backbone.application(include_top=False, weights=weights, input_shape=(image_size, image_size, 3),
                                    **extra)
    except Exception as error:
        if weights != "imagenet":
            raise
        file_name = backbone.imagenet_file(image_size, width)
        raise WeightsUnavailableError(
            f"weights: could not get ImageNet weights for '{name}' ({error}). On an offline machine, "
            f"place the file '{file_name}' in Keras's cache as ~/.keras/models/{file_name} "
            f"(download it where there is internet), or pass a weights file with --weights PATH "
            f"(or --weights none to train from scratch).") from error
    if weights is None:
        # Trained from scratch, its BatchNormalization trains: TensorFlow's fused kernel (keras_med.models.batch_norm).
        base = with_fused_batch_norm(base)
    return ImageClassifier(base, output_units=output_units, image_size=image_size, task=task,
                           preprocessing=preprocessing_layer(backbone.preprocessing), dropout=dropout,
                           head_units=head_units, name=name)


def _register(name: str) -> None:
    def builder(**kwargs) -> ImageClassifier:
        return build_backbone_model(name, **kwargs)

    builder.__name__ = name
    builder.__doc__ = f"{BACKBONES[name].application.__name__} backbone with the shared head."
    register_model(name, pretrained=True, has_width=BACKBONES[name].has_width)(builder)


for _name in BACKBONES:
    _register(_name)
