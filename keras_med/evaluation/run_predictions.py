"""A run's validation and test probabilities, kept in `RUN_DIR/predictions.npz`.

Every recipe run writes the raw model probabilities it evaluated (before the decision rule), so
ensembles of runs, cross-validation folds and the decision-rule table can be scored later without
predicting again. Keys: `y_val`, `y_test` (targets in the pipeline's encoding) and
`p_<split>_<tta>` (e.g. `p_test_none`, `p_val_flips`).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from keras_med.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.npz"


# predictions.npz files written by an earlier analysis script (HAM10000 runs of issue 16) name the
# same arrays differently; they are read under these names rather than predicted again.
_EARLIER_NAMES = {"y_val": "val_y", "y_test": "test_y", "p_val_none": "val_p", "p_test_none": "test_p",
                  "p_val_flips": "val_pf", "p_test_flips": "test_pf"}


def load_run_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of `RUN_DIR/predictions.npz`, or an empty dict when there is none."""
    path = Path(run_dir) / PREDICTIONS_FILE
    arrays = dict(np.load(path)) if path.is_file() else {}
    for name, earlier in _EARLIER_NAMES.items():
        if name not in arrays and earlier in arrays:
            arrays[name] = arrays[earlier]
    return arrays


def save_run_predictions(run_dir: str | Path, targets: dict, probabilities: dict, tta: str) -> Path:
    """Add (or replace) one TTA mode's probabilities in `RUN_DIR/predictions.npz`, atomically.

    Args:
        run_dir: the run directory.
        targets: `{"val": y_val, "test": y_test}` in the pipeline's encoding.
        probabilities: `{"val": p_val, "test": p_test}`, the model's raw probabilities.
        tta: the test-time augmentation they were predicted with ("none" or "flips").
    """
    arrays = load_run_predictions(run_dir)
    for split in ("val", "test"):
        arrays[f"y_{split}"] = np.asarray(targets[split])
        arrays[f"p_{split}_{tta}"] = np.asarray(probabilities[split], np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(Path(run_dir) / PREDICTIONS_FILE, buffer.getvalue())


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
    from keras_med.run_directory import load_trained_model

    trained = load_trained_model(run_dir / "checkpoints" / "best.keras")
    table = kdata.load_split(run_dir / "split.csv", trained.run.class_names, trained.run.task)
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
