"""Helpers shared by the test modules: tiny models to the serving contract, image files and bytes,
the tiny recipe flags, a TF-Serving-like handler, and PNG checks.

Test modules import from here (`from helpers import ...`; pytest puts tests/ on sys.path through
the root conftest), never from one another. Fixtures built on these live in conftest.py.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32  # the smallest image size a registered model accepts
CLASSES = ["akiec", "bcc", "mel"]  # three HAM10000 classes, in sorted order as a run stores them
CXR_CLASSES = ["normal", "pneumonia", "covid"]


# --- tiny models ---------------------------------------------------------------------------------------
def tiny_cnn(*, task: str = "multiclass", classes: int = 3, size: int = SIZE, seed: int | None = 0,
             convs=((8, 2),), rescale: str = "signed", name: str = "tiny_cnn"):
    """A small `ImageClassifier` to the serving contract: 0..255 in, Rescaling as its preprocessing,
    a backbone of 3x3 ReLU convolutions, global average pooling and a Dense `predictions` head.

    The backbone has fewer than three blocks, so the out-of-distribution guard reads its pooled
    features; Grad-CAM explains its `feature_map` layer.

    Args:
        task: "multiclass" (softmax over `classes`), "multilabel" (`classes` sigmoids) or "binary" (1 sigmoid).
        convs: `(filters, strides)` of each convolution of the backbone, in order.
        rescale: "signed" (to -1..1) or "unit" (to 0..1).
        seed: seeds Keras's random state first (None leaves it as it is).
    """
    import keras

    from keras_med.models import ImageClassifier

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for index, (filters, strides) in enumerate(convs, start=1):
        x = keras.layers.Conv2D(filters, 3, strides=strides, activation="relu", name=f"conv{index}")(x)
    backbone = keras.Model(inputs, x, name=f"{name}_backbone")
    preprocessing = (keras.layers.Rescaling(1.0 / 127.5, offset=-1.0) if rescale == "signed"
                     else keras.layers.Rescaling(1.0 / 255))
    return ImageClassifier(backbone, output_units=1 if task == "binary" else classes, image_size=size, task=task,
                           preprocessing=preprocessing, name=name)


def gradcam_cnn(task: str = "multiclass", seed: int = 0):
    """`tiny_cnn` with two convolutions (a stride-2 one, then a stride-1 one whose map Grad-CAM explains)."""
    return tiny_cnn(task=task, seed=seed, convs=((8, 2), (8, 1)))


# --- images --------------------------------------------------------------------------------------------
def random_images(count: int, size: int = SIZE, seed: int = 1, patch: bool = False) -> np.ndarray:
    """float32 `(count, size, size, 3)` integer-valued pixels in 0..255 (the uint8 grid the pipelines use).

    `patch`: a bright rectangle in every image, so Grad-CAM maps are not flat.
    """
    images = np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3)).astype(np.float32)
    if patch:
        images[:, 4:14, 6:20] = 255.0
    return images


def png_bytes(pixels) -> bytes:
    """PNG-encoded bytes of uint8 pixels (H, W) or (H, W, 3)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, pixels) -> Path:
    """Write uint8 pixels (H, W) or (H, W, 3) to `path` (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def read_png(path: Path) -> np.ndarray:
    """The decoded pixels of a PNG file as uint8 RGB `(H, W, 3)`; fails when the file is not a PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path}: expected a PNG, got {image.format}"
        return np.asarray(image.convert("RGB"))


