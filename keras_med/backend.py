"""What must happen before Keras or TensorFlow is imported: the backend, and TensorFlow's C++ log level.

Keras reads `KERAS_BACKEND` once, when it is first imported, so a `--backend` flag (or a
`backend` key in a TOML file) only takes effect if it is applied before that; TensorFlow reads
`TF_CPP_MIN_LOG_LEVEL` when it is loaded. This module imports neither at module level for that
reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from keras_med.errors import ConfigError
from keras_med.first_import import around_first_import

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorflow", "jax", "torch")


def select_backend(backend: str) -> str:
    """Make `backend` the Keras backend of this process and return its name.

    Args:
        backend: 'tensorflow', 'jax', 'torch', or 'auto' (KERAS_BACKEND, else Keras's own default,
            TensorFlow).

    Returns:
        The backend Keras runs on, e.g. 'jax'.

    Raises:
        ConfigError: `backend` is unknown, or Keras was already imported with another backend.

    Example:
        >>> select_backend("jax")  # before anything imports keras
        'jax'
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend != "auto" and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    import keras

    running = keras.backend.backend()
    if backend != "auto" and running != backend:
        raise ConfigError(f"--backend {backend}: Keras was already imported with the {running} backend in this "
                          f"process; set KERAS_BACKEND={backend} before starting Python instead")
    return running


TF_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 2: TensorFlow's C++ errors only (no INFO or WARNING lines).
QUIET_TF_LOG_LEVEL = "2"


def quiet_tensorflow_logs(verbose: bool = False) -> bool:
    """Keep TensorFlow's C++ start-up noise off a command's stderr, unless asked for.

    On a CPU machine TensorFlow 2.21 writes, at import, "oneDNN custom operations are on" and
    "Could not find cuda drivers" twice (absl logs written before absl is initialised, which
    `TF_CPP_MIN_LOG_LEVEL` does not filter: tensorflow/tensorflow#100442) and, when the first
    device is set up, an `E0000 ... failed call to cuInit` line that a new user reads as a
    failure. This sets `TF_CPP_MIN_LOG_LEVEL=2` and silences stderr while TensorFlow is imported
    and its devices are listed (which is when those lines come); Python errors still raise.
    Each command logs "no GPU found: training on the CPU" itself where it matters.

    Nothing changes when the user set `TF_CPP_MIN_LOG_LEVEL`, passed `--verbose`, or TensorFlow
    is imported already.

    Args:
        verbose: the command's `--verbose`.

    Returns:
        Whether the logs were quietened.
    """
    if verbose or TF_LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[TF_LOG_LEVEL_VARIABLE] = QUIET_TF_LOG_LEVEL
    around_first_import("tensorflow", _load_quietly)
    return True


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null (C++ code writes there directly, not to `sys.stderr`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _load_quietly(module, load) -> None:
    """Runs TensorFlow's `__init__` and lists its devices (the cuInit line) with stderr silenced."""
    with _stderr_silenced():
        load()
        module.config.list_physical_devices("GPU")
