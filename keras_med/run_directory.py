"""One owner of a trained model's files: reading its run directory and loading the model.

A recipe run stores the checkpoint at `run_dir/checkpoints/best.keras` beside `class_names.json`
(class names, task, long names, image size), `config.toml` (the resolved configuration, whose
`data.resize` says how training resized images) and `metrics.json` (the thresholds evaluation
chose). `evaluate`, `explain`, `export` and `predict` all read a model through here, so every
registered custom layer (`ReverseChannels` of resnet50/vgg16) is known when a `.keras` file is
loaded, and a `class_names.json` that does not match the model is refused once, at load time,
with a message that says so.

Example:
    >>> trained = load_trained_model("runs/ham10000/20250101-120000/checkpoints/best.keras")
    >>> trained.run.class_names, trained.run.task, trained.image_size
    (['akiec', 'bcc', ...], 'multiclass', 128)
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from keras_med.errors import RunContentError, RunFileError
from keras_med.models.saving import load_keras_model, require_keras_file

TASKS = ("multiclass", "multilabel", "binary")
CLASS_NAMES_FILE = "class_names.json"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class RunInfo:
    """What a trained model needs from its run directory.

    Attributes:
        class_names: one name per class (binary: `[negative, positive]`).
        task: "multiclass", "multilabel" or "binary"; None when neither file nor caller says
            (then it is read from the model's `predictions` layer at load time).
        long_names: class name -> readable name (may be empty).
        resize: "resize" or "pad", as the run's `config.toml` says ("resize" without one).
        thresholds: the thresholds evaluation chose (one per model output), or None.
        source: where the class names came from (a file path, or the flag that gave them), for messages.
    """

    class_names: list[str]
    task: str | None
    long_names: dict = field(default_factory=dict)
    resize: str = "resize"
    thresholds: list | None = None
    source: str = ""


@dataclass(frozen=True)
class TrainedModel:
    """A loaded `.keras` model and its run directory's information, checked against each other.

    Attributes:
        model: the uncompiled `keras.Model`.
        run: its `RunInfo` (with `task` always set).
        path: the `.keras` file.
    """

    model: object
    run: RunInfo
    path: Path

    @property
    def image_size(self) -> int:
        """Side S of the square `(S, S, 3)` images the model takes."""
        return int(self.model.input_shape[1])

    @property
    def name(self) -> str:
        """The run's name: its directory (`runs/<recipe>/<stamp>` -> `<stamp>`), else the file's stem."""
        return run_directory_of(self.path).name or self.path.stem


def run_directory_of(model_path: str | Path) -> Path:
    """The run directory of a checkpoint: the parent of `checkpoints/`, else the model's own folder."""
    folder = Path(model_path).parent
    return folder.parent if folder.name == "checkpoints" else folder


def find_run_file(model_path: str | Path, name: str) -> Path | None:
    """`name` beside the model file or one level up (the run dir of a checkpoint), or None."""
    model_path = Path(model_path)
    for folder in dict.fromkeys((model_path.parent, model_path.parent.parent)):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path | None):
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunContentError(f"{path}: not valid JSON ({error}); expected the file a training run writes") from error


