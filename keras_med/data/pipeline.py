"""The `tf.data` input pipeline: decode, resize, cache, shuffle, augment, batch, prefetch.

TensorFlow-specific by design (the rest of keras_med is backend-agnostic). Images leave as float32
in 0..255 (normalisation is inside the model), targets as float32 (see docs/contracts.md).

Two shapes of pipeline, chosen by where the pixels live:
- in memory (a pixel array, or files with `cache="memory"`: `check_images` decodes each file once
  and its output is the cache): shuffling is a permutation of indices and each batch is one
  `gather`, so no shuffle buffer duplicates the images;
- streaming (files with `cache="none"` or a cache file): parallel decode per file, then
  `Dataset.cache(file)`, a shuffle buffer, and batching, for sets larger than memory.
Augmentation runs on whole batches after caching, so each epoch sees new variants.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_med.data.augment import build_augmenter, build_mixers
from keras_med.data.balance import sampling_strata
from keras_med.data.batch_seeds import BatchSeed, seeded_by, with_batch_seeds
from keras_med.data.cache_files import prepare_cache_location, split_cache_file
from keras_med.data.decode import RESIZE_MODES, check_images, load_image, plan_decoding, resize_image
from keras_med.data.errors import DataError
from keras_med.data.memory import pixels_tensor

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
STREAM_SHUFFLE_BUFFER = 2048


def build_image_pipeline(images: np.ndarray | Sequence[str], targets: np.ndarray, *, image_size: int,
                         batch_size: int, training: bool, augment: str = "none", resize: str = "resize",
                         cache: str = "memory", mixup: float = 0.0, cutmix: float = 0.0,
                         oversample: bool = False, seed: int = 42, check: bool = True,
                         split: str | None = None) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(images float32 (B, S, S, 3) in 0..255, targets float32)` batches.

    Args:
        images: image file paths (JPEG or PNG), or decoded pixels `(N, H, W)` / `(N, H, W, 1|3)`
            (e.g. `ImageTable.images()`); grayscale becomes 3 channels.
        targets: `(N, C)` or `(N, 1)` float targets aligned with `images` (`ImageTable.targets()`).
        image_size: side of the square images the model sees.
        batch_size: images per batch.
        training: shuffle, augment, mix and oversample (True) or keep order and pixels (False).
        augment: augmentation preset: dermoscopy, xray, light or none (training only).
        resize: `"resize"` (stretch) or `"pad"` (keep the aspect ratio, pad with black).
        cache: `"memory"` (decode once into RAM), `"none"`, or a file path (or folder) for
            `Dataset.cache`: each split gets its own file there, named by a key of its inputs
            (`keras_med.data.cache_files`), so no other split, dataset or size reads it.
        mixup: MixUp alpha (0: off); needs one-hot or binary targets.
        cutmix: CutMix alpha (0: off); with both on, each batch gets one of them.
        oversample: draw every class (multilabel: rarest-label stratum) equally often, for as many
            batches as one pass over the data; an alternative to class weights.
        seed: seeds shuffling and augmentation.
        check: for files, decode each once up front and raise `BadImageError`/`MissingImageError`
            naming the file (free with `cache="memory"`, an extra pass otherwise). To skip bad
            files instead, run `check_table_images` on the table first.
        split: the split's name (`"train"`, `"val"`, ...), part of a cache file's name.

    Example:
        >>> train = table.subset("train")                         # doctest: +SKIP
        >>> dataset = build_image_pipeline(train.images(), train.targets(), image_size=128,
        ...     batch_size=32, training=True, augment="dermoscopy")  # doctest: +SKIP
    """
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim == 1:
        targets = targets[:, None]
    _check_arguments(images, targets, image_size, batch_size, resize, cache)
    if isinstance(images, np.ndarray):
        dataset = _in_memory(fit_pixels(images, image_size, resize), targets, batch_size, training, oversample, seed)
    elif cache == "memory":
        pixels = check_images(images, "error", image_size=image_size, resize=resize).pixels
        dataset = _in_memory(pixels, targets, batch_size, training, oversample, seed)
    else:
        # Before the check pass: an unwritable cache folder is refused before any decoding.
        prepare_cache_location(cache)
        if check:
            check_images(images, "error")
        dataset = _streaming(list(map(str, images)), targets, image_size, resize, cache, batch_size, training,
                             oversample, seed, split)
    return finish_pipeline(dataset, training, augment, mixup, cutmix, seed)


