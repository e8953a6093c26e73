"""Stateless randomness for augmentation: every batch's draws come from a seed tensor of its own.

Keras's random preprocessing layers draw from a stateful `SeedGenerator` each time they run. Mapped
over `tf.data` batches with parallel calls, the batches take those draws in whatever order the
threads run, so a seeded run's augmented images (and its model) change from run to run. Here each
batch gets a seed from `batch_seed_stream` (a function of the run's seed, the epoch and the batch's
position), and `seeded_by` makes every layer derive its draws from that tensor: the augmented
stream no longer depends on thread timing or on `num_parallel_calls`.

Keras 3.15's layers take a per-call seed only through `get_random_transformation(seed=...)`, and
not everywhere (RandomColorJitter draws from its own generator inside `transform_images`), and
`keras.random` accepts a `SeedGenerator` or an int but not a seed tensor. So the seed tensor is
wrapped in `BatchSeed`, a `SeedGenerator` whose `next()` folds a draw counter into the batch's
seed, and handed to each layer through `_get_seed_generator`, the one place every layer asks for
its generator. TensorFlow-specific, like the rest of the input pipeline.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import keras
import tensorflow as tf


class BatchSeed(keras.random.SeedGenerator):
    """A `SeedGenerator` that draws stateless seeds from one batch's seed tensor.

    The k-th draw while tracing (or running eagerly) a batch's transformation is
    `stateless_fold_in(batch_seed, k)`: the same batch seed gives the same draws in the same order,
    whichever thread runs it. No variable is created (the base class's state is not used).
    """

    def __init__(self):  # noqa: D107 -- deliberately skips the base class's variable
        self.name = "batch_seed"
        self._seed = None
        self._draws = 0

    def reset(self, seed) -> None:
        """Draw from `seed` (an int64/int32 tensor of shape (2,)) from the first draw again."""
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered=True):
        if self._seed is None:
            raise RuntimeError("BatchSeed.next() called outside seeded_by(); no batch seed is set")
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)

    def get_config(self):
        return {}


@contextlib.contextmanager
def seeded_by(layers: Iterable[keras.layers.Layer], batch_seed: BatchSeed, seed):
    """Within the block, every random draw of `layers` (and their sub-layers) comes from `seed`."""
    batch_seed.reset(seed)
    patched = []
    for layer in layers:
        for inner in layer._flatten_layers(include_self=True):
            if hasattr(inner, "generator") and "_get_seed_generator" not in inner.__dict__:
                inner._get_seed_generator = lambda backend=None: batch_seed
                patched.append(inner)
    try:
        yield batch_seed
    finally:
        for inner in patched:
            del inner.__dict__["_get_seed_generator"]


def batch_seed_stream(seed: int) -> tf.data.Dataset:
    """An endless dataset of `(2,)` int64 batch seeds: the same sequence for the same `seed` and
    a new sequence each epoch (each new iterator), reproducibly, so epochs see new variants."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)


def with_batch_seeds(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """`dataset`'s `(images, targets)` batches as `(images, targets, batch_seed)`."""
    return tf.data.Dataset.zip(dataset, batch_seed_stream(seed)).map(
        lambda batch, batch_seed: (*batch, batch_seed))
