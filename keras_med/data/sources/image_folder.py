"""Folder per class: `root/<class>/*.jpg`, or pre-split `root/{train,val,test}/<class>/`."""

from __future__ import annotations

import logging
import os
import re

import pandas as pd

from pathlib import Path

from keras_med.data.errors import DataError
from keras_med.data.files import IMAGE_SUFFIXES, left_out_row, require_dir, walk_files, write_left_out
from keras_med.data.labels import merge_case_variants
from keras_med.data.table import SPLITS, ImageTable

logger = logging.getLogger(__name__)

# Kermany's file names carry the patient: `person1_bacteria_1.jpeg`, `IM-0115-0001.jpeg`, `NORMAL2-IM-1427-0001.jpeg`.
KERMANY_GROUP_PATTERN = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"


def load_image_folder(root: str | os.PathLike, group_pattern: str | None = None, *,
                      class_names: list[str] | None = None, task: str | None = None,
                      report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load images whose class is their folder's name; a pre-split layout keeps its splits.

    With `root/train/`, `root/test/` (and optionally `root/val/`) the images get `split` set to
    the folder they came from; `split_by_group` then only carves what is missing (val from train).

    Images in sub-folders of a class folder belong to that class (`mel/patient7/a.jpg` is `mel`),
    as in Keras' `image_dataset_from_directory`; their count is logged. Every file that is not
    used (a suffix not in `IMAGE_SUFFIXES`, a hidden file such as `.DS_Store` or `._a.jpg`, a file
    beside the class folders) is listed with its reason in `table.left_out`, counted in one log
    line, and written to `report_dir/left_out.csv` when `report_dir` is given. Class folders whose
    names differ only in case (`MEL/`, `mel/`) are one class (`keras_med.data.labels`).

    Args:
        root: the dataset folder.
        group_pattern: a regex searched in each file name; its first capture group (or the whole
            match) is the image's group (e.g. the patient). Files that do not match, or no pattern,
            are each their own group (logged).
        class_names: the classes in target order (binary: `[negative, positive]`); default: the
            folder names sorted.
        task: `"binary"` (default for 2 classes) or `"multiclass"` (default otherwise).
        report_dir: where `left_out.csv` goes; None: only logged.
    """
    root = require_dir(root, "image folder root")
    split_dirs = [name for name in SPLITS if (root / name).is_dir()]
    sources = [(root / name, name) for name in split_dirs] if split_dirs else [(root, "")]
    pattern = re.compile(group_pattern) if group_pattern else None
    rows, left_out = [], []
    if split_dirs:
        left_out += [left_out_row(path, "not under a split folder: expected root/{train,val,test}/<class>/")
                     for path in sorted(root.iterdir()) if path.name not in split_dirs]
    for folder, split in sources:
        for entry in sorted(folder.iterdir()):
            if not entry.is_dir():
                left_out.append(left_out_row(entry, "not in a class folder: expected <class>/<image>"))
                continue
            if entry.name.startswith("."):
                left_out += [left_out_row(path, "hidden folder") for path in _files_below(entry)]
                continue
            for path in _files_below(entry):
                reason = _left_out_reason(path, entry)
                if reason:
                    left_out.append(left_out_row(path, reason))
                    continue
                # Ids are numbered per pre-split folder (Kermany's test/person1 is not train/person1:
                # 170 ids recur across its patient-disjoint splits), so the folder qualifies the group.
                match = pattern.search(path.name) if pattern else None
                if match is None:
                    group = path.relative_to(root).as_posix()
                else:
                    group = match.group(1) if match.groups() else match.group(0)
                    group = f"{split}/{group}" if split else group
                rows.append({"path": str(path.absolute()), "label": entry.name, "file": path.name,
                             "group": group, "split": split, "nested": path.parent != entry})
    write_left_out(report_dir, left_out, f"files of {root}")
    if not rows:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {root}; expected "
                        "root/<class>/*.jpg or root/train/<class>/*.jpg")
    frame = pd.DataFrame(rows)
    nested = int(frame["nested"].sum())
    if nested:
        logger.info("%d image(s) are in sub-folders of class folders (e.g. %s); each has its class folder's label",
                    nested, frame.loc[frame["nested"], "path"].iloc[0])
    merged, _ = merge_case_variants(frame["label"], f"{root}: class folders", known=class_names or ())
    frame = frame.assign(label=merged).drop(columns="nested")
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
    logger.info("image folder %s: %d images, classes %s, splits %s, %d file(s) left out", root, len(frame),
                frame["label"].value_counts().to_dict(), split_dirs or "none", len(left_out))
    return ImageTable(frame, class_names, task, group_column="group", left_out=left_out)


def _files_below(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, following symlinks (each real folder once, see `walk_images`)."""
    return list(walk_files(folder))


def _left_out_reason(path: Path, class_dir: Path) -> str:
    """Why a file of a class folder is not used, or "" when it is an image to read."""
    parts = path.relative_to(class_dir).parts
    if any(part.startswith(".") for part in parts):
        return "hidden file" if parts[-1].startswith(".") else "in a hidden folder"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return (f"unsupported extension {path.suffix!r}: expected one of {', '.join(IMAGE_SUFFIXES)}"
                if path.suffix else f"no extension: expected one of {', '.join(IMAGE_SUFFIXES)}")
    return ""
