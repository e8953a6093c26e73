"""What decoding by content (magic bytes) costs: the sniffing pass, and the per-image content test it avoids.

Usage:
    python benchmarks/decode_by_content.py --data-dir ../shared/data/ham10000_200x150 --image-size 64

`plan_decoding` reads the first 8 bytes of every file so that one PNG or GIF named `.jpg` does not
fail to decode. Prints, on the same files:
- the sniffing pass (`plan_decoding`): wall and CPU seconds, microseconds per file;
- a parallel decode + resize pass with the plan it chose (`jpeg`: no per-image test) and with the
  `auto` plan (a content test and a `tf.cond` per image), images/s and CPU us per image.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_med.data.decode import DecodePlan, load_image, plan_decoding
from keras_med.data.files import walk_images

logger = logging.getLogger("benchmarks.decode_by_content")


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def timed(function):
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def decode_pass(paths: list[str], image_size: int, plan: DecodePlan) -> int:
    dataset = (tf.data.Dataset.from_tensor_slices(paths)
               .map(lambda path: load_image(path, image_size, "resize", plan), num_parallel_calls=tf.data.AUTOTUNE)
               .batch(256).prefetch(tf.data.AUTOTUNE))
    return sum(int(batch.shape[0]) for batch in dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = [str(path) for path in walk_images(args.data_dir)]
    count = len(paths)
    decode_pass(paths[:256], args.image_size, DecodePlan())  # warm the page cache and TensorFlow
    sniffs = [timed(lambda: plan_decoding(paths, args.image_size)) for _ in range(args.repeats)]
    plan = sniffs[0][0]
    logger.info("%d files; plan %s", count, plan)
    logger.info("sniffing pass: median %.3f s wall, %.3f s CPU (%.1f us CPU per file)",
                np.median([s[1] for s in sniffs]), np.median([s[2] for s in sniffs]),
                1e6 * np.median([s[2] for s in sniffs]) / count)
    for name, chosen in (("chosen plan", plan), ("auto plan", DecodePlan("auto", plan.reduced_decode))):
        runs = [timed(lambda: decode_pass(paths, args.image_size, chosen)) for _ in range(args.repeats)]
        wall, cpu = np.median([r[1] for r in runs]), np.median([r[2] for r in runs])
        logger.info("decode+resize, %s (%s): %.0f images/s, %.0f us CPU per image", name, chosen.image_format,
                    count / wall, 1e6 * cpu / count)


if __name__ == "__main__":
    main()
