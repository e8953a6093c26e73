"""An external labelled test set: `image_id,label` or ISIC-style one-hot columns, plus an image folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from keras_med.data.errors import DataError, MissingColumnError, UnknownLabelError
from keras_med.data.files import require_dir, write_bad_images
from keras_med.data.labels import drop_unlabelled_rows, write_left_out_labels
from keras_med.data.sources.common import attach_image_paths, describe_line, metadata_row, read_numbered_metadata
from keras_med.data.table import LABEL_SEPARATOR, LINE_COLUMN, ImageTable

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_id", "image", "image_name", "image index", "filename", "file")


def load_external_test(labels_csv: str | os.PathLike, image_dir: str | os.PathLike, class_names: list[str], *,
                       task: str = "multiclass", on_bad_image: str = "error",
                       report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load a labelled test set from another source, with labels mapped onto the model's classes.

    The CSV is either `image_id,label` or one-hot columns (ISIC challenge style:
    `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`); class and column names match case-insensitively.
    Every row gets `split="test"`; each image is its own group.

    Args:
        labels_csv: the labels file.
        image_dir: images, found by path or by id (file stem) anywhere below it.
        class_names: the model's classes in target order.
        task: the model's task; multilabel takes every positive column, others exactly one.
        on_bad_image: `"error"` or `"skip"` for rows whose image is missing.
        report_dir: where `bad_images.csv` goes in skip mode.
    """
    source = Path(labels_csv)
    image_dir = require_dir(image_dir, "external test image directory")
    frame = read_numbered_metadata(source)
    lower = {column.strip().lower(): column for column in frame.columns}
    image_column = next((lower[name] for name in IMAGE_COLUMNS if name in lower), None)
    if image_column is None:
        raise MissingColumnError(f"{source}: no image column; expected one of {list(IMAGE_COLUMNS)}, "
                                 f"it has {list(frame.columns)}")
    by_lower = {name.lower(): name for name in class_names}
    left_out = []
    if "label" in lower:
        # the label rule of every source (keras_med.data.labels): a row without a label is left out and listed
        frame, left_out = drop_unlabelled_rows(frame, lower["label"], source, image_column)
        write_left_out_labels(report_dir, left_out)
        labels = []
        for line, text in zip(frame[LINE_COLUMN], frame[lower["label"]].astype(str)):
            names = [name.strip().lower() for name in text.split(LABEL_SEPARATOR) if name.strip()]
            unknown = [name for name in names if name not in by_lower]
            if unknown or (task != "multilabel" and len(names) != 1):
                raise UnknownLabelError(f"{describe_line(line, source)}, column 'label': {text!r}; expected "
                                        f"{'some' if task == 'multilabel' else 'one'} of {class_names} (any case)")
            labels.append(LABEL_SEPARATOR.join(by_lower[name] for name in names))
    else:
        labels = _labels_from_one_hot(frame, image_column, by_lower, class_names, task, source)
    frame = frame.assign(label=labels, group=frame[image_column].astype(str), split="test")
    frame, skipped = attach_image_paths(frame, frame[image_column], image_dir, source, image_column, on_bad_image,
                                        by_stem=True)
    write_bad_images(report_dir, skipped)
    logger.info("external test set %s: %d images, classes %s", source, len(frame), frame["label"].value_counts().to_dict())
    return ImageTable(frame, class_names, task, group_column="group", metadata=str(source),
                      skipped=skipped, left_out=left_out)


def _labels_from_one_hot(frame, image_column, by_lower, class_names, task, source) -> list[str]:
    columns = [column for column in frame.columns if column not in (image_column, LINE_COLUMN)]
    unknown = [column for column in columns if column.strip().lower() not in by_lower]
    if unknown or not columns:
        raise UnknownLabelError(f"{source}: column(s) {unknown or columns} are not classes of the model; expected "
                                f"'label' or one-hot columns named after {class_names} (any case)")
    try:
        values = frame[columns].astype(float).to_numpy() > 0.5
    except ValueError as error:
        raise DataError(f"{source}: one-hot columns {columns} must hold 0/1 numbers: {error}") from error
    names = np.asarray([by_lower[column.strip().lower()] for column in columns], dtype=object)
    labels = []
    for index, row in enumerate(values):
        if task != "multilabel" and row.sum() != 1:
            raise UnknownLabelError(f"{metadata_row(index, source)}: {int(row.sum())} positive one-hot columns; "
                                    "expected exactly one")
        labels.append(LABEL_SEPARATOR.join(sorted(names[row], key=class_names.index)))
    return labels
