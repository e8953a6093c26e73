"""The one inference path: a ``Predictor`` answers for a ``.keras`` file, a SavedModel folder or a server.

``keras_med.export.connect.open_predictor`` picks the kind (``keras-med predict``,
``keras-med explain`` and the web page call it; external evaluation of a SavedModel calls
``load_predictor``). In-process predictors run the very
serving functions that are exported (``signatures.ServingFunctions``), so a ``.keras`` file
answers exactly as its SavedModel will once served; TF Serving answers through
``rest_client.RestPredictor`` or ``grpc_client.GrpcPredictor``.
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_med.errors import ConfigError, RunFileError
from keras_med.export.predictions import (ImageInputError, Prediction, ServingError, check_pixels, predictions_from_rows,
                                          read_image_file, rows_from_columns, sha256)
from keras_med.evaluation.tta import TTA_MODES
from keras_med.export.explain_signature import CLASS_INDEX_INPUT
from keras_med.export.signatures import (EXPLAIN_SIGNATURE, IMAGE_INPUT, IMAGE_SIGNATURE, METADATA_SIGNATURE,
                                         PIXELS_INPUT, PIXELS_SIGNATURE, ServingFunctions)
from keras_med.run_directory import RunInfo, load_saved_model, load_trained_model


DEFAULT_BATCH_SIZE = 32
_GRAPH_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\]")


@dataclass
class ModelDescription:
    """What a served model says about itself (its ``metadata`` signature).

    Attributes:
        run: Class names, task, resize mode and thresholds, as a run directory would give them.
        image_size: Side S of the square images the network takes.
    """

    run: RunInfo
    image_size: int


class Predictor(abc.ABC):
    """Something that answers the serving signatures: a local model or a TF Serving server.

    Attributes:
        name: Model name (as served).
        version: Model version, or None when unknown.
    """

    name: str = ""
    version: int | None = None

    @abc.abstractmethod
    def answer_image_bytes(self, images: list[bytes]) -> list[dict]:
        """The ``serving_default`` outputs, one dict per encoded image."""

    @abc.abstractmethod
    def answer_pixels(self, pixels: np.ndarray) -> list[dict]:
        """The ``predict_pixels`` outputs, one dict per image of float32 (N, H, W, 3)."""

    def answer_explain(self, images: list[bytes], class_indices: list[int]) -> list[dict]:
        """The ``explain`` outputs (answer and Grad-CAM), one dict per encoded image.

        Args:
            images: Encoded images.
            class_indices: The class to explain per image, -1 for the top class.
        """
        raise ServingError(f"{type(self).__name__} does not answer the explain signature")

    def describe(self) -> ModelDescription:
        """Class names, task, resize mode, thresholds and image size, from the ``metadata`` signature."""
        raise ServingError(f"{type(self).__name__} does not answer the metadata signature")

    @property
    def input_shape(self) -> tuple:
        """``(None, S, S, 3)``, as a Keras model's, so code written for a model can take a predictor."""
        size = self.describe().image_size
        return (None, size, size, 3)

    def predict(self, images, batch_size=None, verbose=0) -> np.ndarray:
        """Probabilities ``(N, K)`` of float pixels ``(N, H, W, 3)``, as ``keras.Model.predict`` answers.

        The answer is the served one (its ensemble, test-time augmentation and decision rule
        included), so external evaluation scores a SavedModel as it is served. ``batch_size`` and
        ``verbose`` are accepted for a model's signature; one request carries all images.

        Raises:
            ServingError: the model refused an image (its reasons named); figures over a set with a
                row missing would be wrong.
        """
        rows = self.answer_pixels(np.asarray(images, np.float32))
        reasons = sorted({_text(row["reason"]) for row in rows if not bool(row["valid"])})
        if reasons:
            raise ServingError(f"model '{self.name}' refused some images: {reasons}")
        return np.asarray([row["probabilities"] for row in rows], np.float32)

    def predict_files(self, paths, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
        """Predict image files; a bad file gets an invalid Prediction naming why, not an exception.

        Args:
            paths: Image files (JPEG, PNG, GIF, BMP, WebP, TIFF or DICOM, recognised by content, not by name).
            batch_size: Images per request.
        """
        paths = [str(path) for path in paths]
        answers: list[Prediction | None] = [None] * len(paths)
        pending: list[tuple[int, bytes]] = []
        for index, path in enumerate(paths):
            try:
                pending.append((index, read_image_file(path)))
            except ImageInputError as error:
                answers[index] = Prediction(path, "", False, error=str(error))
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            for (index, _), answer in zip(chunk, self._predict_chunk(chunk, paths)):
                answers[index] = answer
        return answers

    def _predict_chunk(self, chunk: list[tuple[int, bytes]], paths: list[str]) -> list[Prediction]:
        sources = [paths[index] for index, _ in chunk]
        hashes = [sha256(data) for _, data in chunk]
        try:
            rows = self.answer_image_bytes([data for _, data in chunk])
        except (ServingError, tf.errors.InvalidArgumentError) as error:
            if isinstance(error, ServingError) and not error.bad_request:
                raise
            # The serving graph flags a bad row itself; a whole request refused means a model
            # exported before it did (or a server-side limit), so retrying image by image keeps
            # the others' answers and names the bad file.
            if len(chunk) > 1:
                return [answer for item in chunk for answer in self._predict_chunk([item], paths)]
            return [Prediction(sources[0], hashes[0], False,
                               error=f"the model refused it: {one_line_error(error)}")]
        return predictions_from_rows(rows, sources, hashes)

    def predict_pixels(self, pixels, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
        """Predict pixel arrays (uint8 or float, 0..255, (N, H, W, 3) or one (H, W, 3) image).

        Args:
            pixels: The images; validated before anything is sent.
            batch_size: Images per request.
        """
        array = check_pixels(pixels)
        answers = []
        for start in range(0, len(array), batch_size):
            chunk = array[start:start + batch_size]
            sources = [f"pixels[{start + offset}]" for offset in range(len(chunk))]
            hashes = [sha256(image.tobytes()) for image in chunk]
            answers.extend(predictions_from_rows(self.answer_pixels(chunk), sources, hashes))
        return answers


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def one_line_error(error: Exception) -> str:
    """The line of a TensorFlow or server error that says what failed, without graph node names.

    A ``tf.errors.InvalidArgumentError`` from a graph reads "Graph execution error: Detected at
    node ... {{function_node ...}} jpeg::Uncompress failed ... [[{{node ...}}]]" over many lines;
    a user needs "jpeg::Uncompress failed ...".
    """
    # The stack of "Detected at node ..." is indented; the error itself is the last flush-left line.
    lines = [_GRAPH_NOISE.sub("", line).strip()
             for line in (getattr(error, "message", None) or str(error)).splitlines() if not line[:1].isspace()]
    lines = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node"))]
    return lines[-1] if lines else type(error).__name__


class LocalPredictor(Predictor):
    """Runs the serving functions in this process.

    Args:
        image_fn: Callable taking ``image_bytes=`` (tf.string (B,)) and returning the outputs dict.
        pixels_fn: Callable taking ``pixels=`` (float32 (B, H, W, 3)) and returning the outputs dict.
        name: Model name.
        version: Model version or None.
    """

    def __init__(self, image_fn, pixels_fn, name: str, version: int | None = None, explain_fn=None, metadata_fn=None,
                 source: str = ""):
        self._image_fn = image_fn
        self._pixels_fn = pixels_fn
        self._explain_fn = explain_fn
        self._metadata_fn = metadata_fn
        self._description = None
        self.name = name
        self.version = version
        self.source = source or name

    def describe(self) -> ModelDescription:
        if self._metadata_fn is None:
            raise ServingError(f"model '{self.name}' has no metadata signature; export it again with keras-med export")
        if self._description is None:
            meta = {key: value.numpy() for key, value in self._metadata_fn().items()}
            thresholds = np.asarray(meta["thresholds"]).tolist()
            run = RunInfo(class_names=[_text(name) for name in meta["class_names"]], task=_text(meta["task"]),
                          resize=_text(meta["resize"]), thresholds=thresholds or None, source=self.source)
            self._description = ModelDescription(run, int(meta["image_size"]))
        return self._description

    def answer_image_bytes(self, images: list[bytes]) -> list[dict]:
        outputs = self._image_fn(**{IMAGE_INPUT: tf.constant(images, tf.string)})
        return rows_from_columns({key: value.numpy() for key, value in outputs.items()})

    def answer_pixels(self, pixels: np.ndarray) -> list[dict]:
        outputs = self._pixels_fn(**{PIXELS_INPUT: tf.constant(pixels, tf.float32)})
        return rows_from_columns({key: value.numpy() for key, value in outputs.items()})

    def answer_explain(self, images: list[bytes], class_indices: list[int]) -> list[dict]:
        if self._explain_fn is None:
            raise ServingError(f"model '{self.name}' has no explain signature (exported before it existed); "
                               "export it again with keras-med export")
        outputs = self._explain_fn(**{IMAGE_INPUT: tf.constant(images, tf.string),
                                      CLASS_INDEX_INPUT: tf.constant(class_indices, tf.int32)})
        return rows_from_columns({key: value.numpy() for key, value in outputs.items()})


def exported_tta(folder: Path) -> str:
    """The test-time augmentation a SavedModel's graph applies (``assets.extra/keras_med.json``), else "none"."""
    path = folder / "assets.extra" / "keras_med.json"
    if not path.is_file():
        return "none"
    return json.loads(path.read_text(encoding="utf-8")).get("tta") or "none"


def load_predictor(path: str | Path, class_names=None, task: str | None = None, thresholds=None,
                   tta: str | None = None) -> LocalPredictor:
    """A predictor for a SavedModel folder (``saved_models/<name>/<version>``) or a ``.keras`` file.

    Both are read through ``keras_med.run_directory``: a ``.keras`` file takes its class names,
    task, thresholds and resize mode from its run directory (arguments given here win), and is
    refused when they do not fit its outputs.

    Args:
        path: SavedModel folder or ``.keras`` file.
        class_names: Class names for a ``.keras`` file (overrides class_names.json).
        task: Task for a ``.keras`` file (default: class_names.json, else read from the model).
        thresholds: Thresholds for a ``.keras`` file (default: the run's, else none).
        tta: "none" or "flips" for a ``.keras`` file (default: the run's ``[evaluation] tta``); for a
            SavedModel, only the mode its graph applies is accepted.
    """
    path = Path(path)
    if tta is not None and tta not in TTA_MODES:
        raise ConfigError(f"--tta: expected one of {list(TTA_MODES)}, got {tta!r}")
    if not path.exists():
        raise RunFileError(f"{path}: no such .keras file or SavedModel folder (saved_models/<name>/<version>)")
    if path.is_dir():
        loaded = load_saved_model(path, signatures=(IMAGE_SIGNATURE, PIXELS_SIGNATURE))
        if tta is not None and tta != exported_tta(path):
            raise ConfigError(f"--tta {tta}: the SavedModel {path} applies test-time augmentation "
                              f"'{exported_tta(path)}' in its graph (keras-med export --tta); drop --tta")
        version = int(path.name) if path.name.isdigit() else None
        name = path.parent.name if version is not None else path.name
        return LocalPredictor(loaded.signatures[IMAGE_SIGNATURE], loaded.signatures[PIXELS_SIGNATURE], name, version,
                              explain_fn=loaded.signatures.get(EXPLAIN_SIGNATURE),
                              metadata_fn=loaded.signatures.get(METADATA_SIGNATURE), source=str(path))
    from keras_med.export.saved_model import build_metadata

    trained = load_trained_model(path, class_names=class_names, task=task, thresholds=thresholds)
    metadata = build_metadata(trained.model, trained.run.class_names, task=trained.run.task,
                              thresholds=trained.run.thresholds, resize=trained.run.resize)
    from keras_med.evaluation.decision_rule import read_decision_rule
    from keras_med.export.combined import read_run_tta

    # What the run's export serves: its decision rule and test-time augmentation.
    rule = read_decision_rule(path) if trained.run.task == "multiclass" else None
    functions = ServingFunctions(trained.model, metadata, tta=read_run_tta(path) if tta is None else tta,
                                 logit_biases=None if rule is None else rule.biases)
    specs = functions.input_signatures()
    image_fn = tf.function(functions.predict_image_bytes, input_signature=specs[IMAGE_SIGNATURE])
    pixels_fn = tf.function(functions.predict_pixels, input_signature=specs[PIXELS_SIGNATURE])
    explain_fn = tf.function(functions.explain_image_bytes, input_signature=specs[EXPLAIN_SIGNATURE])
    return LocalPredictor(image_fn, pixels_fn, trained.name, explain_fn=explain_fn,
                          metadata_fn=tf.function(functions.describe, input_signature=[]), source=str(path))
