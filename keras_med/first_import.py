"""Run code around the first import of a module.

Python has no post-import hook, so this is a one-shot finder at the front of `sys.meta_path`: it
finds the named module once, leaves `sys.meta_path`, and wraps that module's first execution.
`keras_med.backend` silences TensorFlow's C++ start-up lines this way, and `keras_med.registration`
registers keras_med's saved classes right after Keras loads without importing Keras itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Callable

# around(module, load): runs `load()` (the module's real first execution) with whatever it adds.
Around = Callable[[object, Callable[[], None]], None]


def around_first_import(name: str, around: Around) -> None:
    """Make `around` run the first import of the top-level module `name` (once; idempotent)."""
    if not any(isinstance(finder, _FirstImport) and finder.name == name and finder.around is around
               for finder in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport(name, around))


class _FirstImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, around: Around):
        self.name, self.around = name, around

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _WrappedLoader(spec.loader, self.around)
        return spec


class _WrappedLoader(importlib.abc.Loader):
    def __init__(self, loader, around: Around):
        self._loader, self._around = loader, around

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader; this wrapper is only for the first import.
        module.__loader__ = module.__spec__.loader = self._loader
        self._around(module, lambda: self._loader.exec_module(module))
