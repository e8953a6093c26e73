"""The tf.data pipeline: shapes, dtypes, label alignment through shuffling and batching, options."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_med.data import balanced_class_weights, build_image_pipeline, check_images, decode_image
from keras_med.data.pipeline import fit_pixels

COUNT = 24


@pytest.fixture
def coded_images(tmp_path, image_writer):
    """PNGs whose flat grey level encodes their index (10 * i), half RGB half grayscale, 48x40."""
    paths = []
    for index in range(COUNT):
        shape = (40, 48, 3) if index % 2 else (40, 48)
        paths.append(str(image_writer(tmp_path / f"{index:02d}.png", np.full(shape, 10 * index, np.uint8))))
    return paths


def _index_targets():
    return np.arange(COUNT, dtype=np.float32)[:, None]


def _collect(dataset):
    images, targets = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(targets)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_labels_stay_aligned_through_shuffle_and_batch(coded_images, cache):
    dataset = build_image_pipeline(coded_images, _index_targets(), image_size=32, batch_size=5,
                                   training=True, augment="none", cache=cache, seed=1)
    images, targets = _collect(dataset)
    assert images.shape == (COUNT, 32, 32, 3) and images.dtype == np.float32
    assert targets.dtype == np.float32
    assert sorted(targets[:, 0].tolist()) == list(range(COUNT))
    assert targets[:, 0].tolist() != list(range(COUNT)), "training order should be shuffled"
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 10 * targets[:, 0], atol=1.0)


def test_evaluation_pipeline_keeps_order_and_pixels_in_0_255(coded_images):
    images, targets = _collect(build_image_pipeline(coded_images, _index_targets(), image_size=16, batch_size=7,
                                                    training=False, augment="dermoscopy"))
    assert targets[:, 0].tolist() == list(range(COUNT))
    np.testing.assert_allclose(images[:, 0, 0, :], np.repeat(10.0 * targets, 3, axis=1), atol=1.0)


def test_pixel_arrays_in_memory_are_expanded_to_rgb_and_resized():
    pixels = (np.arange(COUNT, dtype=np.uint8) * 10)[:, None, None, None] * np.ones((1, 28, 28, 1), np.uint8)
    images, targets = _collect(build_image_pipeline(pixels, _index_targets(), image_size=32, batch_size=8,
                                                    training=True, augment="xray"))
    assert images.shape == (COUNT, 32, 32, 3)
    assert sorted(targets[:, 0].tolist()) == list(range(COUNT))


def test_augmentation_changes_images_but_not_their_range(tmp_path, image_writer):
    rng = np.random.default_rng(0)
    paths = [str(image_writer(tmp_path / f"{i}.jpg", rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)))
             for i in range(8)]
    targets = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    plain, _ = _collect(build_image_pipeline(paths, targets, image_size=32, batch_size=8, training=False))
    augmented, _ = _collect(build_image_pipeline(paths, targets, image_size=32, batch_size=8, training=True,
                                                 augment="dermoscopy", seed=0))
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(np.sort(plain.reshape(8, -1), axis=0), np.sort(augmented.reshape(8, -1), axis=0))


def test_colour_jitter_never_leaves_the_pixel_range(tmp_path, image_writer):
    # Saturated colours are where Keras's RandomSaturation overshoots below 0 (a real dermoscopy
    # image can be this red); every seed's augmented batch must stay in 0..255 all the same.
    rng = np.random.default_rng(1)
    colours = np.array([[220, 30, 20], [30, 200, 40], [25, 30, 230], [240, 200, 10]], np.uint8)
    paths = [str(image_writer(tmp_path / f"{i}.png",
                              np.clip(colours[i % 4] + rng.integers(-20, 20, (48, 48, 3)), 0, 255).astype(np.uint8)))
             for i in range(16)]
    targets = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    for seed in range(3):
        augmented, _ = _collect(build_image_pipeline(paths, targets, image_size=32, batch_size=16, training=True,
                                                     augment="dermoscopy", seed=seed))
        assert augmented.min() >= 0.0 and augmented.max() <= 255.0, (seed, augmented.min(), augmented.max())


def test_mixup_and_cutmix_mix_one_hot_targets(coded_images):
    targets = np.eye(3, dtype=np.float32)[np.arange(COUNT) % 3]
    _, mixed = _collect(build_image_pipeline(coded_images, targets, image_size=16, batch_size=8, training=True,
                                             mixup=0.4, cutmix=1.0, seed=0))
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
    assert ((mixed > 0.01) & (mixed < 0.99)).any(), "some targets should be mixtures"


def test_oversampling_draws_classes_equally():
    labels = np.array([0] * 90 + [1] * 10)
    pixels = np.zeros((100, 8, 8, 3), np.uint8)
    _, targets = _collect(build_image_pipeline(pixels, np.eye(2, dtype=np.float32)[labels], image_size=8,
                                               batch_size=10, training=True, oversample=True, seed=0))
    assert len(targets) == 100
    assert 30 <= targets[:, 1].sum() <= 70


def test_streaming_oversampling_keeps_labels_aligned(coded_images):
    labels = (np.arange(COUNT) >= COUNT - 4).astype(np.float32)[:, None]
    images, targets = _collect(build_image_pipeline(coded_images, labels, image_size=16, batch_size=6,
                                                    training=True, oversample=True, cache="none", seed=0))
    assert len(targets) == COUNT and 6 <= targets.sum() <= 18
    rare_levels = images[targets[:, 0] == 1].mean(axis=(1, 2, 3))
    assert np.all(rare_levels >= 10 * (COUNT - 4) - 1.0)


def test_reduced_scale_jpeg_decode_gives_the_asked_size(tmp_path, image_writer):
    path = image_writer(tmp_path / "big.jpg", np.full((200, 260, 3), 128, np.uint8))
    contents = path.read_bytes()
    for mode in ("resize", "pad"):
        image = decode_image(contents, image_size=48, resize=mode).numpy()
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert decode_image(contents).shape == (200, 260, 3)


def test_check_images_keeps_decoded_pixels_in_input_order(coded_images):
    result = check_images(coded_images, image_size=16)
    assert result.ok.all() and not result.bad
    np.testing.assert_allclose(result.pixels.mean(axis=(1, 2, 3)), 10 * np.arange(COUNT), atol=1.0)


def test_fit_pixels_pads_keeping_aspect():
    wide = np.full((1, 10, 20, 3), 200, np.uint8)
    padded = fit_pixels(wide, 20, "pad")
    assert padded.shape == (1, 20, 20, 3) and padded[0, 0, 10, 0] == 0 and padded[0, 10, 10, 0] == 200


def test_balanced_class_weights_inverse_frequency():
    targets = np.eye(3, dtype=np.float32)[[0] * 6 + [1] * 3 + [2] * 3]
    assert balanced_class_weights(targets) == pytest.approx({0: 12 / 18, 1: 12 / 9, 2: 12 / 9})
    binary = np.array([[0.0]] * 3 + [[1.0]])
    assert balanced_class_weights(binary) == pytest.approx({0: 4 / 6, 1: 2.0})


def test_pixels_reach_tensorflow_without_a_copy_and_outlive_the_array():
    import gc

    from keras_med.data.memory import aligned_empty, pixels_tensor

    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    unaligned = np.frombuffer(b"\0" + pixels.tobytes(), np.uint8, offset=1).reshape(pixels.shape)
    assert unaligned.ctypes.data % 64
    tensor = pixels_tensor(unaligned)  # copied by numpy into an aligned buffer first
    del unaligned
    gc.collect()
    np.testing.assert_array_equal(tf.gather(tensor, [4, 0]).numpy(), pixels[[4, 0]])

    shared = aligned_empty(pixels.shape)
    shared[...] = pixels
    view = pixels_tensor(shared)
    shared[1, 0, 0, 0] = 255 - shared[1, 0, 0, 0]  # the tensor reads the same memory
    assert int(view[1, 0, 0, 0]) == int(shared[1, 0, 0, 0])
