"""Optional gRPC client of TF Serving's PredictionService (needs ``tensorflow-serving-api``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_med.export.predictions import ServingError, rows_from_columns
from keras_med.export.predictor import Predictor
from keras_med.export.signatures import IMAGE_INPUT, IMAGE_SIGNATURE, PIXELS_INPUT, PIXELS_SIGNATURE

INSTALL_HINT = "pip install tensorflow-serving-api==2.21.0 (the version matching tensorflow)"


class GrpcPredictor(Predictor):
    """Sends the serving signatures' requests over gRPC (TF Serving's port 8500 by default).

    Args:
        target: ``host:port`` of the gRPC endpoint.
        name: Served model name.
        version: Version to ask for; None for the latest.
        timeout: Seconds to wait for each answer.
    """

    def __init__(self, target: str, name: str, version: int | None = None, timeout: float = 30.0):
        try:
            # Imported here so that the rest of keras_med works without the optional package.
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        except ImportError as error:
            raise ImportError(f"the gRPC client needs tensorflow-serving-api: {INSTALL_HINT}") from error
        if not name:
            raise ValueError("the served model name is required (--name)")
        self._grpc = grpc
        self._predict_pb2 = predict_pb2
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        self.target = target
        self.name = name
        self.version = version
        self.timeout = timeout

    def answer_image_bytes(self, images: list[bytes]) -> list[dict]:
        return self._predict(IMAGE_SIGNATURE, IMAGE_INPUT, tf.make_tensor_proto(images, dtype=tf.string))

    def answer_pixels(self, pixels: np.ndarray) -> list[dict]:
        return self._predict(PIXELS_SIGNATURE, PIXELS_INPUT,
                             tf.make_tensor_proto(np.asarray(pixels, np.float32), dtype=tf.float32))

    def _predict(self, signature: str, input_name: str, tensor) -> list[dict]:
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = self.name
        request.model_spec.signature_name = signature
        if self.version:
            request.model_spec.version.value = self.version
        request.inputs[input_name].CopyFrom(tensor)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as error:
            raise ServingError(f"{self.target} model {self.name}: {error.code().name}: {error.details()}",
                               bad_request=error.code() == self._grpc.StatusCode.INVALID_ARGUMENT) from error
        if response.model_spec.version.value:
            self.version = response.model_spec.version.value
        return rows_from_columns({key: tf.make_ndarray(value) for key, value in response.outputs.items()})
