"""Any labelled table: a CSV or Parquet with an image column, a label column and optionally a group column.

Single-label (2 classes: binary, more: multi-class) or multi-label when labels hold a separator
(`Effusion|Mass`). The group column (patient, lesion) keeps a group's images in one split; without
one, a regex on the file name can give the group, else each image is its own group (the caller
warns: images of one patient may then sit in two splits).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from keras_med.data.errors import DataError
from keras_med.data.files import write_bad_images
from keras_med.data.labels import drop_unlabelled_rows, label_key, merge_case_variants, write_left_out_labels
from keras_med.data.sources.common import attach_image_paths, group_ids, read_numbered_metadata, require_columns
from keras_med.data.table import LABEL_SEPARATOR, ImageTable

logger = logging.getLogger(__name__)

NO_FINDING_LABEL = "No Finding"


def group_from_file_names(names: pd.Series, pattern: str | None, fallback: pd.Series) -> tuple[pd.Series, int]:
    """The group of each image from a regex on its file name; unmatched (or no pattern): `fallback`.

    Args:
        names: file names.
        pattern: a regex searched in each name; its first capture group (or the whole match) is the group.
        fallback: the group of an image the pattern does not match (its own path, say).

    Returns:
        The groups and how many images fell back to their own group.
    """
    if not pattern:
        return fallback, len(names)
    regex = re.compile(pattern)
    matches = [regex.search(str(name)) for name in names]
    groups = [fallback.iloc[i] if match is None else (match.group(1) if match.groups() else match.group(0))
              for i, match in enumerate(matches)]
    return pd.Series(groups, index=names.index), sum(match is None for match in matches)


def load_image_table(metadata: str | os.PathLike, image_dir: str | os.PathLike, *, image_column: str,
                     label_column: str, group_column: str | None = None, label_separator: str | None = None,
                     group_pattern: str | None = None, no_finding: str = "keep", on_bad_image: str = "error",
                     report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load a labelled image table (see the module docstring).

    Args:
        metadata: the CSV or Parquet file.
        image_dir: where the images are: a value is a path inside it, else a file name anywhere below it.
        image_column: the column with the image file name or relative path.
        label_column: the column with the label (multi-label: names joined by `label_separator`).
            Spellings that differ only in case are one class; rows with an empty, `NaN` or `None`
            label are left out and listed (see `keras_med.data.labels`).
        group_column: the patient/lesion id column; None: `group_pattern`, else one group per image.
        label_separator: e.g. `"|"` for multi-label tables; None or `""`: single-label.
        group_pattern: a regex on the image file name giving its group, when there is no group column.
        no_finding: multi-label: `"keep"` a "No Finding" row as all-zero, or `"drop"` it.
        on_bad_image: `"error"` or `"skip"` for rows whose image is missing.
        report_dir: where `bad_images.csv` goes in skip mode.

    Returns:
        An `ImageTable`; `table.frame["group_source"]` says where each group came from.

    Example:
        >>> table = load_image_table("labels.csv", "images", image_column="file",  # doctest: +SKIP
        ...                          label_column="grade", group_column="patient")
    """
    source = Path(metadata)
    frame = read_numbered_metadata(source)
    require_columns(frame, [image_column, label_column] + ([group_column] if group_column else []), source)
    # One label rule for every source (keras_med.data.labels): empty/NaN rows left out and listed,
    # spellings that differ only in case merged into one class.
    frame, left_out = drop_unlabelled_rows(frame, label_column, source, image_column)
    text = frame[label_column].astype(str).str.strip()
    multilabel = bool(label_separator)
    what = f"{source.name} column {label_column!r}: labels"
    if multilabel:
        names_per_row = [[name.strip() for name in value.split(label_separator) if name.strip()] for value in text]
        _, mapping = merge_case_variants([name for names in names_per_row for name in names], what)
        no_finding_key = label_key(NO_FINDING_LABEL)
        label_sets = [sorted({mapping.get(name, name) for name in names if label_key(name) != no_finding_key})
                      for names in names_per_row]
        labels = pd.Series([LABEL_SEPARATOR.join(names) for names in label_sets], index=frame.index)
        class_names = sorted({name for names in label_sets for name in names})
    else:
        merged, _ = merge_case_variants(text, what)
        labels = pd.Series(merged, index=frame.index)
        class_names = sorted(labels.unique())
    if len(class_names) < 2 and not multilabel:
        raise DataError(f"{source}, column {label_column!r}: one class only ({class_names}); expected at least 2")
    frame = frame.assign(label=labels.to_numpy())
    if multilabel and no_finding == "drop":
        empty = frame["label"] == ""
        logger.info("dropping %d image(s) without a label (no_finding='drop')", int(empty.sum()))
        frame = frame.loc[~empty].reset_index(drop=True)
    write_left_out_labels(report_dir, left_out)
    frame, skipped = attach_image_paths(frame, frame[image_column], Path(image_dir), source, image_column,
                                        on_bad_image, by_stem=True)
    write_bad_images(report_dir, skipped)
    if group_column:
        frame = frame.assign(group=group_ids(frame, group_column, source).to_numpy(), group_source=group_column)
    else:
        names = frame["path"].map(lambda path: Path(path).name)
        groups, unmatched = group_from_file_names(names, group_pattern, frame["path"])
        frame = frame.assign(group=groups.to_numpy(), group_source=np.where(
            groups.to_numpy() == frame["path"].to_numpy(), "own image", "file name"))
        if group_pattern and unmatched:
            logger.warning("%d of %d file names do not match --group-pattern %r; each is its own group",
                           unmatched, len(frame), group_pattern)
    task = "multilabel" if multilabel else "binary" if len(class_names) == 2 else "multiclass"
    logger.info("table %s: %d images, %d groups, task %s, classes %s", source.name, len(frame),
                frame["group"].nunique(), task, class_names)
    return ImageTable(frame, class_names, task, group_column="group", metadata=str(source), skipped=skipped,
                      left_out=left_out)
