"""Evaluation plots as PNG files: training curves, confusion matrices, ROC/PR, reliability, mistakes.

Figures are built with `matplotlib.figure.Figure` (the Agg canvas, no pyplot global state), so
plotting works headless and from several threads. Every function writes one file and returns
its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

_DPI = 110


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Loss, the main metric and the learning rate per epoch; phase changes as dotted lines.

    Args:
        history: CSVLogger history; rows in order are the run's epochs across phases.
        path: PNG file to write.
    """
    epochs = np.arange(1, len(history) + 1)
    metric = next((m for m in ("balanced_accuracy", "accuracy", "auc") if m in history), None)
    panels = ["loss"] + ([metric] if metric else []) + (["learning_rate"] if "learning_rate" in history else [])
    figure = Figure(figsize=(4.2 * len(panels), 3.4))
    for index, name in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        axes.plot(epochs, history[name], marker=".", label=f"train {name}" if name != "learning_rate" else name)
        if f"val_{name}" in history:
            axes.plot(epochs, history[f"val_{name}"], marker=".", label=f"validation {name}")
        if name == "learning_rate":
            axes.set_yscale("log")
        if "phase" in history:
            phase = history["phase"].astype(str).to_numpy()
            for change in np.flatnonzero(phase[1:] != phase[:-1]):
                axes.axvline(change + 1.5, color="grey", linestyle=":")
        axes.set_xlabel("epoch")
        axes.set_title(name.replace("_", " "))
        axes.legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(matrix, class_names, path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    size = max(4.0, 0.55 * len(class_names) + 2.5)
    figure = Figure(figsize=(2 * size + 1, size))
    for index, (values, name, fmt) in enumerate(((matrix, "counts", "{:.0f}"),
                                                 (normalised, "row-normalised", "{:.2f}"))):
        axes = figure.add_subplot(1, 2, index + 1)
        image = axes.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axes, fraction=0.046)
        ticks = np.arange(len(class_names))
        axes.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(ticks, class_names, fontsize=8)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(f"{title} {name}".strip())
        limit = values.max() / 2 if values.max() > 0 else 0.5
        for row in range(values.shape[0]):
            for column in range(values.shape[1]):
                axes.text(column, row, fmt.format(values[row, column]), ha="center", va="center", fontsize=7,
                          color="white" if values[row, column] > limit else "black")
    figure.tight_layout()
    return _save(figure, path)


def plot_label_confusions(per_class: dict, path: str | Path) -> Path:
    """One 2x2 confusion matrix per label (multilabel), each at its own threshold."""
    names = [name for name, entry in per_class.items() if "confusion_matrix" in entry]
    columns = min(4, len(names))
    rows = int(np.ceil(len(names) / columns))
    figure = Figure(figsize=(2.6 * columns, 2.6 * rows))
    for index, name in enumerate(names):
        matrix = np.asarray(per_class[name]["confusion_matrix"])
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(matrix, cmap="Blues", vmin=0)
        axes.set_xticks([0, 1], ["neg", "pos"], fontsize=7)
        axes.set_yticks([0, 1], ["neg", "pos"], fontsize=7)
        axes.set_title(f"{name}\n(t={per_class[name]['threshold']:.2f})", fontsize=8)
        for row in range(2):
            for column in range(2):
                axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=8,
                          color="white" if matrix[row, column] > matrix.max() / 2 else "black")
    figure.tight_layout()
    return _save(figure, path)


def plot_roc_curves(indicator: np.ndarray, scores: np.ndarray, names, path: str | Path) -> Path:
    """One-vs-rest ROC curve per column (columns without both classes are skipped)."""
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot(1, 1, 1)
    for k, name in enumerate(names):
        if indicator[:, k].min() == indicator[:, k].max():
            continue
        false_pos, true_pos, _ = roc_curve(indicator[:, k], scores[:, k])
        axes.plot(false_pos, true_pos, label=name)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("1 - specificity (false positive rate)")
    axes.set_ylabel("sensitivity (true positive rate)")
    axes.set_title("ROC curves")
    axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_pr_curves(indicator: np.ndarray, scores: np.ndarray, names, path: str | Path) -> Path:
    """One-vs-rest precision-recall curve per column, with each column's prevalence as a baseline."""
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot(1, 1, 1)
    for k, name in enumerate(names):
        if indicator[:, k].max() == 0:
            continue
        precision, recall, _ = precision_recall_curve(indicator[:, k], scores[:, k])
        line = axes.plot(recall, precision, label=name)[0]
        axes.axhline(indicator[:, k].mean(), color=line.get_color(), linestyle=":", linewidth=0.7)
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision (PPV)")
    axes.set_title("Precision-recall curves (dotted: prevalence)")
    axes.legend(fontsize=7, loc="lower left")
    return _save(figure, path)


def plot_reliability(before: dict, path: str | Path, after: dict | None = None,
                     ece_before: float | None = None, ece_after: float | None = None) -> Path:
    """Reliability diagram (observed frequency against confidence), before and after scaling.

    Args:
        before: `reliability_bins` output for the raw probabilities.
        path: PNG file to write.
        after: `reliability_bins` output after temperature scaling, or None.
        ece_before: ECE shown in the legend. ece_after: likewise after scaling.
    """
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfect calibration")
    for bins, name, ece in ((before, "model", ece_before), (after, "temperature-scaled", ece_after)):
        if bins is None:
            continue
        filled = bins["count"] > 0
        label = name if ece is None else f"{name} (ECE {ece:.3f})"
        axes.plot(bins["confidence"][filled], bins["frequency"][filled], marker="o", label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("observed frequency")
    axes.set_title("Reliability diagram (test split)")
    axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path)


def plot_image_grid(images, titles, path: str | Path, columns: int = 4) -> Path:
    """A grid of images (float 0..255 or uint8, `(S, S, 3)`) with a title under each."""
    count = len(images)
    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows))
    for index, (image, title) in enumerate(zip(images, titles)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8))
        axes.set_title(title, fontsize=7)
        axes.axis("off")
    figure.tight_layout()
    return _save(figure, path)
