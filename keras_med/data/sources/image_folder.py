"""Folder per class: `root/<class>/*.jpg`, or pre-split `root/{train,val,test}/<class>/`."""

from __future__ import annotations

import logging
import os
import re

import pandas as pd

from keras_med.data.errors import DataError
from keras_med.data.files import IMAGE_SUFFIXES, require_dir
from keras_med.data.table import SPLITS, ImageTable

logger = logging.getLogger(__name__)

# Kermany's file names carry the patient: `person1_bacteria_1.jpeg`, `IM-0115-0001.jpeg`, `NORMAL2-IM-1427-0001.jpeg`.
KERMANY_GROUP_PATTERN = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"


def load_image_folder(root: str | os.PathLike, group_pattern: str | None = None, *,
                      class_names: list[str] | None = None, task: str | None = None) -> ImageTable:
    """Load images whose class is their folder's name; a pre-split layout keeps its splits.

    With `root/train/`, `root/test/` (and optionally `root/val/`) the images get `split` set to
    the folder they came from; `split_by_group` then only carves what is missing (val from train).

    Args:
        root: the dataset folder.
        group_pattern: a regex searched in each file name; its first capture group (or the whole
            match) is the image's group (e.g. the patient). Files that do not match, or no pattern,
            are each their own group (logged).
        class_names: the classes in target order (binary: `[negative, positive]`); default: the
            folder names sorted.
        task: `"binary"` (default for 2 classes) or `"multiclass"` (default otherwise).
    """
    root = require_dir(root, "image folder root")
    split_dirs = [name for name in SPLITS if (root / name).is_dir()]
    sources = [(root / name, name) for name in split_dirs] if split_dirs else [(root, "")]
    pattern = re.compile(group_pattern) if group_pattern else None
    rows = []
    for folder, split in sources:
        for class_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    # Ids are numbered per pre-split folder (Kermany's test/person1 is not train/person1:
                    # 170 ids recur across its patient-disjoint splits), so the folder qualifies the group.
                    match = pattern.search(path.name) if pattern else None
                    if match is None:
                        group = path.relative_to(root).as_posix()
                    else:
                        group = match.group(1) if match.groups() else match.group(0)
                        group = f"{split}/{group}" if split else group
                    rows.append({"path": str(path.absolute()), "label": class_dir.name, "file": path.name,
                                 "group": group, "split": split})
    if not rows:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {root}; expected "
                        "root/<class>/*.jpg or root/train/<class>/*.jpg")
    frame = pd.DataFrame(rows)
    found = sorted(frame["label"].unique())
    class_names = list(class_names) if class_names else found
    extra = sorted(set(found) - set(class_names))
    if extra:
        raise DataError(f"{root}: class folder(s) {extra} are not among class_names {class_names}")
    task = task or ("binary" if len(class_names) == 2 else "multiclass")
    if not split_dirs:
        frame = frame.drop(columns="split")
    unmatched = sum(group.endswith("/" + name) for group, name in zip(frame["group"], frame["file"]))
    if unmatched:
        logger.info("%d of %d images have no group from their file name and form their own group",
                    unmatched, len(frame))
    logger.info("image folder %s: %d images, classes %s, splits %s", root, len(frame),
                frame["label"].value_counts().to_dict(), split_dirs or "none")
    return ImageTable(frame, class_names, task, group_column="group")