def assert_overlay_shows_a_heat_map(path: Path) -> None:
    """The overlay PNG (`explain.overlay.save_overlay`: the image and the image with the heat map in
    'jet' colours, side by side) decodes, is wider than high, and its two panels differ in colour."""
    pixels = read_png(path).astype(np.float32)
    height, width, _ = pixels.shape
    assert width > height > 50, pixels.shape
    left, right = pixels[:, : width // 2], pixels[:, width - width // 2:]
    # The heat map adds colour: the overlay panel's mean colour moves away from the image panel's.
    assert np.abs(left.mean(axis=(0, 1)) - right.mean(axis=(0, 1))).max() > 2.0


# --- the tiny recipe runs --------------------------------------------------------------------------------
def tiny_flags(*, demo_size: int | None = 120, epochs: int | None = 1, bootstrap: int = 0, explain: int = 0,
               seed: int = 3, extra=()) -> list[str]:
    """Recipe flags for a tiny run at 32 px, batch 16; `demo_size=None`/`epochs=None` leave the flag out."""
    flags = ["--demo", "--demo-size", str(demo_size)] if demo_size is not None else []
    flags += ["--image-size", str(SIZE), "--batch-size", "16"]
    flags += ["--epochs", str(epochs)] if epochs is not None else []
    return flags + ["--bootstrap", str(bootstrap), "--explain", str(explain), "--seed", str(seed), *extra]


# --- the command functions and a TF-Serving-like server -------------------------------------------------
def parse_command_args(module, argv):
    """`argv` parsed by the parser that a command module (`add_arguments`) builds."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


class FakeTFServing(BaseHTTPRequestHandler):
    """Speaks TF Serving's REST protocol (model status and row-format predict) over a reloaded SavedModel."""

    loaded = None
    name = ""
    version = 1

    def log_message(self, *args):
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/") not in (f"/v1/models/{self.name}", f"/v1/models/{self.name}/versions/{self.version}"):
            return self._reply(404, {"error": f"Servable not found for request: Latest({self.path})"})
        self._reply(200, {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                                    "status": {"error_code": "OK", "error_message": ""}}]})

    def do_POST(self):
        if self.path not in (f"/v1/models/{self.name}:predict", f"/v1/models/{self.name}/versions/{self.version}:predict"):
            return self._reply(404, {"error": f"Servable not found for request: Latest({self.path})"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        signature = self.loaded.signatures[body.get("signature_name", "serving_default")]
        instances = body["instances"]
        import tensorflow as tf

        try:
            if instances and isinstance(instances[0], dict):
                outputs = signature(image_bytes=tf.constant([base64.b64decode(item["b64"]) for item in instances]))
            else:
                outputs = signature(pixels=tf.constant(instances, tf.float32))
        except tf.errors.InvalidArgumentError as error:
            return self._reply(400, {"error": error.message})
        columns = {key: value.numpy().tolist() for key, value in outputs.items()}
        rows = [{key: _jsonable(column[i]) for key, column in columns.items()} for i in range(len(instances))]
        self._reply(200, {"predictions": rows})


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


# --- trust -----------------------------------------------------------------------------------------------
def export_with_trust(model, train_images, val_images, base_dir, class_names, name: str = "skin"):
    """Fit the out-of-distribution guard and 90% conformal sets on the model's own answers to
    `train_images`/`val_images`, export the model with both under `base_dir/name`; returns that folder."""
    from keras_med.evaluation.conformal import calibrate_conformal
    from keras_med.evaluation.ood import fit_ood_guard
    from keras_med.evaluation.trust import predict_features
    from keras_med.export import export_for_serving

    train_raw, train_features, train_std = predict_features(model, train_images)
    val_raw, val_features, val_std = predict_features(model, val_images)
    guard = fit_ood_guard(train_features, train_raw.argmax(axis=1), val_features, val_raw,
                          train_spread=train_std, val_spread=val_std)
    sets = calibrate_conformal(val_raw, val_raw.argmax(axis=1), coverage=0.9)
    export_for_serving(model, name=name, base_dir=base_dir, class_names=class_names, task="multiclass",
                       ood_guard=guard, conformal_sets=sets)
    return Path(base_dir) / name


# --- processes ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
# A child process that holds a run-directory lock until its stdin gets a line.
LOCK_HOLDER_SCRIPT = """
import sys
from keras_med.run_lock import run_directory_lock
with run_directory_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""
