"""`ImageTable`: the one table every source yields and every later stage consumes."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from keras_med.data.errors import DataError, MissingColumnError, UnknownLabelError
from keras_med.tasks import TASKS, Task

SPLITS = ("train", "val", "test")
LABEL_SEPARATOR = "|"
# The metadata line of each row (CSV: header = line 1; Parquet: row counted from 1), set by the
# loaders that read a metadata file, named in error messages and in bad_images.csv.
LINE_COLUMN = "metadata_line"


@dataclasses.dataclass
class ImageTable:
    """Images, labels and grouping keys of one dataset, plus every original metadata column.

    Args:
        frame: one row per image with `path` (absolute; for in-memory images an identifier such as
            `file.npz#train/0`), `label` (a class name; multilabel: `|`-joined names, `""` for none),
            the grouping column, every original metadata column and, once split, `split`.
        class_names: the classes in target order. Binary: `[negative, positive]`.
        task: `"multiclass"`, `"multilabel"` or `"binary"`.
        long_names: readable class names for reports, e.g. `{"mel": "Melanoma"}`.
        group_column: the column that holds the grouping key (lesion, patient).
        pixels: optional decoded images `(N, H, W, C)` uint8 aligned with `frame` rows (MedMNIST,
            or after `check_images(..., keep_pixels=True)`); `None` when images live on disk.
        metadata: the metadata file the rows came from (their line is the `metadata_line` column).
        skipped: the images left out so far with `on_bad_image="skip"` (rows of `bad_images.csv`:
            `path, metadata, line, reason`), carried along so that `check_table_images` lists the
            loader's missing files and its own undecodable ones in one file.
        left_out: what was left out before decoding: rows without a label (empty, `NaN`, a placeholder such as
            covid-chestxray's `todo`) and files of a folder that are not read, rows of `left_out.csv`.
    """

    frame: pd.DataFrame
    class_names: list[str]
    task: str
    long_names: dict[str, str] = dataclasses.field(default_factory=dict)
    group_column: str = "group"
    pixels: np.ndarray | None = None
    metadata: str = ""
    skipped: list[dict] = dataclasses.field(default_factory=list)
    left_out: list[dict] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {self.task!r}")
        self.class_names = [str(name) for name in self.class_names]
        if self.task == Task.BINARY and len(self.class_names) != 2:
            raise DataError(f"a binary task needs exactly 2 class names [negative, positive], "
                            f"got {self.class_names}")
        for column in ("path", "label", self.group_column):
            if column not in self.frame.columns:
                raise MissingColumnError(f"ImageTable frame lacks the column {column!r}; "
                                         f"it has {list(self.frame.columns)}")
        if self.pixels is not None and len(self.pixels) != len(self.frame):
            raise DataError(f"pixels has {len(self.pixels)} images but the frame has {len(self.frame)} rows")
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].tolist()

    @property
    def groups(self) -> np.ndarray:
        return self.frame[self.group_column].astype(str).to_numpy()

    def images(self):
        """What `build_image_pipeline` takes: the pixel array when in memory, else the file paths."""
        return self.pixels if self.pixels is not None else self.paths

    def targets(self) -> np.ndarray:
        """float32 targets: one-hot `(N, C)` multiclass, `(N, 1)` binary, multi-hot `(N, C)` multilabel."""
        return encode_labels(self.frame["label"], self.class_names, self.task)

    def class_indices(self) -> np.ndarray:
        """One int per image for single-label tasks (index into `class_names`)."""
        if self.task == Task.MULTILABEL:
            raise DataError("class_indices() is for single-label tasks; use targets() for multilabel")
        lookup = {name: index for index, name in enumerate(self.class_names)}
        return self.frame["label"].map(lookup).to_numpy(dtype=np.int64)

    def split_counts(self) -> pd.DataFrame:
        """Images per split (rows) and class (columns); multilabel: positives per label, and `(none)`.

        A multilabel table has one combination per distinct label set (a hundred on 1,000
        ChestX-ray14 images), so its counts are per label: a label at 0 in a split is one that
        split cannot measure.
        """
        if "split" not in self.frame.columns:
            raise MissingColumnError("this table has no 'split' column yet; call split_by_group first")
        if self.task != Task.MULTILABEL:
            return self.frame.groupby(["split", "label"]).size().unstack(fill_value=0)
        targets = self.targets()
        counts = pd.DataFrame(targets, columns=self.class_names).assign(**{"(none)": targets.sum(axis=1) == 0})
        return counts.groupby(self.frame["split"].to_numpy()).sum().astype(np.int64).rename_axis("split")

    def subset(self, split: str) -> "ImageTable":
        """The rows of one split (`train`, `val` or `test`)."""
        if "split" not in self.frame.columns:
            raise MissingColumnError("this table has no 'split' column yet; call split_by_group first")
        return self.select(self.frame["split"].to_numpy() == split)

    def select(self, mask) -> "ImageTable":
        """A new table with the rows where `mask` (boolean array) is true; pixels follow the rows."""
        mask = np.asarray(mask, dtype=bool)
        return dataclasses.replace(
            self, frame=self.frame.loc[mask].reset_index(drop=True),
            pixels=None if self.pixels is None else self.pixels[mask])

    def with_frame(self, frame: pd.DataFrame) -> "ImageTable":
        """The same table with a new frame of the same rows (e.g. a `split` column added)."""
        return dataclasses.replace(self, frame=frame)


def encode_labels(labels: Sequence[str], class_names: list[str], task: str) -> np.ndarray:
    """Encode label strings as float32 targets; raise `UnknownLabelError` naming the first bad row.

    Args:
        labels: one label string per image (multilabel: `|`-joined names, `""` for none).
        class_names: the classes in target order.
        task: `"multiclass"`, `"multilabel"` or `"binary"`.
    """
    labels = pd.Series(list(labels), dtype=object).fillna("").astype(str)
    lookup = {name: index for index, name in enumerate(class_names)}
    if task == Task.MULTILABEL:
        rows = [[name for name in text.split(LABEL_SEPARATOR) if name] for text in labels]
        targets = np.zeros((len(rows), len(class_names)), dtype=np.float32)
        for row, names in enumerate(rows):
            for name in names:
                if name not in lookup:
                    raise UnknownLabelError(f"row {row}: unknown label {name!r}; expected some of {class_names}")
                targets[row, lookup[name]] = 1.0
        return targets
    indices = labels.map(lookup)
    unknown = indices.isna().to_numpy()
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise UnknownLabelError(f"row {row}: unknown label {labels.iloc[row]!r}; expected one of {class_names} "
                                f"({int(unknown.sum())} rows in all)")
    indices = indices.to_numpy(dtype=np.int64)
    if task == Task.BINARY:
        return indices.astype(np.float32)[:, None]
    return np.eye(len(class_names), dtype=np.float32)[indices]
