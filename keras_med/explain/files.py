"""Grad-CAM overlays for image files, given a trained `.keras` model in its run directory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from keras_med.errors import ConfigError, RunFileError
from keras_med.explain.gradcam import METHODS
from keras_med.explain.overlay import save_overlays
from keras_med.run_directory import load_trained_model, read_run_info

logger = logging.getLogger(__name__)


def explain_files(model_path, image_paths, out_dir, method: str = "gradcam", class_name: str | None = None) -> list[Path]:
    """Write one Grad-CAM overlay PNG per image file into `out_dir`.

    Class names and the resize mode come from the run directory (`class_names.json`,
    `config.toml`, `metrics.json` beside the model or one level up); the image size from the
    model's input shape.

    Args:
        model_path: the `.keras` model (e.g. `runs/ham10000/<stamp>/checkpoints/best.keras`).
        image_paths: JPEG or PNG files.
        out_dir: directory for `<image stem>_<method>.png`.
        method: "gradcam" or "gradcam++".
        class_name: the class to explain; None explains each image's predicted class.

    Returns:
        The overlay paths, in the order of `image_paths`.
    """
    # Imported here so the metadata checks above the model load fail fast without TensorFlow's start-up.
    from keras_med.data import load_image

    if method not in METHODS:
        raise ConfigError(f"method: expected one of {list(METHODS)}, got {method!r}")
    image_paths = [Path(p) for p in ([image_paths] if isinstance(image_paths, (str, Path)) else image_paths)]
    if not image_paths:
        raise ConfigError("image_paths: expected at least one image file, got none")
    missing = [str(p) for p in image_paths if not p.is_file()]
    if missing:
        raise RunFileError(f"image_paths: no such file(s): {missing}")
    # The class is checked against the run's names before the model is loaded, to fail fast.
    class_names = read_run_info(model_path).class_names
    class_index = None
    if class_name is not None:
        if class_name not in class_names:
            raise ConfigError(f"class_name: expected one of {class_names}, got {class_name!r}")
        class_index = class_names.index(class_name)

    trained = load_trained_model(model_path)
    model, image_size = trained.model, trained.image_size
    images = np.stack([np.asarray(load_image(str(p), image_size, trained.run.resize), dtype=np.float32)
                       for p in image_paths])
    probabilities = np.asarray(model.predict(images, verbose=0))
    titles = []
    for path, row in zip(image_paths, probabilities):
        if row.shape[0] == 1:
            predicted, confidence = int(row[0] >= 0.5), float(max(row[0], 1 - row[0]))
        else:
            predicted, confidence = int(row.argmax()), float(row.max())
        shown = class_names[class_index] if class_index is not None else class_names[predicted]
        titles.append(f"{path.name}: predicted {class_names[predicted]} ({confidence:.2f}); map for {shown}")
    suffix = method.replace("+", "p")
    written = save_overlays(model, images, out_dir, names=[f"{p.stem}_{suffix}" for p in image_paths],
                            class_indices=class_index, method=method, titles=titles)
    logger.info("Wrote %d %s overlays to %s", len(written), method, out_dir)
    return written
