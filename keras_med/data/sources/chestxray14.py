"""ChestX-ray14 / CheXNet style: a CSV or Parquet with an image column and `|`-separated pathologies."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sklearn.preprocessing import MultiLabelBinarizer

from keras_med.data.errors import DataError, UnknownLabelError
from keras_med.data.files import require_dir, write_bad_images
from keras_med.data.labels import drop_unlabelled_rows, merge_case_variants, write_left_out_labels
from keras_med.data.sources.common import (attach_image_paths, describe_line, group_ids, read_numbered_metadata,
                                           require_columns)
from keras_med.data.table import LABEL_SEPARATOR, LINE_COLUMN, ImageTable

logger = logging.getLogger(__name__)

NO_FINDING_MODES = ("drop", "keep")


def load_chestxray14(metadata: str | os.PathLike, image_dir: str | os.PathLike, *,
                     image_column: str = "Image Index", label_column: str = "Finding Labels",
                     group_column: str = "Patient ID", class_names: list[str] | None = None,
                     no_finding: str = "keep", no_finding_label: str = "No Finding",
                     on_bad_image: str = "error", report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load a multilabel chest X-ray table; labels multi-hot encoded with scikit-learn's MultiLabelBinarizer.

    Args:
        metadata: CSV or Parquet file (e.g. `Data_Entry_2017.csv`).
        image_dir: where the images are: a name is looked up as a path inside it, else by file name
            anywhere below it (the release's `images_001/images/` folders).
        image_column: the column with the image file name (a Portuguese copy may call it `imagem`).
        label_column: the column with `|`-separated pathologies (e.g. `patologia`).
        group_column: the patient id column (the grouping key of the splits); a blank id makes the
            image its own group (warned, with the count).
        class_names: the pathologies in target order; default: all found, sorted. A label outside
            them is an `UnknownLabelError`.
        no_finding: `"keep"` keeps "No Finding" images as all-zero rows, `"drop"` drops them (logged).
        no_finding_label: how the metadata spells "no finding".
        on_bad_image: `"error"` or `"skip"` for rows whose image is missing (skipped rows are kept
            in `table.skipped` with their metadata line).
        report_dir: where `bad_images.csv` goes in skip mode.
    """
    if no_finding not in NO_FINDING_MODES:
        raise DataError(f"no_finding must be one of {NO_FINDING_MODES}, got {no_finding!r}")
    source = Path(metadata)
    image_dir = require_dir(image_dir, "chest X-ray image directory")
    frame = read_numbered_metadata(source)
    require_columns(frame, [image_column, label_column, group_column], source)
    frame, left_out = drop_unlabelled_rows(frame, label_column, source, image_column)
    write_left_out_labels(report_dir, left_out)
    names_per_row = [[name.strip() for name in str(text).split(LABEL_SEPARATOR) if name.strip()]
                     for text in frame[label_column]]
    _, mapping = merge_case_variants([name for names in names_per_row for name in names],
                                     f"{source.name} column {label_column!r}: labels",
                                     known=[*(class_names or []), no_finding_label])
    label_sets = [sorted({mapping.get(name, name) for name in names} - {no_finding_label}) for names in names_per_row]
    binarizer = MultiLabelBinarizer(classes=class_names) if class_names else MultiLabelBinarizer()
    binarizer.fit(label_sets if not class_names else [class_names])
    known = set(binarizer.classes_)
    for index, names in enumerate(label_sets):
        unknown = [name for name in names if name not in known]
        if unknown:
            where = describe_line(frame[LINE_COLUMN].iloc[index], source)
            raise UnknownLabelError(f"{where}, column {label_column!r}: unknown label(s) "
                                    f"{unknown}; expected some of {list(binarizer.classes_)} or {no_finding_label!r}")
    frame = frame.assign(label=[LABEL_SEPARATOR.join(names) for names in label_sets],
                         group=group_ids(frame, group_column, source, "patient"))
    if no_finding == "drop":
        empty = frame["label"] == ""
        logger.info("dropping %d '%s' images (no_finding='drop')", int(empty.sum()), no_finding_label)
        frame = frame.loc[~empty].reset_index(drop=True)
    frame, skipped = attach_image_paths(frame, frame[image_column], image_dir, source, image_column, on_bad_image,
                                        by_stem=True)
    write_bad_images(report_dir, skipped)
    positives = dict(zip(binarizer.classes_, binarizer.transform(
        [name.split(LABEL_SEPARATOR) if name else [] for name in frame["label"]]).sum(axis=0).tolist()))
    logger.info("chest X-rays: %d images, %d patients, positives per label %s", len(frame),
                frame["group"].nunique(), positives)
    return ImageTable(frame, list(binarizer.classes_), "multilabel", group_column="group", metadata=str(source),
                      skipped=skipped, left_out=left_out)
