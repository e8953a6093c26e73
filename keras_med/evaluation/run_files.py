"""Read what a trained model needs from its run directory: class names, task, resize mode, thresholds.

A recipe run stores the checkpoint at `run_dir/checkpoints/best.keras` and writes
`class_names.json` (class names, task, long names, image size), `config.toml` and
`metrics.json` into `run_dir`. These helpers look beside the model file and one level up.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path


def find_run_file(model_path: str | Path, name: str) -> Path | None:
    """`name` beside the model file or in its parent directory (the run dir of a checkpoint), or None."""
    model_path = Path(model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def load_run_metadata(model_path: str | Path) -> dict:
    """Class names, task, long names, resize mode and thresholds of a trained model.

    Args:
        model_path: the `.keras` file (e.g. `runs/ham10000/<stamp>/checkpoints/best.keras`).

    Returns:
        `{"class_names", "task", "long_names", "resize", "thresholds"}`; `thresholds` is None when
        no metrics.json is found, `resize` is "resize" when no config.toml is found.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model_path: no model file at {model_path}")
    metadata = {"long_names": {}, "resize": "resize", "thresholds": None}
    metrics_file = find_run_file(model_path, "metrics.json")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file else {}
    names_file = find_run_file(model_path, "class_names.json")
    if names_file is not None:
        stored = json.loads(names_file.read_text(encoding="utf-8"))
        if isinstance(stored, list):
            stored = {"class_names": stored}
        metadata.update({key: stored[key] for key in ("class_names", "task", "long_names") if key in stored})
    for key in ("class_names", "task"):
        if key not in metadata and key in metrics:
            metadata[key] = metrics[key]
    if "class_names" not in metadata or "task" not in metadata:
        raise FileNotFoundError(
            f"model_path: found no class_names.json (with class_names and task) or metrics.json beside "
            f"{model_path} or in {model_path.parent.parent}; put the model in its run directory or write "
            'class_names.json as {"class_names": [...], "task": "multiclass"}')
    metadata["thresholds"] = metrics.get("thresholds")
    config_file = find_run_file(model_path, "config.toml")
    if config_file is not None:
        with config_file.open("rb") as handle:
            metadata["resize"] = tomllib.load(handle).get("data", {}).get("resize", "resize")
    return metadata


def load_trained_model(model_path: str | Path):
    """Load a `.keras` model for inference (uncompiled, so training-only losses and metrics are not needed)."""
    # Imported here so that reading metadata does not start TensorFlow.
    import keras

    import keras_med.models  # noqa: F401  (registers the project's serialisable layers, if any)

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model_path: no model file at {model_path}")
    return keras.saving.load_model(model_path, compile=False)
