"""Why a `.keras` file a user names does not load, in one line naming it (`keras_med.models.saving` raises it).

`keras.saving.load_model` fails in many ways on a file that is not what it should be, none of them
naming the file: a torn or damaged zip (`zipfile.BadZipFile`, `zlib.error`, `EOFError`), a Lambda
layer refused in safe mode (a `ValueError` of a dozen lines), a file of another program. Each is
the file's fault, not a bug, so each becomes a `RunContentError` (exit status 2) saying which file
and what to do.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path


# What load_model raises on a file that is not a loadable .keras model (not on a keras_med bug).
LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def describe_load_error(path: str | Path, error: BaseException) -> str:
    """One line for `error` raised by `keras.saving.load_model(path)`."""
    text = " ".join(str(error).split())
    if "Lambda" in text and "safe_mode" in text:
        return (f"{path}: holds a Lambda layer (Python code stored in the file), which Keras does not load in "
                "safe mode; expected a model without Lambda layers (rebuild it with registered layers, as "
                "keras_med's own models are)")
    if isinstance(error, (zipfile.BadZipFile, zlib.error, EOFError)):
        return (f"{path}: a damaged or incomplete .keras file ({text[:120] or type(error).__name__}); use an "
                "earlier checkpoint, or re-run the training that wrote it")
    return f"{path}: Keras cannot load it ({text[:300] or type(error).__name__})"
