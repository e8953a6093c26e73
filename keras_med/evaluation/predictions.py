"""Per-image decisions in words: which images the model got right or wrong, and how confidently.

Used to pick the most confident mistakes for the error grid and the right and wrong examples
that get Grad-CAM overlays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Decisions:
    """Per-image outcome of canonical predictions.

    Attributes:
        correct: `(N,)` bool, the decision matches the target (multilabel: on every label).
        confidence: `(N,)` how sure the decision was (probability of the decided class; multilabel:
            the largest distance of a probability from its threshold).
        predicted_index: `(N,)` class index (in `class_names`) the decision is about, for Grad-CAM.
        true_text: `(N,)` the target in words. predicted_text: the decision in words.
    """
    correct: np.ndarray
    confidence: np.ndarray
    predicted_index: np.ndarray
    true_text: list[str]
    predicted_text: list[str]

    def most_confident(self, correct: bool, count: int) -> np.ndarray:
        """Indices of the `count` most confident right (`correct=True`) or wrong decisions."""
        candidates = np.flatnonzero(self.correct == correct)
        order = np.argsort(-self.confidence[candidates], kind="mergesort")
        return candidates[order[:count]]


def decide(task: str, y_true: np.ndarray, y_prob: np.ndarray, class_names, thresholds=None) -> Decisions:
    """Decisions of canonical predictions: argmax (multiclass), thresholds (binary, multilabel; 0.5 if None)."""
    class_names = list(class_names)
    if task == "multiclass":
        predicted = y_prob.argmax(axis=1)
        return Decisions(predicted == y_true, y_prob.max(axis=1), predicted,
                         [class_names[i] for i in y_true], [class_names[i] for i in predicted])
    if task == "binary":
        threshold = 0.5 if thresholds is None else float(thresholds[0])
        predicted = (y_prob >= threshold).astype(np.int64)
        confidence = np.where(predicted == 1, y_prob, 1.0 - y_prob)
        return Decisions(predicted == y_true, confidence, predicted,
                         [class_names[i] for i in y_true], [class_names[i] for i in predicted])
    limits = np.full(y_prob.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    flagged = (y_prob >= limits[None, :]).astype(np.int64)
    margin = np.abs(y_prob - limits[None, :]).max(axis=1)

    def words(rows: np.ndarray) -> list[str]:
        return ["|".join(class_names[j] for j in np.flatnonzero(row)) or "none" for row in rows]

    return Decisions((flagged == y_true).all(axis=1), margin, y_prob.argmax(axis=1), words(y_true), words(flagged))


def fetch_images(source: Callable[[int], np.ndarray] | np.ndarray, indices) -> np.ndarray:
    """Images at `indices` from an array `(N, S, S, 3)` or a callable `index -> image`, as float32."""
    if callable(source):
        return np.stack([np.asarray(source(int(i)), dtype=np.float32) for i in indices])
    return np.asarray(source, dtype=np.float32)[np.asarray(indices, dtype=np.int64)]
