"""Write files that a later run reads so that a kill at any instant leaves the old file or the new one.

Every file a later run reads (resume state, checkpoints, history.csv, split.csv, config.toml,
metrics.json, exports, models.config) goes through here: the content is written to a temporary
file in the same folder, flushed and fsynced, then renamed over the target. A rename within one
file system is atomic on POSIX, so a reader never sees a torn file. Python's standard library
has no such helper (`tempfile` + `os.replace` is the documented idiom), hence these few lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from keras_med.disk_space import DiskWriteError, as_disk_error, disk_errors

TEMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is fsynced and renamed onto `target`.

    For writers that want a file name rather than a handle (`model.save`, `save_weights`,
    `DataFrame.to_csv`). On an exception the temporary file is removed and `target` is untouched;
    a full disk or a permission error becomes a `keras_med.disk_space.DiskWriteError` (one line).

    Args:
        target: Final path.
        suffix: Suffix of the temporary file; defaults to `target`'s (Keras checks `.keras` and
            `.weights.h5` suffixes).

    Example:
        >>> with atomic_path("checkpoints/best.keras") as tmp:
        ...     model.save(tmp)
    """
    target = Path(target)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    # A full disk, a read-only folder or one without permission: one line naming the file
    # (keras_med.disk_space.DiskWriteError), never a traceback; the old file stays as it was.
    with disk_errors(target.name, target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX + target.name.split(".")[0] + "-", suffix=suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        translated = as_disk_error(error, target.name, target.parent) if isinstance(error, Exception) else None
        if translated is not None and not isinstance(error, DiskWriteError):
            raise translated from error
        raise


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Write `data` to `target` atomically; returns `target` as a Path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `target` atomically; returns `target` as a Path."""
    return write_bytes_atomic(target, text.encode(encoding))


def replace_directory_atomic(staging: str | Path, target: str | Path) -> Path:
    """Move a fully written `staging` folder to `target` (absent beforehand) with one rename.

    Every file in `staging` is fsynced first, so the renamed folder is complete on disk.

    Raises:
        FileExistsError: `target` already exists.
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    os.rename(staging, target)
    _fsync_dir(target.parent)
    return target


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in `folder` (not recursive)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(TEMP_PREFIX + "*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed
