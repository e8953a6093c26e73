"""Finding image files on disk safely, and listing the ones that had to be skipped.

The path rule (docs/failure_behaviour.md, "Bad images and data"):
- a path taken from metadata is untrusted input: `resolve_inside` refuses any that would leave the
  data directory (`../`, absolute paths). The check is lexical, on the path as written, so a
  data directory that is itself a symlink still works;
- a symbolic link found *inside* the data directory (a linked image folder or file) is followed
  wherever it points: whoever passed the data directory put the link there, so its target is
  part of the data they chose. `walk_images` follows such links and skips a link that loops.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from keras_med.atomic import write_text_atomic
from keras_med.data.errors import DataError, UnsafePathError

logger = logging.getLogger(__name__)

# Every suffix a folder source or an image index picks up; the content decides the decoder
# (keras_med.data.decode), so a suffix only says "this file is meant as an image".
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".dcm", ".gif", ".bmp", ".tif", ".tiff", ".webp")
BAD_IMAGES_FILE = "bad_images.csv"
# Rows and files left out before any decoding (a file of a format not read, a hidden file, a row
# without a label), each with its reason; the same columns as bad_images.csv.
LEFT_OUT_FILE = "left_out.csv"
# `line`: the metadata line the error messages name (CSV: header = line 1, so the first image is
# line 2; Parquet: the row counted from 1); empty for images listed from folders.
BAD_IMAGES_COLUMNS = ["path", "metadata", "line", "reason"]
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

    Symlinks inside `base` are not resolved here: the returned path may go through one, and that
    is allowed (see the module docstring).

    Args:
        base: the data directory.
        relative: a path from metadata.
        where: what to name in the error, e.g. `"Data_Entry_2017.csv line 12, column 'Image Index'"`.
    """
    base_abs = Path(os.path.normpath(os.path.abspath(base)))
    candidate = Path(os.path.normpath(base_abs / relative))
    if os.path.isabs(relative) or not candidate.is_relative_to(base_abs):
        raise UnsafePathError(f"{where}: path {relative!r} leaves the data directory {base_abs}; "
                              "expected a path relative to it")
    return candidate


def walk_files(root: Path) -> Iterator[Path]:
    """Every file below `root`, sorted, following symlinked folders and files, each real folder once.

    `os.walk(followlinks=True)` alone loops forever on a link to an ancestor folder, so folders
    are pruned by their real path once seen.
    """
    seen: set[str] = set()
    for folder, folders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            logger.warning("%s leads back to %s, already searched; not searched again", folder, real)
            folders[:] = []
            continue
        seen.add(real)
        folders.sort()
        for name in sorted(names):
            yield Path(folder) / name


def walk_images(root: Path) -> Iterator[Path]:
    """The files below `root` (see `walk_files`) whose suffix is one of `IMAGE_SUFFIXES`."""
    return (path for path in walk_files(root) if path.suffix.lower() in IMAGE_SUFFIXES)


def index_images_by_stem(root: Path) -> dict[str, Path]:
    """Map file stem -> path for every image below `root` (the HAM10000 lookup by `image_id`).

    A stem found twice is ambiguous and an error rather than a silent pick.
    """
    index: dict[str, Path] = {}
    for path in walk_images(root):
        stem = path.stem
        if stem in index:
            raise DataError(f"image id {stem!r} is ambiguous: both {index[stem]} and {path} exist below {root}")
        index[stem] = path
    return index


def bad_image_row(path, reason: str, metadata: str = "", line: int | None = None) -> dict:
    """One row of `bad_images.csv`."""
    return {"path": str(path), "metadata": str(metadata), "line": "" if line is None else int(line), "reason": reason}


def write_bad_images(report_dir: str | os.PathLike | None, rows: Iterable[dict]) -> Path | None:
    """Write the skipped images (`path, metadata, line, reason`) to `report_dir/bad_images.csv`; log them.

    The file is replaced as a whole, atomically (evaluation reads it back for metrics.json): the
    callers pass every image skipped so far (the loader's missing files and the check pass's
    undecodable ones), so a re-run never lists an image twice.
    """
    rows = list(rows)
    if not rows:
        return None
    logger.warning("skipped %d bad image(s), e.g. %s: %s", len(rows), rows[0]["path"], rows[0]["reason"])
    if report_dir is None:
        for row in rows:
            logger.warning("skipped bad image %s (%s line %s): %s", row["path"], row.get("metadata", ""),
                           row.get("line", ""), row["reason"])
        return None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BAD_IMAGES_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    report = write_text_atomic(Path(report_dir) / BAD_IMAGES_FILE, buffer.getvalue())
    logger.warning("list of skipped images: %s", report)
    return report


def left_out_row(path, reason: str, metadata: str = "", line: int | None = None) -> dict:
    """One row of `left_out.csv` (the columns of `bad_images.csv`)."""
    return bad_image_row(path, reason, metadata, line)


def write_left_out(report_dir: str | os.PathLike | None, rows: Iterable[dict], what: str = "files", *,
                   summary: bool = True) -> Path | None:
    """Log one line (how many, by reason, one example) and list every row in `report_dir/left_out.csv`.

    The file holds every row passed (the caller passes all that were left out so far, e.g.
    `table.left_out`), replaced atomically; nothing is written when nothing was left out.
    `summary=False` skips the count line (already logged by the loader that left them out).
    """
    rows = list(rows)
    if not rows:
        return None
    if summary:
        _log_left_out(rows, what)
    if report_dir is None:
        return None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BAD_IMAGES_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    report = write_text_atomic(Path(report_dir) / LEFT_OUT_FILE, buffer.getvalue())
    logger.warning("list of what was left out, with reasons: %s", report)
    return report


def _log_left_out(rows: list[dict], what: str) -> None:
    reasons: dict[str, int] = {}
    for row in rows:
        kind = row["reason"].split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    example = rows[0]
    where = f" ({example['metadata']} line {example['line']})" if example.get("line", "") != "" else ""
    logger.warning("left out %d %s (%s), e.g. %s%s: %s", len(rows), what,
                   ", ".join(f"{count} {kind}" for kind, count in reasons.items()), example["path"], where,
                   example["reason"])


def folder_has_images(folder: Path) -> bool:
    """Whether `folder` holds an image file at any depth, hidden files and folders aside.

    What a layout detector asks of a class folder, now that images in its sub-folders count
    (`load_image_folder`).
    """
    for path in walk_files(Path(folder)):
        parts = path.relative_to(folder).parts
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in parts):
            return True
    return False
