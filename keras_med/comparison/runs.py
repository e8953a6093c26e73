"""A run's test predictions as `keras-med compare` reads them, and runs paired on their shared images.

A run directory holds what is needed (`keras_med.evaluation.run_predictions`, `keras_med.data.save_split`):
- `predictions.npz`: `y_test` and `p_test_<tta>`, the raw test probabilities in the order of
- `split.csv`'s rows whose `split` is `test` (columns `path, label, group, split, ...`);
- `class_names.json` (`{"class_names", "task"}`), or `metrics.json`'s `class_names` and `task`;
- `metrics.json`: the decision rule and thresholds the run's report used (so the compared
  decisions are the reported ones), and `config.toml`'s `[evaluation] tta` (which probabilities).

An image is known by its path relative to the folder holding all of the run's images (its data
directory), so two runs of the same data read from different places still pair up.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from keras_med.errors import RunFileError, UserError
from keras_med.evaluation.arrays import canonical_arrays
from keras_med.evaluation.decision_rule import LogitAdjustment
from keras_med.run_directory import PREDICTIONS_FILE, RunDirectory
from keras_med.comparison.statistics import Scored

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"


class ComparisonError(UserError, ValueError):
    """Runs that cannot be compared (no shared test images, other classes, labels that disagree)."""


@dataclass
class RunPredictions:
    """One run's test predictions with the identity of every test image.

    Attributes:
        name: how reports name the run (its directory as given).
        image_ids: `(N,)` image keys (path relative to the run's data directory).
        groups: `(N,)` patient/lesion group of each image.
        scored: canonical targets, probabilities (after the decision rule) and decisions.
        split_hash: SHA-256 (first 12 hex digits) of the sorted test image keys and labels.
        tta: which probabilities were read ("none" or "flips").
    """

    name: str
    image_ids: np.ndarray
    groups: np.ndarray
    scored: Scored
    split_hash: str
    tta: str


def run_folder(path: str | Path) -> Path:
    """The run directory of `path`: the folder itself, or the run of a `checkpoints/best.keras` file."""
    path = Path(path)
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not path.is_dir():
        raise RunFileError(f"{path}: no such run directory; expected e.g. runs/ham10000/<stamp>")
    return path


def _class_names_and_task(run: RunDirectory) -> tuple[list[str], str]:
    stored = run.read_class_names()
    metrics = run.read_metrics()
    stored = stored or {"class_names": metrics.get("class_names"), "task": metrics.get("task")}
    if not isinstance(stored.get("class_names"), list):
        raise RunFileError(f"{run.path}: found no class_names.json (or metrics.json with class_names); "
                           "expected a finished training run directory")
    task = stored.get("task") or metrics.get("task") or "multiclass"
    return [str(name) for name in stored["class_names"]], str(task)


def _run_tta(run: RunDirectory, arrays: dict) -> str:
    """The test-time augmentation the run reported with (config.toml), else the one stored."""
    tta = run.read_config().get("evaluation", {}).get("tta")
    stored = sorted(key[len("p_test_"):] for key in arrays if key.startswith("p_test_"))
    if tta in stored:
        return tta
    if not stored:
        raise RunFileError(f"{run.predictions_file}: holds no test probabilities (p_test_<tta>)")
    return "none" if "none" in stored else stored[0]


def image_keys(paths) -> np.ndarray:
    """Each path relative to the deepest folder holding all of them (the run's data directory)."""
    paths = [os.path.normpath(str(path)) for path in paths]
    if len(paths) == 1:
        return np.array([os.path.basename(paths[0])], dtype=object)
    root = os.path.commonpath(paths)
    return np.array([os.path.relpath(path, root) for path in paths], dtype=object)


def split_hash(image_ids, labels) -> str:
    """A short fingerprint of a test set: its image keys and labels, order-free."""
    digest = hashlib.sha256()
    for key, label in sorted(zip(map(str, image_ids), map(str, labels))):
        digest.update(f"{key}\t{label}\n".encode("utf-8"))
    return digest.hexdigest()[:12]


def decisions_of(task: str, y_prob: np.ndarray, thresholds) -> np.ndarray:
    """Argmax (multiclass); the positive class's threshold (binary); each label's (multilabel). None: 0.5."""
    if task == "multiclass":
        return y_prob.argmax(axis=1)
    if task == "binary":
        return (y_prob >= (0.5 if not thresholds else float(thresholds[0]))).astype(np.int64)
    limits = np.full(y_prob.shape[1], 0.5) if not thresholds else np.asarray(thresholds, np.float64)
    return (y_prob >= limits[None, :]).astype(np.int64)


def load_run_predictions_for_comparison(path: str | Path) -> RunPredictions:
    """A run directory's test predictions, after its decision rule, with its decisions.

    Raises:
        RunFileError: a file is missing or unreadable (named, with what was expected).
    """
    folder = run_folder(path)
    run = RunDirectory(folder)
    if not run.predictions_file.is_file():
        raise RunFileError(f"{folder}: no {PREDICTIONS_FILE}; expected a run directory of a finished training "
                           "(every recipe run writes its test probabilities there)")
    if not run.split_file.is_file():
        raise RunFileError(f"{folder}: no {SPLIT_FILE}; expected the split the run's test images came from")
    arrays = run.read_predictions()
    class_names, task = _class_names_and_task(run)
    tta = _run_tta(run, arrays)
    frame = pd.read_csv(run.split_file)
    missing = [column for column in ("path", "label", "split") if column not in frame.columns]
    if missing:
        raise RunFileError(f"{run.split_file}: missing column(s) {missing}; expected path, label, group, split")
    keys = image_keys(frame["path"])
    test = (frame["split"] == "test").to_numpy()
    if "y_test" not in arrays:
        raise RunFileError(f"{run.predictions_file}: holds no y_test; expected the file a recipe run writes")
    y_prob = arrays[f"p_test_{tta}"]
    if len(y_prob) != int(test.sum()):
        raise RunFileError(f"{folder}: {PREDICTIONS_FILE} holds {len(y_prob)} test predictions but {SPLIT_FILE} "
                           f"lists {int(test.sum())} test images; expected the files of one run")
    try:
        y_true, y_prob = canonical_arrays(task, arrays["y_test"], y_prob, class_names, "_test")
    except ValueError as error:
        raise RunFileError(f"{run.predictions_file}: {error}") from error
    metrics = run.read_metrics()
    rule = LogitAdjustment.from_dict(metrics.get("decision_rule")) if task == "multiclass" else None
    if rule is not None:
        y_prob = rule.apply(y_prob)
    thresholds = metrics.get("thresholds") if task != "multiclass" else None
    groups_column = "group" if "group" in frame.columns else "path"
    test_frame = frame[test]
    return RunPredictions(
        name=str(path), image_ids=keys[test], groups=test_frame[groups_column].astype(str).to_numpy(),
        scored=Scored(task, class_names, y_true, y_prob, decisions_of(task, y_prob, thresholds)),
        split_hash=split_hash(keys[test], test_frame["label"].astype(str)), tta=tta)


def _subset(run: RunPredictions, order: np.ndarray) -> RunPredictions:
    scored = run.scored
    return RunPredictions(run.name, run.image_ids[order], run.groups[order],
                          Scored(scored.task, scored.class_names, scored.y_true[order], scored.y_prob[order],
                                 scored.decided[order]), run.split_hash, run.tta)


def align_runs(runs: list[RunPredictions]) -> tuple[list[RunPredictions], str]:
    """The runs restricted to the test images all of them share, in one order.

    Returns:
        `(aligned runs, note)`; the note says whether the test sets are the same (one hash) or how
        many images were left out.

    Raises:
        ComparisonError: other classes or tasks, no shared test image, or a shared image labelled
            differently in two runs.
    """
    first = runs[0]
    for run in runs[1:]:
        if (run.scored.task, run.scored.class_names) != (first.scored.task, first.scored.class_names):
            raise ComparisonError(f"{run.name} predicts {run.scored.task} {run.scored.class_names} but {first.name} "
                                  f"predicts {first.scored.task} {first.scored.class_names}; expected the same classes")
    shared = set(first.image_ids)
    for run in runs[1:]:
        shared &= set(run.image_ids)
    if not shared:
        raise ComparisonError(f"{first.name} and {runs[1].name if len(runs) > 1 else first.name} share no test "
                              "image (by path relative to the data directory); expected runs on the same test split")
    ordered = np.array(sorted(shared), dtype=object)
    aligned = []
    for run in runs:
        position = {key: index for index, key in enumerate(run.image_ids)}
        aligned.append(_subset(run, np.array([position[key] for key in ordered])))
    for run in aligned[1:]:
        disagree = np.flatnonzero(np.any((run.scored.y_true != aligned[0].scored.y_true).reshape(len(ordered), -1),
                                         axis=1))
        if disagree.size:
            raise ComparisonError(f"{run.name}: test image {ordered[disagree[0]]} is labelled differently than in "
                                  f"{aligned[0].name} ({disagree.size} such images); expected the same labels")
    hashes = sorted({run.split_hash for run in runs})
    if len(hashes) == 1:
        note = f"same test set in every run (split hash {hashes[0]}, {len(ordered)} images)"
    else:
        sizes = ", ".join(f"{run.name}: {len(run.image_ids)}" for run in runs)
        note = (f"test sets differ (split hashes {', '.join(hashes)}); compared on the {len(ordered)} images "
                f"all runs share ({sizes})")
        logger.warning("%s", note)
    return aligned, note


def save_test_predictions(out_dir: str | Path, table, targets, probabilities, tta: str = "none") -> Path:
    """Make an evaluation folder comparable: its test rows as `split.csv`, its probabilities as `predictions.npz`.

    For `keras-med evaluate`'s output (an external test set, a SavedModel scored as served), which
    otherwise keeps no per-image predictions. Written atomically, in the layout a recipe run uses.

    Args:
        out_dir: the evaluation's output folder (it holds `metrics.json` with class names and thresholds).
        table: the `ImageTable` of the scored images (`path`, `label`, `group`), in prediction order.
        targets: their targets in the pipeline's encoding.
        probabilities: the probabilities scored (a SavedModel's: after its decision rule).
        tta: the test-time augmentation they were predicted with.
    """
    # Imported here: the data layer starts TensorFlow, which reading predictions does not need.
    from keras_med.data.splits import save_split

    out_dir = Path(out_dir)
    frame = table.frame.assign(split="test")
    save_split(type(table)(frame, table.class_names, table.task, table.long_names, table.group_column),
               out_dir / SPLIT_FILE)
    return RunDirectory(out_dir).write_predictions(
        {"y_test": np.asarray(targets), f"p_test_{tta}": np.asarray(probabilities, np.float32)})
