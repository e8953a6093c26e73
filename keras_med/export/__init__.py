"""Export to TF Serving's SavedModel layout (plus TFLite and ONNX), and prediction clients.

TensorFlow-specific code lives here and only here.
"""

from keras_med.export.metadata import ServingMetadata
from keras_med.export.model_config import write_models_config
from keras_med.export.prediction_log import PredictionLog
from keras_med.export.predictions import ImageInputError, Prediction, ServingError
from keras_med.export.predictor import load_predictor
from keras_med.export.rest_client import RestPredictor
from keras_med.export.saved_model import (ExportVerificationError, describe_signatures, export_for_serving,
                                          next_version, verify_saved_model)

__all__ = ["ExportVerificationError", "ImageInputError", "Prediction", "PredictionLog", "RestPredictor",
           "ServingError", "ServingMetadata", "describe_signatures", "export_for_serving", "load_predictor",
           "next_version", "verify_saved_model", "write_models_config"]
