"""TF Serving's warm-up file, example images and the run's model card, written into every export.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord of `PredictionLog`
protos, its documented format) when it loads a version, before it reports it AVAILABLE, so the
first real request does not pay for graph initialisation. The requests are built from a few of the
run's own images (from its `split.csv`), which are also copied to `assets.extra/examples/` so
that a client of the SavedModel alone (the web page) can offer them. The protos come from the
`tensorflow-serving-api` package (pinned beside TensorFlow in requirements.txt) rather than
hand-written protobuf, so the file is the one TF Serving parses. The run's model card
(`report.md`, `report.html`) and `class_names.json` (long class names) are copied to
`assets.extra/` too, so the page can show them beside a SavedModel that left its run behind.

These images travel with the model: for a model trained on private data, export with
`example_images=[]` (the warm-up then uses the seeded verification images).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from keras_med.export.explain_signature import CLASS_INDEX_INPUT, EXPLAIN_SIGNATURE
from keras_med.export.signatures import IMAGE_INPUT, IMAGE_SIGNATURE, PIXELS_INPUT, PIXELS_SIGNATURE
from keras_med.image_format import sniff_image_format

logger = logging.getLogger(__name__)

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
EXAMPLES_FOLDER = "assets.extra/examples"
RUN_CARD_FILES = ("report.md", "report.html", "class_names.json")
DEFAULT_EXAMPLE_COUNT = 3
# Splits tried in order for example images: held-out images first.
_EXAMPLE_SPLITS = ("test", "val", "train")


def run_directory_of(path: str | Path) -> Path:
    """The run directory of a model file (stepping out of `checkpoints/`), or `path` itself if a folder."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def copy_run_card(run_dir: str | Path, saved_model_dir: str | Path) -> list[Path]:
    """Copy the run's `RUN_CARD_FILES` that exist into the SavedModel's `assets.extra/`."""
    run_dir = run_directory_of(run_dir)
    copied = []
    for name in RUN_CARD_FILES:
        source = run_dir / name
        if source.is_file():
            target = Path(saved_model_dir) / "assets.extra" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            copied.append(target)
    return copied


def run_example_images(run_dir: str | Path, count: int = DEFAULT_EXAMPLE_COUNT) -> list[tuple[str, bytes]]:
    """Up to `count` image files of a run (one per label first), as `(file name, bytes)`.

    Args:
        run_dir: The run directory (with `split.csv`), or a model file inside it (its
            `checkpoints/` folder is stepped out of).

    Returns:
        The examples; empty when the run has no `split.csv` or its files are gone.
    """
    import pandas as pd

    run_dir = run_directory_of(run_dir)
    split_file = run_dir / "split.csv"
    if not split_file.is_file():
        return []
    frame = pd.read_csv(split_file, usecols=lambda column: column in ("path", "label", "split"))
    if "path" not in frame.columns:
        return []
    order = {name: rank for rank, name in enumerate(_EXAMPLE_SPLITS)}
    frame = frame.assign(rank=frame.get("split", "train").map(order).fillna(len(order)))
    frame = frame.sort_values("rank", kind="stable")
    # One image per label first, so the page's examples show different classes.
    if "label" in frame.columns:
        frame = frame.assign(nth=frame.groupby("label").cumcount()).sort_values(["nth", "rank"], kind="stable")
    examples = []
    for path in frame["path"]:
        path = Path(str(path))
        if path.is_file() and sniff_image_format(path.read_bytes()[:32]) is not None:
            examples.append((path.name, path.read_bytes()))
        if len(examples) == count:
            break
    return examples


def write_examples(saved_model_dir: str | Path, examples: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Copy the example images into `assets.extra/examples/` (names made unique with an index prefix)."""
    folder = Path(saved_model_dir) / EXAMPLES_FOLDER
    written = []
    for index, (name, data) in enumerate(examples):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index}_{Path(name).name}"
        path.write_bytes(data)
        written.append(path)
    return written


def write_warmup_requests(saved_model_dir: str | Path, model_name: str, images: Sequence[bytes],
                          image_size: int) -> Path:
    """Write TF Serving's warm-up file: for each image, one `serving_default` and one `explain` request,
    and one `predict_pixels` request.

    Args:
        saved_model_dir: The SavedModel folder (the file goes to its `assets.extra/`).
        model_name: The served model name, for the requests' `model_spec`.
        images: Encoded images (at least one).
        image_size: The model's input side, for the pixels request.

    Returns:
        The file written.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if not images:
        raise ValueError("write_warmup_requests needs at least one encoded image")

    def request(signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
        spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
        predict = predict_pb2.PredictRequest(model_spec=spec)
        for key, value in inputs.items():
            predict.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict))

    logs = []
    for data in images:
        logs.append(request(IMAGE_SIGNATURE, {IMAGE_INPUT: tf.constant([data])}))
        logs.append(request(EXPLAIN_SIGNATURE, {IMAGE_INPUT: tf.constant([data]),
                                                CLASS_INDEX_INPUT: tf.constant([-1], tf.int32)}))
    logs.append(request(PIXELS_SIGNATURE, {PIXELS_INPUT: tf.zeros([1, image_size, image_size, 3], tf.float32)}))
    path = Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    logger.info("wrote %d TF Serving warm-up requests to %s", len(logs), path)
    return path


def read_warmup_requests(path: str | Path) -> list:
    """The `PredictionLog` protos of a warm-up file, as TF Serving parses them."""
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]
