"""Balanced accuracy of a run's checkpoint when its validation and test images are fed at other sizes.

    PYTHONPATH=. python benchmarks/test_resolution.py RUN_DIR [RUN_DIR ...] --sizes 160 176 192 208

A convolutional backbone with global average pooling takes any input size; a model trained on
images zoomed by augmentation often scores better when tested a little larger than it was trained
("FixRes", Touvron et al., NeurIPS 2019). Each size rebuilds the run's architecture at that size
(`create_model`, no pretrained weights), copies the checkpoint's weights into it, and predicts the
run's validation and test images (its split.csv) resized to that size. Prints one JSON object per
run: balanced accuracy per split and size. Multiclass runs only.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from keras_med.data.pipeline import build_image_pipeline
from keras_med.models import create_model
from keras_med.run_directory import load_trained_model


def size_scores(run: Path, sizes: list[int]) -> dict:
    trained = load_trained_model(run / "checkpoints" / "best.keras")
    names = trained.run.class_names
    model_config = tomllib.loads((run / "config.toml").read_text())["model"]
    split = pd.read_csv(run / "split.csv")
    weights = trained.model.get_weights()
    scores: dict[str, dict[int, float]] = {"val": {}, "test": {}}
    for size in sizes:
        model = create_model(model_config["model"], num_classes=len(names), image_size=size, weights=None,
                             dropout=model_config["dropout"], head_units=model_config["head_units"],
                             width=model_config.get("width", 1.0))
        model.set_weights(weights)
        for part in scores:
            rows = split[split["split"] == part]
            y = np.array([names.index(label) for label in rows["label"]])
            dataset = build_image_pipeline(rows["path"].tolist(), np.eye(len(names), dtype="float32")[y],
                                           image_size=size, batch_size=64, training=False)
            probabilities = np.concatenate([model.predict_on_batch(images) for images, _ in dataset])
            scores[part][size] = round(balanced_accuracy_score(y, probabilities.argmax(1)), 4)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run directories (checkpoints/best.keras, split.csv).")
    parser.add_argument("--sizes", nargs="+", type=int, default=[160, 176, 192, 208])
    args = parser.parse_args()
    for run in args.runs:
        print(json.dumps({"run": str(run), **size_scores(run, args.sizes)}))


if __name__ == "__main__":
    main()
