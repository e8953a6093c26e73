"""Shared test fixtures: tiny images and a tiny HAM10000-layout demo, all written under tmp paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Write uint8 pixels (H, W) or (H, W, 3) to `path` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def image_writer():
    """`image_writer(path, pixels)` writes an image file; returns the path."""
    return write_image


@pytest.fixture(scope="session")
def ham_demo_dir(tmp_path_factory) -> Path:
    """A 140-image HAM10000 demo (official two-part layout) at 64x48, written once per session."""
    from keras_med.data.synthetic import write_ham10000_demo

    return write_ham10000_demo(tmp_path_factory.mktemp("ham_demo"), n_images=140, seed=0, size=(64, 48))
