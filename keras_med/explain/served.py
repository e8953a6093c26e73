"""Grad-CAM answered by the served model's `explain` signature (a SavedModel here or TF Serving).

Unlike `keras_med.explain.files`, this needs neither the `.keras` model nor tf-keras-vis: the
heat map and its overlay come back with the prediction (see `keras_med.export.explain_signature`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from keras_med.errors import UserError
from keras_med.export.predictions import Prediction, predictions_from_rows, read_image_file, sha256

logger = logging.getLogger(__name__)


@dataclass
class ServedExplanation:
    """One image's answer and its Grad-CAM from the `explain` signature.

    Attributes:
        prediction: The answer (top class, probabilities, decisions, trust outputs, validity).
        explained_class: The class the map explains ("" when the image is invalid).
        heatmap: float32 (S, S) in 0..1 at the model size (empty when invalid).
        overlay_png: The map blended over the image the model saw, as PNG bytes (b"" when invalid).
    """

    prediction: Prediction
    explained_class: str
    heatmap: np.ndarray
    overlay_png: bytes

    def overlay(self) -> np.ndarray | None:
        """The overlay as uint8 (S, S, 3) pixels, or None for an invalid image."""
        return np.asarray(Image.open(io.BytesIO(self.overlay_png)).convert("RGB")) if self.overlay_png else None


def explain_images(predictor, images: list[bytes], sources: list[str], class_indices=-1) -> list[ServedExplanation]:
    """Ask the predictor's `explain` signature about encoded images.

    Args:
        predictor: A `keras_med.export.predictor.Predictor` (local SavedModel or `RestPredictor`).
        images: Encoded images.
        sources: A name per image (for the answers and messages).
        class_indices: The class to explain, one int for all or one per image; -1: the top class.

    Returns:
        One `ServedExplanation` per image; a bad image is an invalid answer naming why, not an error.
    """
    indices = np.broadcast_to(np.asarray(class_indices, np.int64), (len(images),)).tolist()
    rows = predictor.answer_explain(list(images), indices)
    answers = predictions_from_rows(rows, list(sources), [sha256(data) for data in images])
    explanations = []
    for row, answer in zip(rows, answers):
        name = row.get("explained_class_name", b"")
        name = name.decode("utf-8") if isinstance(name, (bytes, np.bytes_)) else str(name)
        overlay = row.get("overlay_png_bytes", b"")
        explanations.append(ServedExplanation(answer, name if answer.valid else "",
                                              np.asarray(row.get("heatmap", []), np.float32),
                                              bytes(overlay) if answer.valid else b""))
    return explanations


def class_index_of(predictor, class_name: str | None, probe: bytes) -> int:
    """The index of `class_name` in the served model's class names (-1 for None), asked with one image."""
    if class_name is None:
        return -1
    names = [name.decode("utf-8") if isinstance(name, bytes) else str(name)
             for name in predictor.answer_image_bytes([probe])[0]["class_names"]]
    if class_name not in names:
        raise UserError(f"--class {class_name}: the model's classes are {names}")
    return names.index(class_name)


def explain_files_served(predictor, image_paths, out_dir, class_name: str | None = None) -> list[Path]:
    """Write `<stem>_gradcam.png` (the image and the served Grad-CAM side by side) per valid image.

    Args:
        predictor: A `Predictor` whose model has the `explain` signature.
        image_paths: Image files.
        out_dir: Folder for the PNG files.
        class_name: The class to explain; None: each image's top class.

    Returns:
        The files written; an invalid image is logged with its reason and skipped.
    """
    paths = [Path(path) for path in image_paths]
    images = [read_image_file(path) for path in paths]
    index = class_index_of(predictor, class_name, images[0])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, data, explanation in zip(paths, images, explain_images(predictor, images, [str(p) for p in paths],
                                                                     index)):
        answer = explanation.prediction
        if not answer.valid:
            logger.warning("%s: not explained: %s", path, answer.error)
            continue
        overlay = explanation.overlay()
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(overlay.shape[1::-1], Image.BILINEAR)
        title = (f"{path.name}: predicted {answer.top_class} ({answer.probabilities[answer.top_class]:.2f}); "
                 f"map for {explanation.explained_class}")
        written.append(_save_side_by_side(out_dir / f"{path.stem}_gradcam.png", np.asarray(image), overlay, title))
    logger.info("Wrote %d served Grad-CAM overlays to %s", len(written), out_dir)
    return written


def _save_side_by_side(path: Path, image: np.ndarray, overlay: np.ndarray, title: str) -> Path:
    figure = Figure(figsize=(6, 3.3))
    for index, (picture, caption) in enumerate(((image, "image"), (overlay, "Grad-CAM (served)"))):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.imshow(picture)
        axes.set_title(caption, fontsize=8)
        axes.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path
