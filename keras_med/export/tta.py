"""Test-time augmentation on the client: how much does one answer move under flips and small shifts?

The served model stays deterministic; `keras-med predict --tta-spread N` sends N augmented copies of each
image through `predict_pixels` and reports, per class, the standard deviation of the probability.
A large spread says the answer hangs on details an irrelevant change of the image moves.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Shifts as a share of the image side, in the order the copies use them after the flips.
SHIFTS = ((0.04, 0.0), (-0.04, 0.0), (0.0, 0.04), (0.0, -0.04), (0.04, 0.04), (-0.04, -0.04))


def augmented_copies(image: np.ndarray, count: int) -> np.ndarray:
    """`count` copies of `image` (H, W, 3): the original, both flips, then small shifts (edges repeated).

    Args:
        image: float32 or uint8 pixels `(H, W, 3)` in 0..255.
        count: Number of copies, at least 1; beyond 9 the shifts repeat on the flipped image.

    Returns:
        float32 `(count, H, W, 3)`.
    """
    if count < 1:
        raise ValueError(f"--tta-spread needs at least one copy, got {count}")
    image = np.asarray(image, np.float32)
    height, width = image.shape[:2]
    copies = [image, image[:, ::-1], image[::-1]]
    index = 0
    while len(copies) < count:
        dy, dx = SHIFTS[index % len(SHIFTS)]
        base = image if (index // len(SHIFTS)) % 2 == 0 else image[:, ::-1]
        copies.append(_shift(base, int(round(dy * height)), int(round(dx * width))))
        index += 1
    return np.stack(copies[:count])


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(image, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[top:top + image.shape[0], left:left + image.shape[1]]


def probability_spread(predictor, path: str, count: int) -> dict[str, float]:
    """Standard deviation of each class's probability over `count` augmented copies of the image file.

    Args:
        predictor: A `keras_med.export.predictor.Predictor` (local model or server).
        path: JPEG or PNG file.
        count: Number of augmented copies.
    """
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"), np.float32)
    answers = predictor.predict_pixels(augmented_copies(pixels, count))
    names = list(answers[0].probabilities)
    values = np.array([[answer.probabilities[name] for name in names] for answer in answers])
    return {name: float(value) for name, value in zip(names, values.std(axis=0))}
