"""What a served model must carry so that a client needs nothing else: classes, task, size, thresholds."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

from keras_med.errors import UserError
from keras_med.tasks import TASKS

RESIZE_MODES = ("resize", "pad")
TFLITE_QUANTIZATIONS = ("float32", "float16", "int8")
# Smaller images are answered valid=false: a 1x1 PNG is not a lesion.
DEFAULT_MIN_IMAGE_SIZE = 32


class ServingMetadataError(UserError, ValueError):
    """Class names, task, image size, thresholds or resize mode that a served model cannot carry."""


def is_valid_served_name(name: str) -> bool:
    """Whether `name` can be a served model's name: a folder under the base path and TF Serving's name."""
    return bool(name) and not name.startswith(".") and all(char.isalnum() or char in "-_." for char in name)


@dataclass(frozen=True)
class ServingMetadata:
    """Everything the serving graph needs besides the Keras model.

    Args:
        class_names: One name per class; for ``binary`` exactly ``[negative, positive]``.
        task: ``"multiclass"``, ``"multilabel"`` or ``"binary"`` (see docs/contracts.md).
        image_size: Side ``S`` of the square ``(S, S, 3)`` images the model takes.
        thresholds: One decision threshold per model output, as evaluation chooses them: one
            per class for ``multiclass`` and ``multilabel``, a single one (on the positive
            class's probability) for ``binary``. ``None`` for the defaults: 0.5 for sigmoid
            outputs, and for ``multiclass`` the decision is the top class alone.
        resize: How an image of another size reaches ``S x S``: ``"resize"`` (bilinear, aspect
            ratio not kept) or ``"pad"`` (bilinear, aspect ratio kept, zero padding), as
            ``DataConfig.resize`` was in training.
        min_image_size: Smallest short side (pixels) of an image the served model answers;
            ``None`` for ``min(32, image_size)``.
        ood: The out-of-distribution guard's summary (method, threshold, pass rates), or None.
        conformal: The conformal sets' summary (coverage, mode, thresholds), or None.
        members: How many checkpoints the served answer averages (``keras_med.export.combined``).
        tta: ``"none"``, or ``"flips"``: the answer is the mean over the original and flipped images.
        decision_rule: The decision rule applied in the graph (``LogitAdjustment.to_dict()``), or None.
    """

    class_names: tuple[str, ...]
    task: str
    image_size: int
    thresholds: tuple[float, ...] | None = None
    resize: str = "resize"
    min_image_size: int | None = None
    ood: dict | None = None
    conformal: dict | None = None
    members: int = 1
    tta: str = "none"
    decision_rule: dict | None = None

    def __post_init__(self):
        names = tuple(str(name) for name in self.class_names)
        object.__setattr__(self, "class_names", names)
        if self.task not in TASKS:
            raise ServingMetadataError(f"task must be one of {TASKS}, got {self.task!r}")
        if not names or any(not name for name in names):
            raise ServingMetadataError(f"class_names must be non-empty names, got {list(self.class_names)!r}")
        if len(set(names)) != len(names):
            raise ServingMetadataError(f"class_names must be unique, got {list(names)!r}")
        if self.task == "binary" and len(names) != 2:
            raise ServingMetadataError(f"a binary task needs class_names [negative, positive], got {list(names)!r}")
        if self.task != "binary" and len(names) < 2:
            raise ServingMetadataError(f"a {self.task} task needs at least two class_names, got {list(names)!r}")
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size < 8:
            raise ServingMetadataError(f"image_size must be an integer of at least 8 pixels, got {self.image_size!r}")
        if self.resize not in RESIZE_MODES:
            raise ServingMetadataError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        object.__setattr__(self, "thresholds", normalise_thresholds(self.thresholds, names, self.task))
        if self.min_image_size is None:
            object.__setattr__(self, "min_image_size", min(DEFAULT_MIN_IMAGE_SIZE, self.image_size))
        if not isinstance(self.min_image_size, int) or isinstance(self.min_image_size, bool) or self.min_image_size < 1:
            raise ValueError(f"min_image_size must be a positive integer, got {self.min_image_size!r}")

    @property
    def num_outputs(self) -> int:
        """Width of the Keras model's ``predictions`` layer (1 for binary)."""
        return 1 if self.task == "binary" else len(self.class_names)

    def effective_thresholds(self) -> tuple[float, ...]:
        """Thresholds per model output as served; multiclass without thresholds has none (top class wins)."""
        if self.thresholds is not None:
            return self.thresholds
        if self.task == "multiclass":
            return ()
        return tuple(0.5 for _ in range(self.num_outputs))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def normalise_thresholds(thresholds, class_names: Sequence[str], task: str) -> tuple[float, ...] | None:
    """Thresholds as one float per model output (binary: one, on the positive class), or None.

    Args:
        thresholds: None; a number or one-element sequence (binary); a sequence with one value per
            class (multiclass, multilabel); or a mapping class name -> threshold (binary: the
            positive class's name alone).
        class_names: The model's class names.
        task: The model's task.
    """
    if thresholds is None:
        return None
    expected_names = list(class_names[1:]) if task == "binary" else list(class_names)
    if isinstance(thresholds, dict):
        if sorted(thresholds) != sorted(expected_names):
            raise ServingMetadataError(f"thresholds must name exactly {expected_names}, got {sorted(thresholds)}")
        thresholds = [thresholds[name] for name in expected_names]
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = [thresholds]
    values = [float(value) for value in thresholds]
    if len(values) != len(expected_names):
        what = "one value, on the positive class" if task == "binary" else f"one value per class {expected_names}"
        raise ServingMetadataError(f"thresholds for a {task} model must be {what}; got {len(values)}: {values}")
    if any(not math.isfinite(value) or not 0.0 <= value <= 1.0 for value in values):
        raise ServingMetadataError(f"thresholds must be probabilities in 0..1, got {values}")
    return tuple(values)
