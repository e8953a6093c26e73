"""What reproducibility costs: images/s with and without it, as ratios within one run.

Usage:
    python benchmarks/determinism_cost.py --images 512 --image-size 96 --rounds 3

Synthetic in-memory images (the cost is in augmentation and the kernels, not in decoding), and
alternating rounds of:
- pipeline: one epoch of the training pipeline with the dermoscopy preset and MixUp, as
  `finish_pipeline` builds it now (each batch keyed by its own stateless seed, parallel map),
  against the former form (the Keras layers' stateful generators drawn in thread order, same
  parallel map);
- training: a short `fit` of the custom CNN on that augmented pipeline, with TensorFlow's op
  determinism (`tf.config.experimental.enable_op_determinism`) off, then on (TensorFlow cannot
  turn it off again, so these rounds do not alternate).
Ratios are taken within a round (a burst of load from other processes hits both), then the median
over rounds. On a GPU op determinism costs more (deterministic reductions and convolution
back-propagation); this script measures whatever device TensorFlow uses.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_med.data.augment import build_augmenter, build_mixers
from keras_med.data.pipeline import AUTOTUNE, finish_pipeline
from keras_med.models import create_model


def batches(images, targets, batch_size):
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size)


def stateful_pipeline(dataset, seed):
    """The pipeline before per-batch seeds: the layers draw from their own generators in whatever
    order the parallel map's threads run."""
    augmenter, (mixup,) = build_augmenter("dermoscopy", seed), build_mixers(0.2, 0.0, seed)

    def apply(images, targets):
        images = tf.clip_by_value(augmenter(tf.cast(images, tf.float32), training=True), 0.0, 255.0)
        mixed = mixup({"images": images, "labels": targets}, training=True)
        return mixed["images"], mixed["labels"]

    return dataset.map(apply, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def epoch_rate(dataset) -> float:
    started, count = time.perf_counter(), 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def training_rate(dataset, image_size, classes, deterministic: bool, epochs: int) -> float:
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    model = create_model("custom_cnn", num_classes=classes, image_size=image_size, weights=None, head_units=32,
                         dropout=0.1)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(dataset.take(1), epochs=1, verbose=0)  # trace and warm up
    count = sum(int(images.shape[0]) for images, _ in dataset) * epochs
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs timed per round")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    classes = 4
    images = rng.integers(0, 256, (args.images, args.image_size, args.image_size, 3), dtype=np.uint8)
    targets = np.eye(classes, dtype="float32")[rng.integers(0, classes, args.images)]
    plain = batches(images, targets, args.batch_size)
    seeded = finish_pipeline(plain, True, "dermoscopy", 0.2, 0.0, seed=0)
    stateful = stateful_pipeline(plain, seed=0)
    epoch_rate(seeded), epoch_rate(stateful)  # trace both
    pipeline_ratios = []
    for round_number in range(args.rounds):
        old, new = epoch_rate(stateful), epoch_rate(seeded)
        pipeline_ratios.append(new / old)
        print(f"round {round_number}: pipeline stateful {old:.0f} img/s, per-batch seeds {new:.0f} img/s "
              f"({new / old:.2f}x)")
    # TensorFlow cannot turn op determinism off once on: every round without it runs first.
    off = [training_rate(seeded, args.image_size, classes, False, args.epochs) for _ in range(args.rounds)]
    on = [training_rate(seeded, args.image_size, classes, True, args.epochs) for _ in range(args.rounds)]
    print(f"training img/s, op determinism off {[round(rate) for rate in off]}, on {[round(rate) for rate in on]}")
    print(f"median: pipeline per-batch seeds / stateful {statistics.median(pipeline_ratios):.2f}x; "
          f"training op determinism on / off {statistics.median(on) / statistics.median(off):.2f}x "
          f"(device: {'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}, {args.images} images at "
          f"{args.image_size} px, batch {args.batch_size})")


if __name__ == "__main__":
    main()
