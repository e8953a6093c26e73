"""Input pipeline speed: keras_med's tf.data pipeline against decode-only and a plain PIL loop.

Usage:
    python benchmarks/input_pipeline.py --data-dir ../shared/data/ham10000_200x150 --image-size 64

Prints images/s for, on the same files:
- decode-only: tf.data parallel `read_file` + `decode_jpeg`, no resize (the target's baseline);
- PIL loop: open, convert to RGB, resize, to numpy, one file after another;
- the pipeline's first epoch (decode, resize, cache, shuffle, batch, prefetch) without and with
  the dermoscopy augmentation, in memory-cache and streaming forms;
and the ratios of the pipeline to the first two.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_med.data import build_image_pipeline
from keras_med.data.files import IMAGE_SUFFIXES

logger = logging.getLogger("benchmarks.input_pipeline")


def list_images(data_dir: Path, limit: int) -> list[str]:
    paths = sorted(str(path) for path in data_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {data_dir}")
    return paths[:limit] if limit else paths


class Meter:
    """Wall-clock and CPU (user + system, all threads) seconds of a block of work.

    On a shared machine other processes steal wall time; CPU seconds per image measure the work
    itself, so both are reported.
    """

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def decode_only(paths: list[str]) -> int:
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3), num_parallel_calls=tf.data.AUTOTUNE)
    # reduce runs in C++, so the baseline pays no Python cost per image.
    return int(dataset.reduce(np.int64(0), lambda total, image: total + 1))


def pil_loop(paths: list[str], image_size: int) -> int:
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((image_size, image_size), Image.BILINEAR), dtype=np.float32)
    return len(paths)


def pipeline_epoch(paths: list[str], image_size: int, batch_size: int, augment: str, cache: str) -> int:
    targets = np.eye(2, dtype=np.float32)[np.arange(len(paths)) % 2]
    dataset = build_image_pipeline(paths, targets, image_size=image_size, batch_size=batch_size, training=True,
                                   augment=augment, cache=cache, check=False)
    return sum(int(images.shape[0]) for images, _ in dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path, help="Folder with JPEGs (searched recursively).")
    parser.add_argument("--image-size", type=int, default=128, help="Model image side in pixels.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="Use only the first N images (0: all).")
    parser.add_argument("--pil-limit", type=int, default=1500, help="Images for the (slow) PIL loop.")
    parser.add_argument("--rounds", type=int, default=3, help="Repeat every measurement this many times.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = list_images(args.data_dir, args.limit)
    with Image.open(paths[0]) as first:
        source_size = first.size
    print(f"{len(paths)} images of {source_size[0]}x{source_size[1]} from {args.data_dir}, "
          f"image size {args.image_size}, {os.cpu_count()} CPUs")
    runs = {
        "decode-only (read_file + decode_jpeg, parallel)": lambda: decode_only(paths),
        f"PIL loop (open, RGB, resize; {min(len(paths), args.pil_limit)} images)":
            lambda: pil_loop(paths[:args.pil_limit], args.image_size),
    }
    for augment, cache in (("none", "memory"), ("dermoscopy", "memory"), ("none", "none")):
        runs[f"pipeline first epoch, augment={augment}, cache={cache}"] = (
            lambda a=augment, c=cache: pipeline_epoch(paths, args.image_size, args.batch_size, a, c))
    # Training reads epochs 2..N from the memory cache: time that steady state too, on a dataset
    # built (and traced) once outside the timed rounds.
    cached = build_image_pipeline(paths, np.eye(2, dtype=np.float32)[np.arange(len(paths)) % 2],
                                  image_size=args.image_size, batch_size=args.batch_size, training=True,
                                  augment="none", cache="memory", check=False)
    sum(int(images.shape[0]) for images, _ in cached)
    runs["pipeline later epochs (memory cache), augment=none"] = (
        lambda: sum(int(images.shape[0]) for images, _ in cached))
    wall, cpu = {name: [] for name in runs}, {name: [] for name in runs}
    # Rounds run every method back to back; ratios are taken within a round, then the median.
    for _ in range(args.rounds):
        for name, run in runs.items():
            with Meter() as meter:
                count = run()
            wall[name].append(count / meter.wall)
            cpu[name].append(count / max(meter.cpu, 1e-9))
    names = list(runs)
    print(f"median of {args.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'':<62} {'images/s':>9} {'img/CPU-s':>9}   ratios (wall; CPU) to decode-only and PIL")
    for name in names:
        ratios = ""
        if name.startswith("pipeline"):
            ratios = "   ".join(
                f"{np.median(np.divide(wall[name], wall[base])):.2f}x; {np.median(np.divide(cpu[name], cpu[base])):.2f}x {label}"
                for base, label in ((names[0], "decode"), (names[1], "PIL")))
        print(f"{name:<62} {np.median(wall[name]):9.0f} {np.median(cpu[name]):9.0f}   {ratios}")


if __name__ == "__main__":
    main()
