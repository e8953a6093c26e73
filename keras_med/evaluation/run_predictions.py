"""A run's validation and test probabilities, kept in `RUN_DIR/predictions.npz`.

Every recipe run writes the raw model probabilities it evaluated (before the decision rule), so
ensembles of runs, cross-validation folds and the decision-rule table can be scored later without
predicting again. Keys: `y_val`, `y_test` (targets in the pipeline's encoding) and
`p_<split>_<tta>` (e.g. `p_test_none`, `p_val_flips`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from keras_med.run_directory import RunDirectory

logger = logging.getLogger(__name__)


def load_run_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of `RUN_DIR/predictions.npz`, or an empty dict when there is none."""
    return RunDirectory(run_dir).read_predictions()


def save_run_predictions(run_dir: str | Path, targets: dict, probabilities: dict, tta: str) -> Path:
    """Add (or replace) one TTA mode's probabilities in `RUN_DIR/predictions.npz`, atomically.

    Args:
        run_dir: the run directory.
        targets: `{"val": y_val, "test": y_test}` in the pipeline's encoding.
        probabilities: `{"val": p_val, "test": p_test}`, the model's raw probabilities.
        tta: the test-time augmentation they were predicted with ("none" or "flips").
    """
    run = RunDirectory(run_dir)
    arrays = run.read_predictions()
    for split in ("val", "test"):
        arrays[f"y_{split}"] = np.asarray(targets[split])
        arrays[f"p_{split}_{tta}"] = np.asarray(probabilities[split], np.float32)
    return run.write_predictions(arrays)


def run_predictions(run_dir: str | Path, tta_modes=("none", "flips"), batch_size: int = 32) -> dict[str, np.ndarray]:
    """The run's cached probabilities, predicting (with its best checkpoint) the TTA modes missing.

    Args:
        run_dir: a finished run directory (`checkpoints/best.keras`, `split.csv`).
        tta_modes: the modes wanted.
        batch_size: images per prediction batch.
    """
    run_dir = Path(run_dir)
    arrays = load_run_predictions(run_dir)
    missing = [tta for tta in tta_modes if f"p_test_{tta}" not in arrays]
    if not missing:
        return arrays
    # Imported here: loading a model and images starts TensorFlow, which reading the cache does not need.
    from keras_med import data as kdata
    from keras_med.evaluation.tta import predict_with_tta

    run = RunDirectory(run_dir)
    trained = run.load_model()
    table = kdata.load_split(run.split_file, trained.run.class_names, trained.run.task)
    parts = {split: table.subset(split) for split in ("val", "test")}
    for tta in missing:
        probabilities = {}
        for split, part in parts.items():
            dataset = kdata.build_image_pipeline(part.images(), part.targets(), image_size=trained.image_size,
                                                 batch_size=batch_size, training=False, augment="none",
                                                 resize=trained.run.resize, cache="none")
            probabilities[split] = predict_with_tta(trained.model, dataset, tta)
            logger.info("predicted %d %s images of %s (tta=%s)", len(part.frame), split, run_dir, tta)
        save_run_predictions(run_dir, {split: part.targets() for split, part in parts.items()}, probabilities, tta)
    return load_run_predictions(run_dir)
