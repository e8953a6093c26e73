"""Heatmap overlays: blend a Grad-CAM map over its image and save image and overlay side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from keras_med.explain.gradcam import compute_gradcam


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 image with the heatmap (0..1, same height and width) in the 'jet' colours on top.

    Args:
        image: `(S, S, 3)` image in 0..255.
        heatmap: `(S, S)` map in 0..1.
        alpha: weight of the heatmap colours.
    """
    image = np.asarray(image, dtype=np.float32)
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap: expected the image's size {image.shape[:2]}, got {heatmap.shape}")
    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def save_overlay(path: str | Path, image: np.ndarray, heatmap: np.ndarray, title: str = "",
                 method: str = "gradcam") -> Path:
    """Write a PNG with the image and its Grad-CAM (or Grad-CAM++) overlay side by side."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 3.3))
    for index, (picture, caption) in enumerate(((np.clip(image, 0, 255).astype(np.uint8), "image"),
                                                (blend_heatmap(image, heatmap), METHOD_NAMES.get(method, method)))):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.imshow(picture)
        axes.set_title(caption, fontsize=8)
        axes.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def save_overlays(model, images, out_dir: str | Path, names, class_indices=None, method: str = "gradcam",
                  titles=None) -> list[Path]:
    """Compute heatmaps for a batch of images and write one overlay PNG per image.

    Args:
        model: the Keras model.
        images: float `(N, S, S, 3)` images in 0..255, at the model's input size.
        out_dir: directory for the PNG files.
        names: N file stems (`<name>.png`).
        class_indices: the class explained per image (see `compute_gradcam`); None: the predicted one.
        method: "gradcam" or "gradcam++".
        titles: optional N titles.
    """
    names = list(names)
    if len(names) != len(images):
        raise ValueError(f"names: expected one name per image ({len(images)}), got {len(names)}")
    heatmaps = compute_gradcam(model, images, class_index=class_indices, method=method)
    titles = list(titles) if titles is not None else [""] * len(names)
    return [save_overlay(Path(out_dir) / f"{name}.png", image, heatmap, title, method)
            for name, image, heatmap, title in zip(names, images, heatmaps, titles)]
