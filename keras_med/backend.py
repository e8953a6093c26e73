"""Choose the Keras backend before Keras is imported.

Keras reads `KERAS_BACKEND` once, when it is first imported, so a `--backend` flag (or a
`backend` key in a TOML file) only takes effect if it is applied before that; this module imports
no Keras at module level for that reason.
"""

from __future__ import annotations

import logging
import os
import sys

from keras_med.errors import ConfigError

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
