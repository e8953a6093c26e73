"""A full disk or a folder this user cannot write: one line naming what, where and how much, exit status 2.

Two reasons for a module of its own. First, HDF5 (behind h5py and Keras's `.weights.h5` files)
does not fail cleanly on a full disk: its failed write surfaces while an object is freed, and the
process dies with a segmentation fault (reproduced: a 1 MiB tmpfs, `model.save_weights`, exit
139). No exception reaches Python, so the only cure is not to start such a write: `ensure_free_space`
checks the space against the file's expected size first. Second, the same failure reaches us as an
`OSError` (Python's writes), a TensorFlow `ResourceExhaustedError`/`UnknownError` (SavedModel
writes) or `PermissionError`: `disk_errors` turns each into one `DiskWriteError`.
"""

from __future__ import annotations

import contextlib
import errno
import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from keras_med.errors import UserError

# errno values that mean "this place cannot take the file", as opposed to a bug.
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}
# The same causes as TensorFlow's C++ file system words them (its errors carry no errno).
_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
             "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}
MIB = 1024 * 1024


class DiskWriteError(UserError):
    """A file could not be written: no space, no permission or a read-only file system."""


def _megabytes(count: int) -> str:
    return f"{count / MIB:.1f} MB"


def check_writable(path: str | Path, what: str, create: bool = True) -> Path:
    """Check that a file can be written in the folder `path`; call before work.

    Args:
        path: the folder (`--run-dir`, `--output-dir`, `--saved-models`, ...).
        what: how the user knows it, for the message (e.g. `"--saved-models"`).
        create: make the folder now; False checks the nearest folder that exists on the way to it
            instead, so that a run which ends up exporting nothing (a diverged run) leaves no
            empty export folder behind.

    Raises:
        DiskWriteError: one line naming `what`, the folder and why.
    """
    folder = Path(path).expanduser()
    probe = folder
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            while not probe.is_dir() and probe != probe.parent:
                probe = probe.parent
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        reason = DISK_ERRNOS.get(error.errno, error.strerror or str(error))
        raise DiskWriteError(f"{what}: cannot write to {folder} ({reason}); expected a folder this user can "
                             "write, on a disk with free space") from error
    return folder


def ensure_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse (one line) to start writing `needed` bytes where fewer are free.

    Args:
        folder: where the file goes (an existing folder, or a file path whose parent exists).
        needed: bytes the file will take (an estimate with its margin: `model_file_bytes`).
        what: the file, for the message (`"the resume state"`).
    """
    folder = Path(folder)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskWriteError(f"cannot write {what} to {folder}: no space left on the device (needs about "
                             f"{_megabytes(needed)}, {_megabytes(free)} free); free some space and re-run the same "
                             "command (it resumes)")


def model_file_bytes(model, with_optimizer: bool = False) -> int:
    """An upper estimate of a model's weights file: its variables' bytes, plus HDF5/zip overheads.

    The margin (10%, 8 kB a variable and 1 MiB) covers the container formats' headers measured on
    Keras's `.weights.h5` and `.keras` files; a generous estimate only refuses a write that nearly fits.
    """
    variables = list(model.weights)
    if with_optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    raw = 0
    for variable in variables:
        itemsize = 2 if "16" in str(variable.dtype) else 8 if "64" in str(variable.dtype) else 4
        raw += math.prod(int(dim) for dim in variable.shape) * itemsize
    return int(raw * 1.1) + 8192 * len(variables) + MIB


def as_disk_error(error: BaseException, what: str, where: str | Path) -> DiskWriteError | None:
    """The `DiskWriteError` for `error` when a full disk or a permission caused it, else None."""
    code = getattr(error, "errno", None)
    if code not in DISK_ERRNOS:
        text = str(error)
        code = next((value for message, value in _MESSAGES.items() if message in text), None)
        if code is None and type(error).__name__ == "ResourceExhaustedError" and "memory" not in text.lower():
            code = errno.ENOSPC
    if code not in DISK_ERRNOS:
        return None
    hint = ("free some space and re-run the same command (it resumes)" if code in (errno.ENOSPC, errno.EDQUOT)
            else "expected a folder this user can write")
    free = ""
    with contextlib.suppress(OSError):
        folder = Path(where)
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        if code in (errno.ENOSPC, errno.EDQUOT):
            free = f", {_megabytes(shutil.disk_usage(folder).free)} free"
    return DiskWriteError(f"cannot write {what} to {where}: {DISK_ERRNOS[code]}{free}; {hint}")


@contextlib.contextmanager
def disk_errors(what: str, where: str | Path) -> Iterator[None]:
    """Turn a full disk or a permission error inside the block into one `DiskWriteError` line.

    Example:
        >>> with disk_errors("the SavedModel", "saved_models/ham10000"):   # doctest: +SKIP
        ...     archive.write_out(path)
    """
    try:
        yield
    except DiskWriteError:
        raise
    except Exception as error:  # OSError from Python, TensorFlow's errors from its C++ writers
        translated = as_disk_error(error, what, where)
        if translated is None:
            raise
        raise translated from error
