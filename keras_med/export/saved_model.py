"""Export a Keras model as a versioned SavedModel in TF Serving's layout, verified after reload.

Why ``keras.export.ExportArchive`` rather than ``tf.saved_model.save`` on a ``tf.Module``: it is
Keras 3's supported path to a SavedModel, it tracks the Keras variables for us (a Keras 3
variable is not a plain ``tf.Variable`` attribute a ``tf.Module`` would find), and each endpoint
becomes a SignatureDef TF Serving can call by name. The metadata travels as a third,
input-free signature of constants, so the SavedModel alone is a complete artifact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from keras_med.disk_space import MIB, check_writable, disk_errors, ensure_free_space, model_file_bytes
from keras_med.export.combined import check_members, serving_model
from keras_med.export.guards import ServingGuards
from keras_med.export.metadata import ServingMetadata
from keras_med.tasks import infer_task
from keras_med.export.model_config import list_versions, write_models_config
from keras_med.export.versioning import publish_version
from keras_med.export.warmup import copy_run_card, run_example_images, write_examples, write_warmup_requests
from keras_med.export.signatures import (IMAGE_SIGNATURE, METADATA_SIGNATURE, PIXELS_SIGNATURE,
                                         ServingFunctions)

logger = logging.getLogger(__name__)

# A SavedModel runs the same kernels as the Keras model, so the probabilities agree to float32
# rounding; PNG is lossless, so the bytes signature is held to the same bound.
DEFAULT_TOLERANCE = 1e-4
METADATA_FILE = "assets.extra/keras_med.json"
# An export is written to <name>/.partial-<random>-<pid> and renamed into place when verified;
# TF Serving ignores folders whose name is not an integer.
PARTIAL_PREFIX = ".partial-"


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not reproduce the Keras model's predictions."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(model_dir: str | Path) -> list[Path]:
    """Delete the ``.partial-<random>-<pid>`` folders of exports whose process is gone (killed midway).

    A folder whose process still runs is another export in progress and is left alone.

    Args:
        model_dir: ``saved_models/<name>``.

    Returns:
        The folders removed.
    """
    removed = []
    for path in Path(model_dir).glob(PARTIAL_PREFIX + "*"):
        pid = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and (not pid.isdigit() or int(pid) == os.getpid() or not _process_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.warning("removed %d unfinished export(s) left by a killed run: %s", len(removed),
                       ", ".join(path.name for path in removed))
    return removed


def next_version(model_dir: str | Path) -> int:
    """The version number after the highest one exported under ``model_dir`` (1 when none).

    Args:
        model_dir: ``saved_models/<name>``.
    """
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def build_metadata(model, class_names: Sequence[str], image_size: int | None = None, task: str | None = None,
                   thresholds=None, resize: str = "resize") -> ServingMetadata:
    """Metadata for ``model``, filling image size and task from the model when not given.

    Args:
        model: Keras model to the contract.
        class_names: One name per class (binary: [negative, positive]).
        image_size: Side S of the model input; read from the model's input shape when None.
        task: Task; read from the ``predictions`` layer when None.
        thresholds: Per-class decision thresholds (see ``ServingMetadata``), or None.
        resize: ``"resize"`` or ``"pad"``, as the training pipeline did.
    """
    input_shape = tuple(model.inputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(f"the model must take (batch, S, S, 3) images, its input shape is {input_shape}")
    if image_size is None:
        image_size = input_shape[1]
        if image_size is None or input_shape[2] != image_size:
            raise ValueError(f"cannot read a square image size from the model's input shape {input_shape}; "
                             "pass image_size=")
    metadata = ServingMetadata(class_names=tuple(class_names), task=task or infer_task(model),
                               image_size=int(image_size), thresholds=thresholds, resize=resize)
    units = model.outputs[0].shape[-1]
    if units != metadata.num_outputs:
        raise ValueError(f"the model's 'predictions' layer has {units} units but a {metadata.task} task with "
                         f"class_names {list(metadata.class_names)} needs {metadata.num_outputs}")
    return metadata


def export_for_serving(model, *, name: str, base_dir: str | Path = "saved_models", version: int | None = None,
                       class_names: Sequence[str], image_size: int | None = None, task: str | None = None,
                       thresholds=None, resize: str = "resize", container_base: str = "/models",
                       verify_images: np.ndarray | None = None, tolerance: float = DEFAULT_TOLERANCE,
                       ood_guard=None, conformal_sets=None,
                       run_dir: str | Path | None = None, tta: str = "none", decision_rule=None) -> Path:
    """Write ``model`` to ``<base_dir>/<name>/<version>/`` for TF Serving and update ``models.config``.

    The SavedModel has four signatures: ``serving_default`` (encoded JPEG/PNG bytes),
    ``predict_pixels`` (float32 pixels, any size, 0..255), ``explain`` (bytes and a class index:
    the answer and its Grad-CAM heat map) and ``metadata``. It is written to a
    temporary folder (TF Serving ignores non-integer names), reloaded with
    ``tf.saved_model.load`` and checked against the Keras model, fsynced, and only then renamed
    into place, so a watching TF Serving never loads a half-written or wrong version. Temporary
    folders left by an export that was killed are removed first.

    Args:
        model: Keras model to the contract in docs/contracts.md, or a list of them (same classes and
            size): an ensemble whose served probabilities are the mean of theirs
            (``keras_med.export.combined``; the guard and Grad-CAM are the first member's).
        name: Served model name (letters, digits, ``-``, ``_``, ``.``).
        base_dir: TF Serving's model base path on this machine.
        version: Version to write; the next integer after the existing ones when None.
        class_names: One name per class (binary: [negative, positive]).
        image_size: Side S of the model input; read from the model when None.
        task: ``multiclass``, ``multilabel`` or ``binary``; read from the model when None.
        thresholds: Per-class decision thresholds from evaluation (binary: one number is enough).
        resize: How other image sizes reach S x S: ``"resize"`` or ``"pad"`` (as in training).
        container_base: Where ``base_dir`` is mounted inside the TF Serving container.
        verify_images: float32 (N, S, S, 3) images in 0..255 to check the reload on; a few seeded
            random images when None.
        tolerance: Largest absolute difference in probabilities allowed after reload.
        ood_guard: A fitted `keras_med.evaluation.ood.OODGuard` to compute in the graph, or None.
        conformal_sets: Calibrated `keras_med.evaluation.conformal.ConformalSets`, or None.
        run_dir: The run the model comes from (or its ``.keras`` file): a few of its images
            (``split.csv``) are copied to ``assets.extra/examples/`` and make TF Serving's warm-up
            requests (``assets.extra/tf_serving_warmup_requests``), and its model card and
            ``class_names.json`` are copied to ``assets.extra/``; None: the warm-up uses seeded
            random images (see ``keras_med.export.warmup``).
        tta: ``"none"``, or ``"flips"``: the served answer averages the original and flipped images
            (as ``keras-med evaluate --tta flips`` scores them); three model passes per image.
        decision_rule: multiclass: a ``keras_med.evaluation.decision_rule.LogitAdjustment`` (or its
            ``to_dict()``) applied in the graph after averaging; None: argmax of the probabilities.

    Returns:
        The path of the version folder.
    """
    if not name or not all(char.isalnum() or char in "-_." for char in name) or name.startswith("."):
        raise ValueError(f"model name must be letters, digits, '-', '_' or '.', got {name!r}")
    members = check_members(model if isinstance(model, (list, tuple)) else [model])
    rule = _as_rule(decision_rule)
    guards = ServingGuards(ood_guard, conformal_sets)
    metadata = dataclasses.replace(build_metadata(members[0], class_names, image_size, task, thresholds, resize),
                                   **guards.summary(), members=len(members), tta=tta,
                                   decision_rule=None if rule is None else rule.to_dict(class_names))
    if rule is not None and metadata.task != "multiclass":
        raise ValueError(f"a decision rule applies to multiclass models only, not {metadata.task}")
    combination = {"tta": tta, "logit_biases": None if rule is None else rule.biases}
    model_dir = Path(base_dir) / name
    if version is not None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version must be a positive integer, got {version!r}")
        if (model_dir / str(version)).exists():
            raise FileExistsError(f"{model_dir / str(version)} already exists; pick another --version or leave it "
                                  "out for the next one")

    check_writable(model_dir, "the export folder (--saved-models)")
    remove_stale_partials(model_dir)
    # Named apart from any version: the number is claimed only when the export is complete.
    partial = model_dir / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}-{os.getpid()}"
    try:
        # A full disk or a read-only --saved-models: one line (keras_med.disk_space), and the
        # partial folder is removed below; versions already exported stay as they are.
        with disk_errors(f"the SavedModel {name}", model_dir):
            ensure_free_space(model_dir, sum(model_file_bytes(member) for member in members) + 16 * MIB,
                              f"the SavedModel {name}")
            write_saved_model(members, metadata, partial, guards, **combination)
            examples = run_example_images(run_dir) if run_dir is not None else []
            write_examples(partial, examples)
            if run_dir is not None:
                copy_run_card(run_dir, partial)
            write_warmup_requests(partial, name, [data for _, data in examples] or _random_pngs(metadata.image_size),
                                  metadata.image_size)
            report = verify_saved_model(partial, serving_model(members, **combination), metadata,
                                        images=verify_images, tolerance=tolerance)
            target, version = publish_version(partial, model_dir, version)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("exported %s version %d to %s (max |difference| after reload: %s)", name, version, target,
                ", ".join(f"{key} {value:.2e}" for key, value in report.items()))
    logger.info("signatures of %s (all details: saved_model_cli show --all --dir %s):\n%s", target, target,
                summarize_signatures(target))
    write_models_config(base_dir, container_base)
    return target


def write_saved_model(model, metadata: ServingMetadata, path: str | Path, guards: ServingGuards | None = None,
                      tta: str = "none", logit_biases=None) -> Path:
    """Write the SavedModel with the serving signatures to ``path`` (no versioning, no checks).

    Args:
        model: Keras model to the contract, or a list of them (an ensemble).
        metadata: Its serving metadata.
        path: Folder to write.
        guards: The out-of-distribution guard and conformal sets, or None.
        tta: ``"none"`` or ``"flips"`` (see ``keras_med.export.combined``).
        logit_biases: The decision rule's per-class biases, or None.
    """
    functions = ServingFunctions(model, metadata, guards, tta=tta, logit_biases=logit_biases)
    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    if functions.guards.weights_layer is not None:
        archive.track(functions.guards.weights_layer)
    specs = functions.input_signatures()
    for signature, function in functions.functions().items():
        archive.add_endpoint(name=signature, fn=function, input_signature=specs[signature])
    archive.write_out(str(path), verbose=False)
    extra = Path(path) / METADATA_FILE
    extra.parent.mkdir(exist_ok=True)
    extra.write_text(metadata.to_json(), encoding="utf-8")
    return Path(path)


def _as_rule(decision_rule):
    from keras_med.evaluation.decision_rule import LogitAdjustment

    return LogitAdjustment.from_dict(decision_rule) if isinstance(decision_rule, dict) or decision_rule is None \
        else decision_rule


def _random_pngs(size: int, count: int = 2) -> list[bytes]:
    pixels = np.random.default_rng(0).integers(0, 256, size=(count, size, size, 3)).astype(np.uint8)
    return [tf.io.encode_png(image).numpy() for image in pixels]


def keras_probabilities(model, images: np.ndarray, task: str) -> np.ndarray:
    """The Keras model's probabilities laid out like the serving output (binary: [1 - p, p]).

    Args:
        model: Keras model.
        images: float32 (N, S, S, 3) in 0..255.
        task: The model's task.
    """
    raw = keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float32)
    return np.concatenate([1.0 - raw, raw], axis=-1) if task == "binary" else raw


def verify_saved_model(path: str | Path, model, metadata: ServingMetadata, images: np.ndarray | None = None,
                       tolerance: float = DEFAULT_TOLERANCE) -> dict[str, float]:
    """Reload the SavedModel and check both signatures against the Keras model.

    Args:
        path: SavedModel folder.
        model: The Keras model it was exported from.
        metadata: Its metadata.
        images: float32 (N, S, S, 3) in 0..255; four seeded random images when None.
        tolerance: Largest absolute difference in probabilities allowed.

    Returns:
        The largest absolute difference per signature.
    """
    size = metadata.image_size
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, size=(4, size, size, 3)).astype(np.float32)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"verify_images must be (N, {size}, {size}, 3), got {images.shape}")
    # The serving graph brings every image to the training pipeline's uint8 grid (and PNG needs
    # integers anyway), so the reference is the Keras model on the rounded images.
    rounded = np.clip(np.floor(images + 0.5), 0, 255)
    expected = keras_probabilities(model, rounded, metadata.task)
    loaded = tf.saved_model.load(str(path))
    encoded = tf.constant([tf.io.encode_png(image.astype(np.uint8)).numpy() for image in rounded])
    answers = {
        PIXELS_SIGNATURE: loaded.signatures[PIXELS_SIGNATURE](pixels=tf.constant(images)),
        IMAGE_SIGNATURE: loaded.signatures[IMAGE_SIGNATURE](image_bytes=encoded),
    }
    report = {}
    for signature, outputs in answers.items():
        if not bool(np.all(outputs["valid"].numpy())):
            raise ExportVerificationError(f"{path}: signature {signature} flagged valid test images as invalid")
        difference = float(np.max(np.abs(outputs["probabilities"].numpy() - expected)))
        if not difference <= tolerance:
            raise ExportVerificationError(
                f"{path}: signature {signature} differs from the Keras model by {difference:.3g} "
                f"(tolerance {tolerance:.1g}) on {len(images)} images")
        report[signature] = difference
    stored = loaded.signatures[METADATA_SIGNATURE]()
    if [name.decode() for name in stored["class_names"].numpy()] != list(metadata.class_names):
        raise ExportVerificationError(f"{path}: stored class names do not match {list(metadata.class_names)}")
    return report


def describe_signatures(path: str | Path) -> str:
    """The signatures of a SavedModel as ``saved_model_cli show --all`` lists them.

    Read from ``saved_model.pb``'s signature definitions, as ``saved_model_cli`` reads them, not
    through ``tf.saved_model.load``: a reload restores every function of the graph (7.4 s of CPU
    for densenet121 at 32 px, a tenth of its whole export), and
    the export has already reloaded the model once to verify it.

    Args:
        path: SavedModel folder.
    """
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    lines = []
    # "__saved_model_init_op" restores the variables; it is no signature a client calls.
    for signature in sorted(name for name in signatures if not name.startswith("__")):
        definition = signatures[signature]
        lines.append(f"signature_def['{signature}']:")
        lines.append("  The given SavedModel SignatureDef contains the following input(s):")
        for key, info in sorted(definition.inputs.items()):
            lines.extend(_tensor_info("inputs", key, info))
        lines.append("  The given SavedModel SignatureDef contains the following output(s):")
        for key, info in sorted(definition.outputs.items()):
            lines.extend(_tensor_info("outputs", key, info))
        lines.append(f"  Method name is: {definition.method_name}")
    return "\n".join(lines)


def summarize_signatures(path: str | Path) -> str:
    """One line per signature of a SavedModel: ``name(input dtype shape, ...) -> output, ...``.

    What a reader takes in at the end of a run; ``describe_signatures`` keeps the full
    ``saved_model_cli`` listing (about 30 lines a signature) for ``keras-med export``.
    """
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def

    def tensors(items) -> str:
        return ", ".join(f"{key} {types_pb2.DataType.Name(info.dtype).removeprefix('DT_').lower()}"
                         f"{_shape(info.tensor_shape)}" for key, info in sorted(items))

    return "\n".join(f"  {name}({tensors(signatures[name].inputs.items())}) -> "
                     f"{tensors(signatures[name].outputs.items())}"
                     for name in sorted(signatures) if not name.startswith("__"))


def _shape(shape) -> str:
    if shape.unknown_rank:
        return "[?]"
    return "[" + ",".join("?" if dim.size < 0 else str(dim.size) for dim in shape.dim) + "]"


def _tensor_info(kind: str, key: str, info) -> list[str]:
    dtype = types_pb2.DataType.Name(info.dtype)
    shape = info.tensor_shape
    shape = "unknown_rank" if shape.unknown_rank else "(" + ", ".join(str(dim.size) for dim in shape.dim) + ")"
    return [f"    {kind}['{key}'] tensor_info:", f"        dtype: {dtype}", f"        shape: {shape}"]
