"""TFLite (float16, dynamic-range int8) and ONNX exports of the bare model, each checked after reload.

These formats take the model's own input, float32 (N, S, S, 3) in 0..255 with normalisation
inside, and answer its ``predictions``; decoding, resizing and thresholds are the app's job, so
the metadata (class names, task, size, thresholds) is written beside them as ``keras_med.json``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_med.export.metadata import TFLITE_QUANTIZATIONS, ServingMetadata
from keras_med.export.saved_model import ExportVerificationError

logger = logging.getLogger(__name__)

# Largest |difference| in probabilities accepted after reload; quantised weights cost precision.
TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "int8": 1e-1, "onnx": 1e-4}
ONNX_INSTALL_HINT = "pip install tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0"
ONNX_OPSET = 17
INPUT_NAME = "images"


@dataclass
class ConversionReport:
    """How an exported file compares with the Keras model.

    Attributes:
        path: The written file.
        format: ``tflite-float16``, ``tflite-int8``, ``tflite-float32`` or ``onnx``.
        size_bytes: File size.
        max_abs_difference: Largest |difference| in probabilities on the check images.
        top1_agreement: Share of check images whose top output index is the same.
    """

    path: Path
    format: str
    size_bytes: int
    max_abs_difference: float
    top1_agreement: float

    def to_text(self) -> str:
        return (f"{self.format}: {self.path} ({self.size_bytes / 1e3:,.1f} kB), max |diff| "
                f"{self.max_abs_difference:.2e}, top-1 agreement {self.top1_agreement:.0%}")


def _model_function(model, image_size: int):
    return tf.function(lambda images: model(images, training=False),
                       input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)])


def _check_images(images, image_size: int) -> np.ndarray:
    if images is None:
        return np.random.default_rng(0).integers(0, 256, size=(8, image_size, image_size, 3)).astype(np.float32)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"check images must be (N, {image_size}, {image_size}, 3), got {images.shape}")
    return images


def _compare(path: Path, fmt: str, actual: np.ndarray, expected: np.ndarray, tolerance: float) -> ConversionReport:
    difference = float(np.max(np.abs(actual - expected)))
    agreement = float(np.mean(np.argmax(actual, -1) == np.argmax(expected, -1))) if expected.shape[-1] > 1 else \
        float(np.mean((actual[:, 0] >= 0.5) == (expected[:, 0] >= 0.5)))
    if not difference <= tolerance:
        raise ExportVerificationError(f"{path}: {fmt} differs from the Keras model by {difference:.3g} "
                                      f"(tolerance {tolerance:.1g})")
    report = ConversionReport(path, fmt, path.stat().st_size, difference, agreement)
    logger.info("%s", report.to_text())
    return report


def export_tflite(model, path: str | Path, quantization: str = "float16", images: np.ndarray | None = None,
                  tolerance: float | None = None) -> ConversionReport:
    """Convert ``model`` to TFLite, reload it with the TFLite interpreter and compare.

    ``float16`` stores weights in half precision (half the size, GPU delegates run it natively);
    ``int8`` is dynamic-range quantisation (int8 weights, float activations; no calibration data).

    Args:
        model: Keras model to the contract (fixed S x S input).
        path: The ``.tflite`` file to write.
        quantization: ``"float16"``, ``"int8"`` or ``"float32"``.
        images: float32 (N, S, S, 3) check images in 0..255; seeded random ones when None.
        tolerance: Largest |difference| allowed; ``TOLERANCES[quantization]`` when None.
    """
    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {TFLITE_QUANTIZATIONS}, got {quantization!r}")
    image_size = int(model.inputs[0].shape[1])
    images = _check_images(images, image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        # Converting from a SavedModel: converting the tf.function directly left Keras 3's
        # variables uninitialised in the flatbuffer (all-NaN outputs with TF 2.21).
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", _model_function(model, image_size))
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        path.write_bytes(converter.convert())
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to ai_edge_litert; it is what TF 2.21 ships.
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    actual = np.concatenate([next(iter(runner(**{INPUT_NAME: image[None]}).values())) for image in images])
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    return _compare(path, f"tflite-{quantization}", actual, expected,
                    TOLERANCES[quantization] if tolerance is None else tolerance)


def export_onnx(model, path: str | Path, images: np.ndarray | None = None,
                tolerance: float = TOLERANCES["onnx"]) -> ConversionReport:
    """Convert ``model`` to ONNX with tf2onnx, reload it with onnxruntime and compare.

    Args:
        model: Keras model to the contract (fixed S x S input).
        path: The ``.onnx`` file to write.
        images: float32 (N, S, S, 3) check images in 0..255; seeded random ones when None.
        tolerance: Largest |difference| allowed.
    """
    try:
        # Optional dependencies: only this export needs them.
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ImportError(f"ONNX export needs tf2onnx and onnxruntime: {ONNX_INSTALL_HINT}") from error
    image_size = int(model.inputs[0].shape[1])
    images = _check_images(images, image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    function = _model_function(model, image_size)
    tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=ONNX_OPSET,
                                  output_path=str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: images})[0]
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    return _compare(path, "onnx", actual, expected, tolerance)


def export_other_formats(model, metadata: ServingMetadata, folder: str | Path, tflite: tuple[str, ...] = (),
                         onnx: bool = False, images: np.ndarray | None = None) -> list[ConversionReport]:
    """Write the asked TFLite/ONNX files and ``keras_med.json`` (their metadata) into ``folder``.

    Args:
        model: Keras model to the contract.
        metadata: Its serving metadata (written beside the files).
        folder: Output folder, e.g. ``saved_models/<name>/other_formats/<version>``.
        tflite: TFLite quantizations to write (``float16``, ``int8``, ``float32``).
        onnx: Whether to write ``model.onnx``.
        images: Check images, as in ``export_tflite``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keras_med.json").write_text(metadata.to_json(), encoding="utf-8")
    reports = [export_tflite(model, folder / f"model_{quantization}.tflite", quantization, images)
               for quantization in tflite]
    if onnx:
        reports.append(export_onnx(model, folder / "model.onnx", images))
    return reports
