"""`import keras_med` makes every saved keras_med object loadable by `keras.saving.load_model`.

KerasHub's convention: importing the package registers every class its saved files name
(`ImageClassifier`, its layers, the `BalancedAccuracy` metric and the losses of a compile config;
`keras_med.models.saving` imports them all). But importing Keras here would fix its backend and
start TensorFlow before a command has read `--backend` (Keras reads `KERAS_BACKEND` once, when
first imported; `keras_med.backend`). So the registration waits for Keras: it runs now when Keras
is already imported, else right after the first `import keras` of the process, whoever makes it.
Python has no post-import hook: `keras_med.first_import` wraps Keras's first import (as
`keras_med.backend` wraps TensorFlow's to quieten it).
"""

from __future__ import annotations

import importlib
import sys

from keras_med.first_import import around_first_import

REGISTERING_MODULE = "keras_med.models.saving"


def register_keras_objects() -> None:
    """Register keras_med's serialisable classes now, or as soon as Keras is imported."""
    if "keras" in sys.modules:
        importlib.import_module(REGISTERING_MODULE)
    else:
        around_first_import("keras", _register_after_loading)


def _register_after_loading(module, load) -> None:
    load()
    # `keras` is complete here; importing the registering module (which imports keras) is safe.
    sys.modules.setdefault("keras", module)
    importlib.import_module(REGISTERING_MODULE)
