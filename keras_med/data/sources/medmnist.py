"""MedMNIST `.npz` files: arrays in memory with the official train/val/test splits kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from keras_med.data.errors import DataError
from keras_med.data.table import LABEL_SEPARATOR, SPLITS, ImageTable

logger = logging.getLogger(__name__)


def load_medmnist(npz: str | os.PathLike, class_names: list[str] | None = None,
                  task: str | None = None) -> ImageTable:
    """Load a MedMNIST file (`train_images`, `train_labels`, `val_*`, `test_*`) into an in-memory table.

    Pixels stay as stored (grayscale keeps one channel, `(N, H, W, 1)`); the pipeline expands them
    to 3 channels, so memory holds a third as much. Each image is its own group (MedMNIST has no
    patient ids); the official splits are the `split` column.

    Args:
        npz: the `.npz` file.
        class_names: class names in label order (e.g. `["normal", "pneumonia"]`); default `class_0`...
        task: default: `"multilabel"` for multi-column labels (ChestMNIST), `"binary"` for 2
            classes, else `"multiclass"`.
    """
    path = Path(npz)
    if not path.is_file():
        raise DataError(f"MedMNIST file {path} does not exist")
    with np.load(path) as arrays:
        missing = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")
                   if f"{split}_{kind}" not in arrays.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; it has {arrays.files}")
        images = [arrays[f"{split}_images"] for split in SPLITS]
        labels = [arrays[f"{split}_labels"].reshape(len(arrays[f"{split}_labels"]), -1) for split in SPLITS]
    for split, image_block, label_block in zip(SPLITS, images, labels):
        if len(image_block) != len(label_block):
            raise DataError(f"{path}: {split}_images has {len(image_block)} images but {split}_labels "
                            f"has {len(label_block)} rows")
    all_labels = np.concatenate(labels)
    multilabel = all_labels.shape[1] > 1
    num_classes = all_labels.shape[1] if multilabel else int(all_labels.max()) + 1
    class_names = list(class_names) if class_names else [f"class_{index}" for index in range(num_classes)]
    if len(class_names) < num_classes:
        raise DataError(f"{path}: labels go up to class {num_classes - 1} but only {len(class_names)} "
                        f"class_names were given: {class_names}")
    task = task or ("multilabel" if multilabel else "binary" if num_classes == 2 else "multiclass")
    names = np.asarray(class_names, dtype=object)
    if multilabel:
        label_text = [LABEL_SEPARATOR.join(names[row > 0]) for row in all_labels]
    else:
        label_text = names[all_labels[:, 0].astype(np.int64)].tolist()
    split = np.concatenate([[name] * len(block) for name, block in zip(SPLITS, images)])
    position = np.concatenate([np.arange(len(block)) for block in images])
    identifiers = [f"{path.absolute()}#{name}/{index}" for name, index in zip(split, position)]
    frame = pd.DataFrame({"path": identifiers, "label": label_text, "group": identifiers, "split": split,
                          "index_in_split": position})
    pixels = np.concatenate(images)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    logger.info("MedMNIST %s: %d images %s, splits %s", path.name, len(frame), pixels.shape[1:],
                frame["split"].value_counts().to_dict())
    return ImageTable(frame, class_names, task, group_column="group", pixels=pixels)
