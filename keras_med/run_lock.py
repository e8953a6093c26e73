"""One process per run directory: an advisory lock on `<run_dir>/.lock` that holds the owner's PID.

Two trainings in one `--run-dir` would mix their checkpoints, history and resume state, and the
second would die at export. `fcntl.flock` is what the lock rests on because the kernel drops it
when its process ends, however it ends (kill -9 included): a lock file whose PID is no longer
running is therefore never "held", only stale, and the next run takes it over and says so. The
file is never deleted (unlinking a locked file lets a third process lock a new inode under the
same name while the second still holds the old one); it is emptied on a clean exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

from keras_med.errors import UserError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"

# Locks this process holds, by resolved folder: taking one again (a recipe that calls another
# step under the same run directory) nests instead of refusing itself. flock on a second open
# file description of the same file would block against our own first one.
_held: dict[Path, list] = {}


class RunDirectoryLockedError(UserError):
    """Another live process holds the run directory's lock."""


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def run_directory_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold `<run_dir>/.lock` for the duration of the block; the folder is created if needed.

    Args:
        run_dir: The run directory (`--run-dir` / `--output-dir`).

    Yields:
        The lock file's path.

    Raises:
        RunDirectoryLockedError: another live process holds the lock (the message names its PID).
        UserError: the folder cannot be created or the lock file cannot be written.

    Example:
        >>> with run_directory_lock("runs/ham10000"):   # doctest: +SKIP
        ...     train(...)
    """
    folder = Path(run_dir).resolve()
    if folder in _held:
        _held[folder][1] += 1
        try:
            yield folder / LOCK_FILE
        finally:
            _held[folder][1] -= 1
        return
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"cannot lock the run directory {folder}: {error.strerror or error} "
                        f"(expected a folder this user can write)") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"process {holder}" if holder is not None else "another process"
        raise RunDirectoryLockedError(
            f"{folder} is in use by {who} (lock file {path}); wait for it to finish or choose another "
            f"--run-dir/--output-dir") from None
    try:
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid():
            logger.warning("took over the lock on %s left by process %d, which is no longer running",
                           folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as error:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise UserError(f"cannot write the lock file {path}: {error.strerror or error}") from error
    _held[folder] = [fd, 1]
    try:
        yield path
    finally:
        del _held[folder]
        # An empty file means "released cleanly": the next run takes it without a warning.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def guarded_run_directory(run_dir: str | Path, *, saved_models: str | Path | None = None,
                          cache: str | None = None) -> Iterator[Path]:
    """Everything a training checks about where it writes, before any work; held for the whole run.

    Checks that the run directory is writable, takes its lock (`run_directory_lock`), then checks
    the export target and creates the `--cache` folder, so that an unwritable `--saved-models` is
    refused now and not after an hour of training.

    Args:
        run_dir: the run directory.
        saved_models: the export's folder (`saved_models/<name>`), or None when the run exports nothing.
        cache: `--cache` (`"memory"`, `"none"` or a path).

    Raises:
        UserError: one line (`DiskWriteError`, `RunDirectoryLockedError`, `ConfigError`).
    """
    from keras_med.data.cache_files import prepare_cache_location
    from keras_med.disk_space import check_writable

    check_writable(run_dir, "--run-dir")
    with run_directory_lock(run_dir) as lock:
        if saved_models is not None:
            check_writable(saved_models, "--saved-models", create=False)
        if cache is not None:
            prepare_cache_location(cache)
        yield lock
