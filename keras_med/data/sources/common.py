"""What the sources share: reading a metadata file, checking columns, and finding each row's image."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from keras_med.data.errors import DataError, MissingColumnError, MissingImageError
from keras_med.data.files import check_on_bad_image, index_images_by_stem, resolve_inside, write_bad_images

logger = logging.getLogger(__name__)


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV or Parquet (pyarrow) metadata file; strings stay strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path, engine="pyarrow")
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot read it as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}: {error}") from error


def require_columns(frame: pd.DataFrame, columns: list[str], source: Path | str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingColumnError(f"{source}: missing required column(s) {missing}; it has {list(frame.columns)}")


def metadata_row(index: int, source: Path | str) -> str:
    """How an error names a row: the line number in a CSV (header is line 1), else the row number."""
    if str(source).lower().endswith(".csv"):
        return f"{source} line {index + 2}"
    return f"{source} row {index}"


def attach_image_paths(frame: pd.DataFrame, references: pd.Series, image_dir: Path, source: Path | str,
                       column: str, on_bad_image: str, report_dir, by_stem: bool) -> pd.DataFrame:
    """Add an absolute `path` column; rows whose image is missing raise or are skipped and listed.

    Args:
        frame: the metadata rows.
        references: per row, the image name or id taken from metadata.
        image_dir: the directory images must resolve inside.
        source: the metadata file, named in errors.
        column: the metadata column the references come from, named in errors.
        on_bad_image: `"error"` or `"skip"`.
        report_dir: where `bad_images.csv` goes in skip mode.
        by_stem: find images by file stem anywhere below `image_dir` (HAM10000's `image_id`) when
            the reference is not a path to an existing file.
    """
    check_on_bad_image(on_bad_image)
    find = _image_finder(image_dir, by_stem)
    paths, missing = [], []
    for index, reference in enumerate(references.astype(str)):
        where = f"{metadata_row(index, source)}, column {column!r}"
        path = find(reference, where)
        if path is None:
            if on_bad_image == "error":
                raise MissingImageError(f"{where}: image {reference!r} not found in {image_dir}; "
                                        "expected an image file with that name or id below it")
            missing.append({"path": str(image_dir / reference), "row": metadata_row(index, source),
                            "reason": "missing: no such image file"})
        paths.append(None if path is None else str(path))
    frame = frame.assign(path=paths)
    write_bad_images(report_dir, missing)
    return frame.loc[frame["path"].notna()].reset_index(drop=True)


def _image_finder(image_dir: Path, by_stem: bool) -> Callable[[str, str], Path | None]:
    stems: dict[str, Path] | None = None

    def find(reference: str, where: str) -> Path | None:
        nonlocal stems
        direct = resolve_inside(image_dir, reference, where)
        if direct.is_file():
            return direct
        if not by_stem:
            return None
        if stems is None:
            stems = index_images_by_stem(image_dir)
            logger.debug("indexed %d images below %s", len(stems), image_dir)
        return stems.get(Path(reference).stem if Path(reference).suffix else reference)

    return find


def log_class_counts(name: str, labels: pd.Series) -> None:
    counts = labels.value_counts().to_dict()
    logger.info("%s: %d images, classes %s", name, int(np.sum(list(counts.values()))), counts)
