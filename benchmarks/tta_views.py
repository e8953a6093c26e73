"""Balanced accuracy of a run's checkpoint with no test-time augmentation, flips (3 views, as
`--tta flips` serves) and the dihedral group (8 views: four 90-degree rotations, each also mirrored).

    PYTHONPATH=. python benchmarks/tta_views.py RUN_DIR [RUN_DIR ...]

Predicts each view of the run's validation and test images once (its split.csv) and prints one JSON
object per run. Multiclass runs only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from keras_med.data.pipeline import build_image_pipeline
from keras_med.run_directory import load_trained_model


def view(images: np.ndarray, index: int) -> np.ndarray:
    """View `index` (0..7) of `(B, H, W, C)` images: rotation by `index % 4` quarter turns, mirrored when `index >= 4`."""
    rotated = np.rot90(images, index % 4, axes=(1, 2))
    return np.ascontiguousarray(rotated[:, :, ::-1] if index >= 4 else rotated)


def view_scores(run: Path) -> dict:
    trained = load_trained_model(run / "checkpoints" / "best.keras")
    names = trained.run.class_names
    split = pd.read_csv(run / "split.csv")
    scores = {}
    for part in ("val", "test"):
        rows = split[split["split"] == part]
        y = np.array([names.index(label) for label in rows["label"]])
        dataset = build_image_pipeline(rows["path"].tolist(), np.eye(len(names), dtype="float32")[y],
                                       image_size=trained.image_size, batch_size=64, training=False)
        probabilities = [[] for _ in range(8)]
        for images, _ in dataset:
            for index in range(8):
                probabilities[index].append(trained.model.predict_on_batch(view(np.asarray(images), index)))
        views = [np.concatenate(p) for p in probabilities]
        # View 4 mirrors left-right; view 6 (half turn, then mirrored) is the up-down flip.
        combined = {"none": views[0], "flips": (views[0] + views[4] + views[6]) / 3, "dihedral": sum(views) / 8}
        scores[part] = {name: round(balanced_accuracy_score(y, p.argmax(1)), 4) for name, p in combined.items()}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run directories (checkpoints/best.keras, split.csv).")
    for run in parser.parse_args().runs:
        print(json.dumps({"run": str(run), **view_scores(run)}))


if __name__ == "__main__":
    main()