def read_run_info(model_path: str | Path, class_names=None, task: str | None = None, thresholds=None,
                  resize: str | None = None) -> RunInfo:
    """Class names, task, long names, resize mode and thresholds of the model at `model_path`.

    Arguments given here win over the run directory's files (`--class-names`, `--task`, ...).
    `class_names.json` is a list of names or `{"class_names", "task", "long_names"}`; without
    it, `metrics.json`'s `class_names` and `task` are used.

    Args:
        model_path: the `.keras` file (e.g. `runs/ham10000/<stamp>/checkpoints/best.keras`).
        class_names: class names that replace the run's.
        task: task that replaces the run's.
        thresholds: thresholds that replace the run's.
        resize: resize mode that replaces the run's `config.toml`.

    Raises:
        RunFileError: no model file, or no class names anywhere.
        RunContentError: a run file is not valid JSON/TOML or not of the expected shape.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise RunFileError(f"{model_path}: no such model file; expected a .keras file such as "
                           "runs/<recipe>/<stamp>/checkpoints/best.keras")
    resize = resize or read_resize_mode(model_path)
    if class_names is not None:
        # Names given by the caller replace the run's: its task and thresholds may not fit them.
        return RunInfo(class_names=[str(name) for name in class_names], task=_checked_task(task, "--task"),
                       thresholds=thresholds, resize=resize, source="--class-names")
    names_file = find_run_file(model_path, CLASS_NAMES_FILE)
    stored = _read_json(names_file)
    if isinstance(stored, list):
        stored = {"class_names": stored}
    if stored is not None and not (isinstance(stored, dict) and isinstance(stored.get("class_names"), list)):
        raise RunContentError(f"{names_file}: expected a list of class names or an object with 'class_names', "
                              f"got {type(stored).__name__}")
    metrics_file = find_run_file(model_path, METRICS_FILE)
    metrics = _read_json(metrics_file)
    metrics = metrics if isinstance(metrics, dict) else {}
    if stored is None and isinstance(metrics.get("class_names"), list):
        stored, names_file = {"class_names": metrics["class_names"], "task": metrics.get("task")}, metrics_file
    if stored is None:
        raise RunFileError(
            f"{model_path}: found no {CLASS_NAMES_FILE} (or {METRICS_FILE} with class_names) beside it or in "
            f"{model_path.parent.parent}; put the model in its run directory, write {CLASS_NAMES_FILE} as "
            '{"class_names": [...], "task": "multiclass"}, or pass --class-names')
    source = str(names_file)
    return RunInfo(class_names=[str(name) for name in stored["class_names"]],
                   task=_checked_task(task or stored.get("task") or metrics.get("task"), source),
                   long_names=dict(stored.get("long_names") or {}), resize=resize,
                   thresholds=thresholds if thresholds is not None else stored.get("thresholds",
                                                                                   metrics.get("thresholds")),
                   source=source)


def _checked_task(task: str | None, source: str) -> str | None:
    if task is not None and task not in TASKS:
        raise RunContentError(f"{source}: task expected one of {list(TASKS)}, got {task!r}")
    return task


def read_resize_mode(model_path: str | Path) -> str:
    """`data.resize` of the run's `config.toml` (how training resized images); "resize" without one."""
    config_file = find_run_file(model_path, CONFIG_FILE)
    if config_file is None:
        return "resize"
    try:
        with config_file.open("rb") as handle:
            return tomllib.load(handle).get("data", {}).get("resize", "resize")
    except tomllib.TOMLDecodeError as error:
        raise RunContentError(f"{config_file}: not valid TOML ({error})") from error


def check_model_matches(model, run: RunInfo) -> RunInfo:
    """Check that `run`'s class names and task fit the model's outputs; returns `run` with the task set.

    Raises:
        RunContentError: e.g. "the model has 7 outputs and the run directory names 6 classes (FILE)".
    """
    from keras_med.tasks import infer_task

    outputs = int(model.outputs[0].shape[-1])
    task = run.task or infer_task(model)
    names = len(run.class_names)
    named = "--class-names names" if run.source == "--class-names" else "the run directory names"
    plural = "output" if outputs == 1 else "outputs"
    if task == "binary" and (outputs != 1 or names != 2):
        raise RunContentError(f"the model has {outputs} {plural} and {named} {names} classes ({run.source}); "
                              "a binary model has one output and two class names [negative, positive]")
    if task != "binary" and outputs != names:
        raise RunContentError(f"the model has {outputs} {plural} and {named} {names} classes ({run.source})")
    return replace(run, task=task)


def load_trained_model(model_path: str | Path, class_names=None, task: str | None = None, thresholds=None,
                       resize: str | None = None) -> TrainedModel:
    """Load a `.keras` model with its run directory's information, checked against each other.

    Args:
        model_path: the `.keras` file.
        class_names, task, thresholds, resize: replace the run directory's (see `read_run_info`).

    Returns:
        A `TrainedModel`.

    Example:
        >>> trained = load_trained_model("runs/x/checkpoints/best.keras")
        >>> probabilities = trained.model.predict(images)
    """
    require_keras_file(model_path)
    run = read_run_info(model_path, class_names=class_names, task=task, thresholds=thresholds, resize=resize)
    model = load_keras_model(model_path)
    return TrainedModel(model=model, run=check_model_matches(model, run), path=Path(model_path))


def load_saved_model(path: str | Path, signatures=()):
    """Load an exported SavedModel folder (`saved_models/<name>/<version>`), checking its signatures.

    Args:
        path: the version folder.
        signatures: signature names it must have.

    Raises:
        RunFileError: not a SavedModel folder.
        RunContentError: a signature is missing.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise RunFileError(f"{path}: not a SavedModel folder (no saved_model.pb); expected e.g. "
                           "saved_models/<name>/<version>")
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    missing = [name for name in signatures if name not in loaded.signatures]
    if missing:
        raise RunContentError(f"{path}: the SavedModel lacks the signatures {missing}; export it with keras-med export")
    return loaded
