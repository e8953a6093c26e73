"""One owner of a run directory's files: their paths, writers and readers, and loading its model.

`RunDirectory` names every file a run writes (config, split, class names, history, checkpoints,
metrics, predictions, trust, training outcome) and reads and writes the plain ones; every module
that reads a run directory goes through it, so a file's name and layout live here only. Models are
loaded by `keras_med.models.saving`, which this module calls (lazily: reading a run's JSON files
must not start TensorFlow).

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

from keras_med.atomic import write_text_atomic
from keras_med.errors import RunContentError, RunFileError
from keras_med.tasks import TASKS, Task, infer_task

CLASS_NAMES_FILE = "class_names.json"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.csv"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = Path(CHECKPOINTS_DIR) / "best.keras"
TRAINING_RECORD = "training_done.json"
TRUST_DIR = "trust"
OOD_GUARD_FILE = "ood_guard.npz"
CONFORMAL_FILE = "conformal.json"


class RunDirectory:
    """A run directory (`runs/<recipe>/<stamp>`): the paths of its files, and their readers and writers.

    Args:
        path: the run directory.

    Example:
        >>> run = RunDirectory.of_model("runs/ham10000/x/checkpoints/best.keras")
        >>> run.best_checkpoint, run.read_tta()
        (PosixPath('runs/ham10000/x/checkpoints/best.keras'), 'none')
    """

    def __init__(self, path: str | Path, model_path: str | Path | None = None):
        self.path = Path(path)
        # Files of a model given by its path are looked for beside it, then one level up.
        self._model_path = Path(model_path) if model_path is not None else None

    @classmethod
    def of_model(cls, model_path: str | Path) -> "RunDirectory":
        """The run directory of a `.keras` file: the parent of `checkpoints/`, else the file's own folder."""
        return cls(run_directory_of(model_path), model_path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # --- paths ---------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def split_file(self) -> Path:
        return self.path / SPLIT_FILE

    @property
    def class_names_file(self) -> Path:
        return self.path / CLASS_NAMES_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best_checkpoint(self) -> Path:
        """`checkpoints/best.keras` (the model a `RunDirectory.of_model` was made from, if given)."""
        return self._model_path if self._model_path is not None else self.path / BEST_CHECKPOINT

    @property
    def training_record(self) -> Path:
        return self.path / TRAINING_RECORD

    @property
    def trust_dir(self) -> Path:
        return self.path / TRUST_DIR

    @property
    def ood_guard_file(self) -> Path:
        return self.trust_dir / OOD_GUARD_FILE

    @property
    def conformal_file(self) -> Path:
        return self.trust_dir / CONFORMAL_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    def find(self, name: str) -> Path | None:
        """The file `name` of this run, or None; beside the model first when made `of_model`."""
        if self._model_path is not None:
            return find_run_file(self._model_path, name)
        path = self.file(name)
        return path if path.is_file() else None

    def file(self, name: str | Path) -> Path:
        """The path of `name` in this run: a bare name is joined to the run directory; one of the paths
        above (already under the run directory, relative or absolute) is returned as it is, so that a
        relative run directory is never joined to itself."""
        name = Path(name)
        if name.is_absolute() or name.parts[:len(self.path.parts)] == self.path.parts:
            return name
        return self.path / name

    def create(self) -> "RunDirectory":
        """Make the directory and its `checkpoints/` folder; returns self."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        return self

    # --- writers -------------------------------------------------------------------------------
    def write_json(self, name: str | Path, content) -> Path:
        """`content` as indented JSON in the file `name` (relative to the run, or one of its paths), atomically."""
        return write_text_atomic(self.file(name), json.dumps(content, indent=2))

    def write_class_names(self, class_names, task: str, long_names: dict, image_size: int, recipe: str) -> Path:
        """`class_names.json`: what a model of this run needs to be read (`read_run_info`)."""
        return self.write_json(CLASS_NAMES_FILE, {"class_names": list(class_names), "task": str(task),
                                                  "long_names": dict(long_names), "image_size": image_size,
                                                  "recipe": recipe})

    def write_metrics(self, metrics: dict) -> Path:
        return self.write_json(METRICS_FILE, metrics)

    # --- readers -------------------------------------------------------------------------------
    def read_json(self, name: str | Path):
        """The JSON file `name` (relative to the run, or one of its paths) of this run, or None when there is none.

        Raises:
            RunContentError: it is not valid JSON.
        """
        return _read_json(self.find(name))

    def read_metrics(self) -> dict:
        """`metrics.json` as a dict (empty when there is none)."""
        metrics = self.read_json(METRICS_FILE)
        return metrics if isinstance(metrics, dict) else {}

    def read_class_names(self) -> dict | None:
        """`class_names.json` as `{"class_names", "task", ...}` (a bare list read as such), or None."""
        stored = self.read_json(CLASS_NAMES_FILE)
        return {"class_names": stored} if isinstance(stored, list) else stored

    def read_config(self) -> dict:
        """The run's `config.toml` as a dict (empty when there is none).

        Raises:
            RunContentError: it is not valid TOML.
        """
        path = self.find(CONFIG_FILE)
        if path is None:
            return {}
        try:
            with path.open("rb") as handle:
                return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise RunContentError(f"{path}: not valid TOML ({error})") from error

    def read_resize(self) -> str:
        """`[data] resize` of the run's configuration (how training resized images); "resize" without one."""
        return self.read_config().get("data", {}).get("resize", "resize")

    def read_tta(self) -> str:
        """`[evaluation] tta` of the run's configuration; "none" without one."""
        return self.read_config().get("evaluation", {}).get("tta", "none")

    def read_decision_rule_dict(self) -> dict | None:
        """The decision rule evaluation stored in `metrics.json` (a dict), or None."""
        return self.read_metrics().get("decision_rule")

    def read_predictions(self) -> dict:
        """The arrays of `predictions.npz` (`y_val`, `p_test_none`, ...), or an empty dict when there is none."""
        import numpy as np

        path = self.predictions_file
        if not path.is_file():
            return {}
        with np.load(path) as arrays:
            return dict(arrays)

    def write_predictions(self, arrays: dict) -> Path:
        """`predictions.npz` holding `arrays`, atomically."""
        import io

        import numpy as np

        from keras_med.atomic import write_bytes_atomic

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return write_bytes_atomic(self.predictions_file, buffer.getvalue())

    def read_history(self):
        """`history.csv` as a DataFrame, one row per global epoch (the last row of a repeated epoch kept).

        Raises:
            FileNotFoundError: the run has no history (not trained).
        """
        import pandas as pd

        path = self.history_file
        if not path.is_file():
            raise FileNotFoundError(f"run_dir: no {HISTORY_FILE} in {self.path}; has the model been trained?")
        history = pd.read_csv(path)
        return history.drop_duplicates(subset="epoch", keep="last").sort_values("epoch").reset_index(drop=True)

    def is_finished(self) -> bool:
        """Whether the run finished: its metrics and its saved predictions are written."""
        return self.metrics_file.is_file() and bool(self.read_predictions())

    def load_model(self, **overrides) -> "TrainedModel":
        """The best checkpoint with this run's information (`load_trained_model`)."""
        return load_trained_model(self.best_checkpoint, **overrides)


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
    return RunDirectory.of_model(model_path).read_resize()


def check_model_matches(model, run: RunInfo) -> RunInfo:
    """Check that `run`'s class names and task fit the model's outputs; returns `run` with the task set.

    Raises:
        RunContentError: e.g. "the model has 7 outputs and the run directory names 6 classes (FILE)".
    """
    outputs = int(model.outputs[0].shape[-1])
    task = run.task or infer_task(model)
    names = len(run.class_names)
    named = "--class-names names" if run.source == "--class-names" else "the run directory names"
    plural = "output" if outputs == 1 else "outputs"
    if task == Task.BINARY and (outputs != 1 or names != 2):
        raise RunContentError(f"the model has {outputs} {plural} and {named} {names} classes ({run.source}); "
                              "a binary model has one output and two class names [negative, positive]")
    if task != Task.BINARY and outputs != names:
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
    from keras_med.models.saving import load_keras_model, require_keras_file

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
