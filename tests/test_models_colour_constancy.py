"""Shades-of-Gray colour constancy inside the model (`--colour-constancy shades_of_gray`)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_med.errors import ConfigError
from keras_med.models import create_model
from keras_med.models.preprocessing import ShadesOfGray

REPO = Path(__file__).resolve().parent.parent


def reference_shades_of_gray(images, power=6.0):
    """The published recipe in NumPy, one image at a time (as ISIC entries apply it to files)."""
    out = []
    for image in np.asarray(images, np.float64) / 255.0:
        illuminant = np.power(np.mean(np.power(image, power), axis=(0, 1)), 1.0 / power)
        illuminant = illuminant / np.sqrt(np.sum(illuminant ** 2))
        out.append(np.clip(image / (illuminant * np.sqrt(3.0)), 0.0, 1.0) * 255.0)
    return np.stack(out)


def reddish_images(count=4, side=24, seed=0):
    rng = np.random.default_rng(seed)
    skin = rng.uniform(0.6, 1.0, (count, side, side, 1)) * np.array([200.0, 120.0, 110.0])
    return np.clip(skin + rng.normal(0, 10, skin.shape), 0, 255).astype(np.float32)


def test_layer_matches_the_published_recipe_image_by_image():
    images = reddish_images()
    np.testing.assert_allclose(np.asarray(ShadesOfGray()(images)), reference_shades_of_gray(images), atol=0.05)


def test_a_colour_cast_becomes_at_most_a_change_of_brightness():
    images = reddish_images(seed=1) * 0.6  # dark enough that no channel clips
    cast = np.array([1.25, 1.0, 0.7], np.float32)
    plain, tinted = np.asarray(ShadesOfGray()(images)), np.asarray(ShadesOfGray()(images * cast))
    ratio = tinted / plain
    # one factor per image, the same in every pixel and channel: the cast itself is gone
    np.testing.assert_allclose(ratio, ratio.mean(axis=(1, 2, 3), keepdims=True) * np.ones_like(ratio), rtol=1e-4)
    grey = np.full((1, 8, 8, 3), 128.0, np.float32)
    np.testing.assert_allclose(np.asarray(ShadesOfGray()(grey)), grey, atol=1e-3)


def test_black_image_stays_black_and_finite():
    out = np.asarray(ShadesOfGray()(np.zeros((1, 8, 8, 3), np.float32)))
    assert np.isfinite(out).all() and out.max() == 0.0


def test_model_runs_it_before_its_own_normalisation_and_reloads(tmp_path):
    model = create_model("custom_cnn", num_classes=3, image_size=32, weights=None, colour_constancy="shades_of_gray")
    steps = model.input_steps()
    assert isinstance(steps[0], ShadesOfGray) and len(steps) == 2, [type(step).__name__ for step in steps]
    plain = create_model("custom_cnn", num_classes=3, image_size=32, weights=None)
    assert not any(isinstance(step, ShadesOfGray) for step in plain.input_steps())
    pixels = reddish_images(count=3, side=32)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6)
    assert isinstance(reloaded.input_steps()[0], ShadesOfGray)


def test_fine_tuning_from_a_model_that_has_it_does_not_apply_it_twice(tmp_path):
    first = create_model("custom_cnn", num_classes=3, image_size=32, weights=None, colour_constancy="shades_of_gray")
    path = tmp_path / "first.keras"
    first.save(path)
    for method in ("shades_of_gray", "none"):
        second = create_model("custom_cnn", num_classes=2, image_size=32, weights=str(path), colour_constancy=method)
        kinds = [type(step).__name__ for step in second.input_steps()]
        assert kinds.count("ShadesOfGray") == 1, (method, kinds)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="colour_constancy: expected one of"):
        create_model("custom_cnn", num_classes=3, image_size=32, weights=None, colour_constancy="gray_world")


def test_layer_gives_the_same_images_on_jax(tmp_path):
    images = reddish_images(count=2, side=16, seed=3)
    script = textwrap.dedent("""
        import sys, numpy as np, keras
        from keras_med.models.preprocessing import ShadesOfGray
        assert keras.backend.backend() == "jax"
        np.save(sys.argv[2], np.asarray(ShadesOfGray()(np.load(sys.argv[1]))))
    """)
    source, target = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(source, images)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, str(source), str(target)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(target), np.asarray(ShadesOfGray()(images)), atol=1e-3)



@pytest.mark.parametrize("power", [0, 2.5, "6", True])
def test_power_must_be_a_whole_norm(power):
    with pytest.raises(ValueError, match="power: expected a whole Minkowski norm"):
        ShadesOfGray(power=power)


@pytest.mark.parametrize("power", [1, 2, 5, 6.0])
def test_other_norms_match_the_reference(power):
    images = reddish_images(seed=4)
    np.testing.assert_allclose(np.asarray(ShadesOfGray(power=power)(images)),
                               reference_shades_of_gray(images, power=float(power)), atol=0.05)
