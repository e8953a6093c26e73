"""What the sources share: reading a metadata file, numbering its lines, grouping rows, finding images.

Line numbers: every metadata row keeps the line the messages name in a `metadata_line` column,
set right after reading, so rows dropped later (No Finding, CT slices) do not shift it. In a CSV
the header is line 1 and the first image line 2; a Parquet file has no lines, so its rows are
counted from 1 and named "row N".
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from keras_med.data.errors import DataError, MissingColumnError, MissingImageError
from keras_med.data.files import bad_image_row, check_on_bad_image, index_images_by_stem, resolve_inside
from keras_med.data.table import LINE_COLUMN

logger = logging.getLogger(__name__)


# What a spreadsheet exports as "CSV": commas, semicolons where the comma is the decimal mark
# (most of Europe), tabs. `|` is not a candidate: multi-label cells hold it (`Effusion|Mass`).
CSV_DELIMITERS = ",;\t"


def sniff_delimiter(path: str | os.PathLike) -> str:
    """The delimiter of a CSV file, judged from its header line by `csv.Sniffer`; `,` when undecided.

    Only the header is read: column names hold no decimal commas or `|`-joined labels that could
    mislead the guess, and a one-column header (no candidate in it) is a comma CSV.
    """
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = handle.readline()
    present = [delimiter for delimiter in CSV_DELIMITERS if delimiter in header]
    if len(present) <= 1:
        return present[0] if present else ","
    try:
        return csv.Sniffer().sniff(header, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        return max(present, key=header.count)


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (delimiter sniffed: `,`, `;` or tab; any but `,` logged) or Parquet (pyarrow) file, as strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file {path} does not exist")
    try:
        if _is_parquet(path):
            return pd.read_parquet(path, engine="pyarrow")
        delimiter = sniff_delimiter(path)
        # A comma is what everyone expects (and keras_med's own split.csv): said only when debugging.
        logger.log(logging.DEBUG if delimiter == "," else logging.INFO, "%s: read as CSV with delimiter %r",
                   path, delimiter)
        return pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot read it as {'Parquet' if _is_parquet(path) else 'CSV'}: {error}") from error


def read_numbered_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """`read_metadata` plus the `metadata_line` column (see the module docstring)."""
    frame = read_metadata(path)
    first = 1 if _is_parquet(Path(path)) else 2
    return frame.assign(**{LINE_COLUMN: np.arange(first, first + len(frame), dtype=np.int64)})


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def require_columns(frame: pd.DataFrame, columns: list[str], source: Path | str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingColumnError(f"{source}: missing required column(s) {missing}; it has "
                                 f"{[column for column in frame.columns if column != LINE_COLUMN]}")


def describe_line(line: int, source: Path | str) -> str:
    """How a message names a metadata row: `file line N` for a CSV, `file row N` (from 1) for Parquet."""
    return f"{source} {'row' if _is_parquet(Path(str(source))) else 'line'} {int(line)}"


def metadata_row(index: int, source: Path | str) -> str:
    """`describe_line` of the row at 0-based position `index` of the file as read."""
    return describe_line(index + (1 if _is_parquet(Path(str(source))) else 2), source)


def row_lines(frame: pd.DataFrame, source: Path | str) -> np.ndarray:
    """The metadata line of each row: the `metadata_line` column, else counted from the frame's order."""
    if LINE_COLUMN in frame.columns:
        return frame[LINE_COLUMN].to_numpy(dtype=np.int64)
    first = 1 if _is_parquet(Path(str(source))) else 2
    return np.arange(first, first + len(frame), dtype=np.int64)


def group_ids(frame: pd.DataFrame, column: str, source: Path | str, what: str = "group") -> pd.Series:
    """The grouping key of each row from `column`, stripped; a blank id becomes the row's own group.

    A blank id (empty, whitespace, missing) says nothing about which images belong together.
    Merging all blanks into one group would send them to one split together (38 HAM10000 images
    went to test as one "lesion"); refusing would stop a run over a few rows. So each such image
    is its own group, named after its metadata line, and the count is logged as a warning: if
    those images do share a lesion or patient, only the metadata can say so.

    Args:
        frame: the metadata rows.
        column: the column with the group id (`lesion_id`, `Patient ID`, ...).
        source: the metadata file, named in the warning.
        what: what a group is (lesion, patient), for the warning.
    """
    values = frame[column]
    text = values.astype(str).str.strip()
    blank = (values.isna() | (text == "")).to_numpy()
    if blank.any():
        lines = row_lines(frame, source)
        logger.warning("%s: %d row(s) have a blank %r (e.g. %s); each becomes its own %s, so images of one %s "
                       "with a blank id could land in different splits", source, int(blank.sum()), column,
                       describe_line(lines[np.flatnonzero(blank)[0]], source), what, what)
        unit = "row" if _is_parquet(Path(str(source))) else "line"
        text = text.where(~blank, pd.Series([f"blank {column}, {unit} {line}" for line in lines], index=frame.index))
    return text


def attach_image_paths(frame: pd.DataFrame, references: pd.Series, image_dir: Path, source: Path | str,
                       column: str, on_bad_image: str, by_stem: bool) -> tuple[pd.DataFrame, list[dict]]:
    """Add an absolute `path` column; rows whose image is missing raise, or are dropped and returned.

    Args:
        frame: the metadata rows (with `metadata_line`, see `read_numbered_metadata`).
        references: per row, the image name or id taken from metadata.
        image_dir: the directory images must resolve inside.
        source: the metadata file, named in errors.
        column: the metadata column the references come from, named in errors.
        on_bad_image: `"error"` or `"skip"`.
        by_stem: find images by file stem anywhere below `image_dir` (HAM10000's `image_id`) when
            the reference is not a path to an existing file.

    Returns:
        The rows whose image was found, and the `bad_images.csv` rows of the skipped ones.
    """
    check_on_bad_image(on_bad_image)
    find = _image_finder(image_dir, by_stem)
    paths, missing = [], []
    for line, reference in zip(row_lines(frame, source), references.astype(str)):
        where = f"{describe_line(line, source)}, column {column!r}"
        path = find(reference, where)
        if path is None:
            if on_bad_image == "error":
                raise MissingImageError(f"{where}: image {reference!r} not found in {image_dir}; "
                                        "expected an image file with that name or id below it "
                                        "(--on-bad-image skip leaves such rows out)")
            missing.append(bad_image_row(image_dir / reference, "missing: no such image file", source, line))
        paths.append(None if path is None else str(path))
    frame = frame.assign(path=paths)
    return frame.loc[frame["path"].notna()].reset_index(drop=True), missing


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
