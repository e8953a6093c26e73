"""`import keras_med` makes every saved keras_med object loadable by `keras.saving.load_model`.

KerasHub's convention: importing the package registers every class its saved files name
(`ImageClassifier`, its layers, the `BalancedAccuracy` metric and the losses of a compile config;
`keras_med.models.saving` imports them all). But importing Keras here would fix its backend and
start TensorFlow before a command has read `--backend` (Keras reads `KERAS_BACKEND` once, when
first imported; `keras_med.backend`). So the registration waits for Keras: it runs now when Keras
is already imported, else right after the first `import keras` of the process, whoever makes it.
Python has no post-import hook, hence the one-shot import finder below (the same device
`keras_med.backend` uses to quieten TensorFlow's import).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

REGISTERING_MODULE = "keras_med.models.saving"


def register_keras_objects() -> None:
    """Register keras_med's serialisable classes now, or as soon as Keras is imported."""
    if "keras" in sys.modules:
        importlib.import_module(REGISTERING_MODULE)
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds `keras` once (then leaves `sys.meta_path`) and registers keras_med's classes after it loads."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader; this wrapper is only for the first import.
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        # `keras` is complete here; importing the registering module (which imports keras) is safe.
        sys.modules.setdefault("keras", module)
        importlib.import_module(REGISTERING_MODULE)
