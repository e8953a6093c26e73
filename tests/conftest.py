"""Shared test fixtures: tiny images, a tiny HAM10000-layout demo and a toy training problem, under tmp paths.

Plain helpers (tiny models, image bytes, the tiny recipe flags) are in tests/helpers.py. The tiers:
a test is `slow` when it trains or exports a model for more than a few seconds, `system` when it
starts processes, servers or a browser (pyproject.toml); every test that uses one of
`SLOW_FIXTURES` (a finished tiny recipe run) is marked slow here, so a new test of such a run
cannot land in the fast tier by mistake.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest


from helpers import write_image

# Module fixtures that run a whole tiny recipe (train, evaluate, explain, export) once per file.
SLOW_FIXTURES = {"finished_run", "four_class_run", "ensemble", "cross_validated", "jax_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def image_writer():
    """`image_writer(path, pixels)` writes an image file; returns the path."""
    return write_image


@pytest.fixture(scope="session")
def ham_demo_dir(tmp_path_factory) -> Path:
    """A 140-image HAM10000 demo (official two-part layout) at 64x48, written once per session."""
    from keras_med.data.synthetic import write_ham10000_demo

    return write_ham10000_demo(tmp_path_factory.mktemp("ham_demo"), n_images=140, seed=0, size=(64, 48))


# --- a tiny, separable training problem (tests/test_training.py, tests/test_faults_kill.py) ---------
TOY_SIZE = 32


class ToySet(NamedTuple):
    dataset: object  # a batched tf.data.Dataset of (images, one-hot targets)
    images: np.ndarray
    labels: np.ndarray


def _toy_data(n: int = 64, seed: int = 0, batch: int = 16) -> ToySet:
    """Dark images are class 0, bright images class 1: separable in a few steps."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = (rng.uniform(0, 80, (n, TOY_SIZE, TOY_SIZE, 3)) + 150 * labels[:, None, None, None]).astype("float32")
    targets = np.eye(2, dtype="float32")[labels]
    return ToySet(tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch), images, labels)


def _toy_config(**train):
    """A RecipeConfig for the toy custom CNN: 3 epochs at 3e-3 unless `train` says otherwise."""
    from keras_med.config import RecipeConfig

    config = RecipeConfig()
    config.model.model, config.model.weights = "custom_cnn", "none"
    for key, value in {"epochs": 3, "patience": 5, "learning_rate": 3e-3, **train}.items():
        setattr(config.train, key, value)
    return config


def _toy_model(seed: int | None = 0):
    """The toy custom CNN; `seed=None` leaves Keras's random state as it is (to test who seeds it)."""
    import keras

    from keras_med.models import create_model

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return create_model("custom_cnn", num_classes=2, image_size=TOY_SIZE, weights=None, head_units=16, dropout=0.1)


@functools.cache
def _toy_callbacks():
    # Built on first use: conftest is imported by every test run, and Keras takes seconds to import.
    import keras

    class KillAfterEpoch(keras.callbacks.Callback):
        """Stops the process (as an exception) once every earlier callback has seen the end of `epoch`."""

        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.epoch:
                raise KeyboardInterrupt("killed")

    class EpochCounter(keras.callbacks.Callback):
        """Records the epochs fit runs, to show which a resumed run repeats or skips."""

        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    return KillAfterEpoch, EpochCounter


def _extra_callbacks(monkeypatch, *callbacks, phase: int | None = None) -> None:
    """Append `callbacks` to those fit_model builds (for one fit `phase` only, or all), until monkeypatch.undo()."""
    import keras_med.training.fit as fit_module

    original = fit_module.build_callbacks

    def with_extra(*args, **kwargs):
        built = original(*args, **kwargs)
        return built + list(callbacks) if phase is None or kwargs["phase"] == phase else built

    monkeypatch.setattr(fit_module, "build_callbacks", with_extra)


@pytest.fixture
def toy_training():
    """The toy problem: `.data(n, seed, batch)` -> ToySet, `.config(**train)`, `.model(seed=0)`, `.size`,
    `.KillAfterEpoch(epoch)`, `.EpochCounter()` and `.extra_callbacks(monkeypatch, *callbacks, phase=None)`."""
    kill_after_epoch, epoch_counter = _toy_callbacks()
    return SimpleNamespace(size=TOY_SIZE, data=_toy_data, config=_toy_config, model=_toy_model,
                           KillAfterEpoch=kill_after_epoch, EpochCounter=epoch_counter,
                           extra_callbacks=_extra_callbacks)

