"""HAM10000 (ISIC 2018 Task 3): `HAM10000_metadata.csv` plus images found by `image_id`."""

from __future__ import annotations

import logging
import os
import time

import pandas as pd

from keras_med.data.errors import UnknownLabelError
from keras_med.data.files import require_dir, write_bad_images
from keras_med.data.labels import drop_unlabelled_rows, merge_case_variants, write_left_out_labels
from keras_med.data.sources.common import (attach_image_paths, describe_line, group_ids, log_class_counts,
                                           read_numbered_metadata, require_columns)
from keras_med.data.table import LINE_COLUMN, ImageTable

logger = logging.getLogger(__name__)

HAM10000_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HAM10000_LONG_NAMES = {
    "akiec": "Actinic keratoses and intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}
HAM10000_METADATA = "HAM10000_metadata.csv"


def load_ham10000(data_dir: str | os.PathLike, *, metadata: str = HAM10000_METADATA,
                  on_bad_image: str = "error", report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load HAM10000: one row per image, label `dx`, grouped by `lesion_id`, other columns kept.

    Images are found by `image_id` anywhere below `data_dir` (symlinked folders included), so the
    official `HAM10000_images_part_1/`, `HAM10000_images_part_2/` layout and a single `images/`
    both work. A blank `lesion_id` makes the image its own group (warned, with the count).

    Args:
        data_dir: the directory holding the metadata CSV and the images.
        metadata: the metadata file name inside `data_dir`.
        on_bad_image: `"error"` raises `MissingImageError` for a row without an image; `"skip"`
            drops such rows, keeps them in `table.skipped` and lists them in `report_dir/bad_images.csv`
            with their metadata line (header = line 1).
        report_dir: where the list of skipped images goes (skip mode).

    Example:
        >>> table = load_ham10000("data/ham10000")          # doctest: +SKIP
        >>> table.subset  # then split_by_group(table, 0.15, 0.15, seed=42)  # doctest: +SKIP
    """
    started = time.perf_counter()
    data_dir = require_dir(data_dir, "HAM10000 data directory")
    source = data_dir / metadata
    frame = read_numbered_metadata(source)
    require_columns(frame, ["lesion_id", "image_id", "dx"], source)
    frame, left_out = drop_unlabelled_rows(frame, "dx", source, "image_id")
    write_left_out_labels(report_dir, left_out)
    merged, _ = merge_case_variants(frame["dx"].astype(str), f"{source.name} column 'dx': labels",
                                    known=HAM10000_CLASSES)
    labels = pd.Series(merged, index=frame.index)
    unknown = ~labels.isin(HAM10000_CLASSES)
    if unknown.any():
        index = int(unknown.to_numpy().nonzero()[0][0])
        raise UnknownLabelError(f"{describe_line(frame[LINE_COLUMN].iloc[index], source)}, column 'dx': unknown "
                                f"class {frame['dx'].iloc[index]!r}; expected one of {HAM10000_CLASSES} (any case)")
    frame = frame.assign(label=labels, group=group_ids(frame, "lesion_id", source, "lesion"))
    frame, skipped = attach_image_paths(frame, frame["image_id"], data_dir, source, "image_id", on_bad_image,
                                        by_stem=True)
    write_bad_images(report_dir, skipped)
    log_class_counts("HAM10000", frame["label"])
    logger.info("loaded HAM10000 metadata and found %d images in %.2f s", len(frame), time.perf_counter() - started)
    return ImageTable(frame, HAM10000_CLASSES, "multiclass", dict(HAM10000_LONG_NAMES), group_column="group",
                      metadata=str(source), skipped=skipped, left_out=left_out)
