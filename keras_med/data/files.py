"""Finding image files on disk safely, and listing the ones that had to be skipped.

Paths in metadata are untrusted input: `resolve_inside` rejects any that would leave the data
directory (`../`, absolute paths), lexically, so that a data directory that is itself a symlink
still works.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Iterable

from keras_med.data.errors import DataError, UnsafePathError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BAD_IMAGES_FILE = "bad_images.csv"
ON_BAD_IMAGE = ("error", "skip")


def check_on_bad_image(on_bad_image: str) -> None:
    if on_bad_image not in ON_BAD_IMAGE:
        raise DataError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")


def require_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what} {path} is not a directory")
    return path


def resolve_inside(base: Path, relative: str, where: str) -> Path:
    """`base / relative`, refusing anything that points outside `base`.

    Args:
        base: the data directory.
        relative: a path from metadata.
        where: what to name in the error, e.g. `"Data_Entry_2017.csv row 12, column 'Image Index'"`.
    """
    base_abs = Path(os.path.normpath(os.path.abspath(base)))
    candidate = Path(os.path.normpath(base_abs / relative))
    if os.path.isabs(relative) or not candidate.is_relative_to(base_abs):
        raise UnsafePathError(f"{where}: path {relative!r} leaves the data directory {base_abs}; "
                              "expected a path relative to it")
    return candidate


def index_images_by_stem(root: Path) -> dict[str, Path]:
    """Map file stem -> path for every image below `root` (the HAM10000 lookup by `image_id`).

    A stem found twice is ambiguous and an error rather than a silent pick.
    """
    index: dict[str, Path] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(folder) / name
            if stem in index:
                raise DataError(f"image id {stem!r} is ambiguous: both {index[stem]} and {path} exist below {root}")
            index[stem] = path
    return index


def write_bad_images(report_dir: str | os.PathLike | None, rows: Iterable[dict]) -> Path | None:
    """Append skipped images (`path`, `row`, `reason`) to `report_dir/bad_images.csv`; log the count.

    Appending lets the loader (missing files) and the image check (undecodable files) share one list.
    """
    rows = list(rows)
    if not rows:
        return None
    logger.warning("skipped %d bad images, e.g. %s: %s", len(rows), rows[0]["path"], rows[0]["reason"])
    if report_dir is None:
        for row in rows:
            logger.warning("skipped bad image %s (row %s): %s", row["path"], row.get("row", ""), row["reason"])
        return None
    report = Path(report_dir) / BAD_IMAGES_FILE
    report.parent.mkdir(parents=True, exist_ok=True)
    is_new = not report.exists()
    with report.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "row", "reason"], extrasaction="ignore")
        if is_new:
            writer.writeheader()
        writer.writerows(rows)
    logger.warning("list of skipped images: %s", report)
    return report
