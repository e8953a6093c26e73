"""TFLite (float16, dynamic-range int8) and ONNX exports agree with the Keras model after reload."""

import json
import sys

import keras
import numpy as np
import pytest

from keras_med.export import ExportVerificationError, ServingMetadata
from keras_med.export.mobile import export_onnx, export_other_formats, export_tflite

SIZE = 32


@pytest.fixture(scope="module")
def model():
    """A small model to the contract, with BatchNorm and a Dense wide enough for int8 weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(96, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).integers(0, 256, size=(6, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("quantization, tolerance", [("float16", 1e-2), ("int8", 1e-1)])
def test_tflite_agrees_with_keras(model, images, tmp_path, quantization, tolerance):
    report = export_tflite(model, tmp_path / f"m_{quantization}.tflite", quantization, images)
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size > 0
    assert report.max_abs_difference <= tolerance
    assert report.top1_agreement >= 5 / 6
    assert report.format == f"tflite-{quantization}"


def test_onnx_agrees_with_keras(model, images, tmp_path):
    report = export_onnx(model, tmp_path / "model.onnx", images)
    assert report.max_abs_difference <= 1e-4 and report.top1_agreement == 1.0


def test_other_formats_write_metadata_and_reject_a_bad_tolerance(model, images, tmp_path):
    metadata = ServingMetadata(class_names=("a", "b", "c"), task="multiclass", image_size=SIZE)
    reports = export_other_formats(model, metadata, tmp_path / "other", tflite=("int8",), images=images)
    assert [r.format for r in reports] == ["tflite-int8"]
    assert json.loads((tmp_path / "other" / "keras_med.json").read_text())["class_names"] == ["a", "b", "c"]
    with pytest.raises(ExportVerificationError, match="tolerance"):
        export_tflite(model, tmp_path / "strict.tflite", "float16", images, tolerance=0.0)
    with pytest.raises(ValueError, match="quantization"):
        export_tflite(model, tmp_path / "x.tflite", "int4")


def test_onnx_without_tf2onnx_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ImportError, match="pip install tf2onnx"):
        export_onnx(model, tmp_path / "model.onnx")
