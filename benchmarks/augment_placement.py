"""Where augmentation runs (`--augment-on`): the host pipeline's images/s with augmentation on the
host (in tf.data) and on the device (the host only decodes, caches and batches).

Usage:
    python benchmarks/augment_placement.py --data-dir ../shared/data/ham10000_200x150 --limit 2000

On the same files, after one warm-up epoch that fills the memory cache (as epochs 2..N of a
training read it), alternating rounds time one epoch of:
- host: `build_image_pipeline(..., augment=PRESET, mixup=M)`, what `--augment-on host` feeds;
- device: `build_image_pipeline(..., augment="none")`, what `--augment-on device` feeds (the
  training step then augments);
- the augmentation itself as the training step runs it (`batch_augmentation` in a `tf.function`)
  on this machine's CPU, which stands in for the accelerator here.
Ratios are taken within a round (a burst of load from other processes hits every method), then
the median over rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_med.data import build_image_pipeline
from keras_med.data.files import IMAGE_SUFFIXES
from keras_med.data.pipeline import batch_augmentation


def epoch_rate(dataset) -> float:
    started, count = time.perf_counter(), 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path, help="Folder with JPEGs (searched recursively).")
    parser.add_argument("--image-size", type=int, default=160, help="Model image side (the HAM10000 recipe's).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", default="dermoscopy", help="Augmentation preset.")
    parser.add_argument("--mixup", type=float, default=0.2, help="MixUp alpha (0: off).")
    parser.add_argument("--limit", type=int, default=2000, help="Use only the first N images (0: all).")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = sorted(str(path) for path in args.data_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[:args.limit] if args.limit else paths
    targets = np.eye(7, dtype=np.float32)[np.arange(len(paths)) % 7]
    options = dict(image_size=args.image_size, batch_size=args.batch_size, training=True, cache="memory",
                   check=False)
    host = build_image_pipeline(paths, targets, augment=args.augment, mixup=args.mixup, **options)
    device = build_image_pipeline(paths, targets, augment="none", **options)
    augmentation = tf.function(batch_augmentation(args.augment, args.mixup, 0.0, seed=42))
    batches = [(images, labels) for images, labels in device.take(8)]

    def step_augmentation() -> float:
        started = time.perf_counter()
        for images, labels in batches:
            augmented, _ = augmentation(images, labels)
        augmented.numpy()
        return sum(int(images.shape[0]) for images, _ in batches) / (time.perf_counter() - started)

    runs = {"host pipeline, augmentation on host": lambda: epoch_rate(host),
            "host pipeline, augmentation on device": lambda: epoch_rate(device),
            "augmentation alone in the step (tf.function, CPU)": step_augmentation}
    for run in runs.values():
        run()  # warm-up: fills the memory caches and traces the functions
    rates = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            rates[name].append(run())
    print(f"{len(paths)} images from {args.data_dir}, image size {args.image_size}, batch {args.batch_size}, "
          f"augment {args.augment} + mixup {args.mixup}, {os.cpu_count()} CPUs, median of {args.rounds} rounds, "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    names = list(runs)
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates[names[0]])]
        print(f"{name:<52} {statistics.median(rates[name]):8.0f} images/s   "
              f"per-round ratio to host augmentation: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
