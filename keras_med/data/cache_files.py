"""Where `--cache FILE` puts each split's `tf.data` cache: one file per split, named by a key of its inputs.

`Dataset.cache(path)` trusts whatever it finds under `path`: it never checks that the cached
elements came from the same files. One path for train, validation and test made validation read the
training images, and a later run on another dataset with the same `--cache` trained on the first
one's pixels without a word. So the user's `--cache` is only a place and a prefix: the file is
`<prefix>-<split>-<key>`, the key a hash of everything the cached pixels depend on (the files in
their order, their size and modification time, the targets, the image size, the resize mode and the
decode plan). Inputs that differ in any of these can never meet the same file; the same inputs
reuse it, which is the point of a file cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from keras_med.errors import ConfigError

# Raised when what a cache file holds changes for the same inputs (a new decode step, say),
# so that files written by an older keras_med are not read as current.
CACHE_FORMAT = 1
IN_MEMORY_CHOICES = ("memory", "none")


def cache_folder_and_prefix(cache: str) -> tuple[Path, str]:
    """Split `--cache` into the folder and the file name prefix (an existing folder: prefix "cache")."""
    path = Path(cache).expanduser()
    if cache.endswith(os.sep) or path.is_dir():
        return path, "cache"
    return path.parent, path.name


def prepare_cache_location(cache: str) -> Path | None:
    """Create `--cache`'s folder and check it is writable, before any work; None for memory/none.

    Call at the start of a run (the pipelines call it too): otherwise a folder that does not exist
    or cannot be written fails in the middle of the first epoch with a TensorFlow `NotFoundError`.

    Raises:
        ConfigError: the folder cannot be created or written (one line, naming it and why).
    """
    if cache in IN_MEMORY_CHOICES:
        return None
    folder, _ = cache_folder_and_prefix(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"--cache {cache}: cannot create or write the folder {folder} "
                          f"({error.strerror or error}); expected a writable folder, or 'memory'/'none'") from error
    return folder


def cache_key(paths: Sequence[str], targets: np.ndarray, image_size: int, resize: str, decode: object = None) -> str:
    """A 16-hex-digit key of what the cached elements depend on.

    Args:
        paths: the image files, in pipeline order (the cache stores elements in this order).
        targets: the targets aligned with `paths`.
        image_size: the model's image size.
        resize: `"resize"` or `"pad"`.
        decode: the decode settings (e.g. `keras_med.data.decode.DecodePlan`); its repr is hashed.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "image_size": image_size, "resize": resize,
                              "decode": repr(decode), "count": len(paths)}).encode())
    for path in paths:
        try:
            stat = os.stat(path)
            # A file replaced in place (same name, new pixels) gets a new key.
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}\0{stamp}\n".encode())
    targets = np.ascontiguousarray(np.asarray(targets, dtype=np.float32))
    digest.update(str(targets.shape).encode())
    digest.update(targets.tobytes())
    return digest.hexdigest()[:16]


def split_cache_file(cache: str, paths: Sequence[str], targets: np.ndarray, *, image_size: int, resize: str,
                     decode: object = None, split: str | None = None) -> str:
    """The cache file for one split: `<folder>/<prefix>-<split>-<key>`; its folder is created.

    Args:
        cache: the user's `--cache` (a file path or a folder).
        split: `"train"`, `"val"`, `"test"`, ...; None: `"data"` (the key alone still separates splits,
            whose files differ; the name makes the files readable to a person).
        paths, targets, image_size, resize, decode: as `cache_key`.

    Example:
        >>> split_cache_file("/tmp/c/ham", ["a.jpg"], np.zeros((1, 1)), image_size=64, resize="resize",
        ...                  split="val")  # doctest: +ELLIPSIS
        '/tmp/c/ham-val-...'
    """
    folder = prepare_cache_location(cache)
    _, prefix = cache_folder_and_prefix(cache)
    name = "".join(char if char.isalnum() or char in "-_." else "_" for char in (split or "data"))
    return str(folder / f"{prefix}-{name}-{cache_key(paths, targets, image_size, resize, decode)}")
