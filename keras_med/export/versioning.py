"""Claim a SavedModel version number atomically, so that concurrent exports to one name never collide.

Kept apart from `keras_med.export.saved_model` (and free of TensorFlow) so that the claim can be
tested, and used, by processes that do not load a model.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from keras_med.atomic import replace_directory_atomic


def publish_version(partial: str | Path, model_dir: str | Path, version: int | None = None) -> tuple[Path, int]:
    """Rename the complete export ``partial`` to ``model_dir/<version>``, claiming the number atomically.

    With ``version`` None the number is the next free one, chosen and renamed into place while
    holding an ``fcntl.flock`` on the ``model_dir`` folder itself (no lock file for TF Serving or a
    listing to see): two exports to one name at once (three seeds trained in parallel) each get
    their own version instead of the second failing. Chosen under a lock rather than by retrying a
    rename: ``rename(2)`` silently replaces an empty folder, and Python has no ``RENAME_NOREPLACE``.
    The lock is held for the rename only, not the export.

    Returns:
        The version folder and its number.

    Raises:
        FileExistsError: an explicit ``version`` already exists.
    """
    model_dir = Path(model_dir)
    lock = os.open(model_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if version is None:
                # Any integer folder counts, complete or not, so a number is never reused.
                version = max((int(child.name) for child in model_dir.iterdir() if child.name.isdigit()),
                              default=0) + 1
            target = model_dir / str(version)
            if target.exists():
                raise FileExistsError(f"{target} already exists; pick another --version or leave it out for the "
                                      "next one")
            replace_directory_atomic(partial, target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)
    return target, version