def fit_pixels(pixels: np.ndarray, image_size: int, resize: str = "resize") -> np.ndarray:
    """Bring decoded pixels to uint8 `(N, S, S, 3)`: add a channel axis, gray to RGB, resize."""
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise DataError(f"images array must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if pixels.shape[1:3] != (image_size, image_size):
        # One eager batched resize up front, so that epochs only read the cached result.
        pixels = np.concatenate([resize_image(chunk, image_size, resize).numpy()
                                 for chunk in np.array_split(pixels, max(1, math.ceil(len(pixels) / 1024)))])
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels


def _check_arguments(images, targets, image_size, batch_size, resize, cache) -> None:
    if len(images) != len(targets):
        raise DataError(f"images ({len(images)}) and targets ({len(targets)}) must have the same length")
    if len(images) == 0:
        raise DataError("images is empty; expected at least one image")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an int >= 8, got {image_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not cache:
        raise DataError("cache must be 'memory', 'none' or a file path, got an empty string")


def _in_memory(pixels: np.ndarray, targets: np.ndarray, batch_size: int, training: bool, oversample: bool,
               seed: int) -> tf.data.Dataset:
    count = len(pixels)
    cached = pixels_tensor(pixels)
    targets_tensor = tf.constant(targets)
    indices = _oversampled_indices(targets, seed) if training and oversample else (
        tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True) if training
        else tf.data.Dataset.range(count))
    batches = indices.batch(batch_size)
    if training and oversample:
        batches = batches.take(math.ceil(count / batch_size))
    return batches.map(lambda index: (tf.gather(cached, index), tf.gather(targets_tensor, index)),
                       num_parallel_calls=AUTOTUNE)


def _oversampled_indices(targets: np.ndarray, seed: int) -> tf.data.Dataset:
    strata = sampling_strata(targets)
    streams = [tf.data.Dataset.from_tensor_slices(np.flatnonzero(strata == stratum).astype(np.int64))
               .shuffle(int((strata == stratum).sum()), seed=seed + int(stratum)).repeat()
               for stratum in np.unique(strata)]
    logger.info("oversampling %d strata equally", len(streams))
    return tf.data.Dataset.sample_from_datasets(streams, seed=seed)


def _streaming(paths: list[str], targets: np.ndarray, image_size: int, resize: str, cache: str, batch_size: int,
               training: bool, oversample: bool, seed: int, split: str | None = None) -> tf.data.Dataset:
    plan = plan_decoding(paths, image_size, resize)
    dataset = tf.data.Dataset.from_tensor_slices((paths, targets)).map(
        lambda path, target: (load_image(path, image_size, resize, plan), target), num_parallel_calls=AUTOTUNE)
    if cache != "none":
        dataset = dataset.cache(split_cache_file(cache, paths, targets, image_size=image_size, resize=resize,
                                                 decode=plan, split=split))
    if training and oversample:
        strata = sampling_strata(targets)
        labelled = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(strata))
        streams = [labelled.filter(lambda element, s, k=int(k): tf.equal(s, k)).map(lambda element, s: element)
                   .shuffle(STREAM_SHUFFLE_BUFFER, seed=seed + int(k)).repeat() for k in np.unique(strata)]
        dataset = tf.data.Dataset.sample_from_datasets(streams, seed=seed)
        return dataset.batch(batch_size).take(math.ceil(len(paths) / batch_size))
    if training:
        dataset = dataset.shuffle(min(len(paths), STREAM_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, num_parallel_calls=AUTOTUNE)


def finish_pipeline(dataset: tf.data.Dataset, training: bool, augment: str, mixup: float, cutmix: float,
                    seed: int, num_parallel_calls: int = AUTOTUNE) -> tf.data.Dataset:
    """The stages every source shares after its uint8 batches: float32, augmentation, MixUp/CutMix, prefetch.

    Used by the file and in-memory pipelines here and by the prepared TFRecord shards, so that all
    three train on identically augmented batches. To augment on the accelerator instead, pass
    `augment="none"` and no mixing here and give `batch_augmentation`'s function to the training
    step (`keras_med.training.runtime.prepare_train_step`).

    Each batch is augmented from a seed of its own (the run's seed, the epoch, the batch's
    position: `keras_med.data.batch_seeds`), so a seeded run sees the same augmented images every
    time, whatever `num_parallel_calls` is and whichever thread runs which batch.
    """
    augmentation = batch_augmentation(augment, mixup, cutmix, seed) if training else None
    dataset = dataset.map(lambda images, targets: (tf.cast(images, tf.float32), targets),
                          num_parallel_calls=num_parallel_calls)
    if augmentation is not None:
        dataset = with_batch_seeds(dataset, seed).map(augmentation, num_parallel_calls=num_parallel_calls)
    return dataset.prefetch(AUTOTUNE)


def batch_augmentation(augment: str, mixup: float = 0.0, cutmix: float = 0.0, seed: int = 42):
    """The training-time transformation of one batch: the `augment` preset, then MixUp or CutMix.

    The same function runs on the host (mapped over the `tf.data` batches by `finish_pipeline`) or
    on the accelerator (called inside the training step), so both places augment alike.

    Args:
        augment: augmentation preset (`keras_med.data.AUGMENT_PRESETS`).
        mixup: MixUp alpha (0: off).
        cutmix: CutMix alpha (0: off); with both on, each batch gets one of them.
        seed: seeds the random layers.

    Returns:
        `(images, targets, seed=None) -> (images, targets)` on float32 images in 0..255, or None
        when there is nothing to do. `seed` (a `(2,)` integer tensor) keys every random draw of the
        batch; without it the batch draws the next seed of a generator seeded with `seed`. Create
        it inside the strategy scope when it runs in the training step (that generator is a
        variable).
    """
    augmenter = build_augmenter(augment, seed)
    mixers = build_mixers(mixup, cutmix, seed)
    if augmenter is None and not mixers:
        return None
    layers = ([augmenter] if augmenter is not None else []) + mixers
    batch_seed = BatchSeed()
    # Without a batch seed (in the training step, one batch after another) the seeds come from one
    # stateful generator, in step order.
    step_seeds = keras.random.SeedGenerator(seed)

    def apply(images, targets, seed=None):
        with seeded_by(layers, batch_seed, step_seeds.next() if seed is None else seed):
            images = tf.cast(images, tf.float32)
            if augmenter is not None:
                # Keras 3.15's RandomSaturation (inside RandomColorJitter) returns negative pixels for
                # strongly coloured images (about 20% of HAM10000 images, down to -50), which no real or
                # served image has: clip back to the 0..255 range every preset promises.
                images = tf.clip_by_value(augmenter(images, training=True), 0.0, 255.0)
            return _mix(mixers, batch_seed, images, targets) if mixers else (images, targets)

    return apply


def _mix(mixers, batch_seed, images, targets):
    def apply(layer):
        mixed = layer({"images": images, "labels": targets}, training=True)
        return mixed["images"], mixed["labels"]

    if len(mixers) == 1:
        return apply(mixers[0])
    # Both on: each batch gets MixUp or CutMix with equal chance, as timm does.
    choice = tf.random.stateless_uniform([], seed=tf.cast(batch_seed.next(), tf.int32))
    return tf.cond(choice < 0.5, lambda: apply(mixers[0]), lambda: apply(mixers[1]))
