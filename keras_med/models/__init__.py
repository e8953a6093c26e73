"""Models by name: `create_model("mobilenetv2", num_classes=7, image_size=128, weights="imagenet")`.

Every model is an `ImageClassifier` (backbone, in-model preprocessing, head) taking float32 images
in 0..255, with a float32 output layer named `predictions`; `kerashub:PRESET` names a KerasHub backbone.
"""

from keras_med.models import backbones, custom_cnn, efficientnet_lite  # noqa: F401  (registers the builders)
from keras_med.models.backbones import WeightsUnavailableError
from keras_med.models.classifier import ImageClassifier
from keras_med.models.preprocessing import ReverseChannels
from keras_med.models.registry import available_models, create_model, known_model, model_spec, register_model

__all__ = ["available_models", "create_model", "ImageClassifier", "known_model", "model_spec", "register_model",
           "ReverseChannels", "WeightsUnavailableError"]
