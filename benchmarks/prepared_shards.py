"""Prepared TFRecord shards against decoding the original files every epoch.

Usage:
    python benchmarks/prepared_shards.py --work-dir /tmp/shards_bench --make 300 --source-size 1024

Writes (or reuses) a ChestX-ray14-layout set of large grayscale PNGs, then prints images/s for, on
the same images at the model size:
- files: keras_med's streaming pipeline (`cache="none"`: read, decode PNG, resize, batch), which is
  what an epoch costs when the set does not fit in memory;
- prepare: `write_prepared_shards` (decode and resize once, encode, write), per encoding;
- shards: `build_prepared_pipeline` reading those shards (read, parse, decode JPEG or copy raw);
and the shards' size on disk. Each epoch reads the whole split without training, so the figures
are the input pipeline's ceiling.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

from keras_med.data import (build_image_pipeline, build_prepared_pipeline, load_chestxray14, load_prepared_table,
                            split_by_group, write_prepared_shards)
from keras_med.data.synthetic import write_chestxray14_demo


def epoch_rate(dataset) -> float:
    started = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in dataset)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="Where the PNGs and shards go.")
    parser.add_argument("--make", type=int, default=300, help="Synthetic images to write if none are there.")
    parser.add_argument("--source-size", type=int, default=1024, help="Side of the synthetic PNGs.")
    parser.add_argument("--image-size", type=int, default=224, help="Model image side.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="Epochs timed per pipeline (the best is printed).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    source = args.work_dir / "chestxray14"
    if not (source / "Data_Entry_2017.csv").is_file():
        write_chestxray14_demo(source, n_images=args.make, seed=0, image_size=args.source_size)
    table = split_by_group(load_chestxray14(source / "Data_Entry_2017.csv", source / "images", no_finding="keep"),
                           val_fraction=0.0, test_fraction=0.0, seed=0)
    train = table.subset("train")
    options = dict(image_size=args.image_size, batch_size=args.batch_size, training=False)
    rows = []
    files = build_image_pipeline(train.paths, train.targets(), cache="none", check=False, **options)
    files_rate = max(epoch_rate(files) for _ in range(args.epochs))
    rows.append(("files: read + decode PNG + resize, every epoch", files_rate, ""))
    for encoding in ("jpeg", "raw"):
        out = args.work_dir / f"shards_{encoding}_{args.image_size}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        manifest = write_prepared_shards(table, out, image_size=args.image_size, encoding=encoding)
        prepare_rate = len(table) / (time.perf_counter() - started)
        size = sum(shard["bytes"] for shard in manifest["shards"]) / len(table) / 1024
        rows.append((f"prepare {encoding} (once)", prepare_rate, f"{size:.1f} KiB/image"))
        part = load_prepared_table(out).subset("train")
        shards = build_prepared_pipeline(out, part, **options)
        rate = max(epoch_rate(shards) for _ in range(args.epochs))
        rows.append((f"shards {encoding}: read + parse + decode, every epoch", rate, f"{rate / files_rate:.1f}x files"))
    print(f"{len(table)} PNGs of {args.source_size}x{args.source_size} -> {args.image_size} px, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs")
    for name, rate, note in rows:
        print(f"{name:<52} {rate:8.0f} images/s  {note}")


if __name__ == "__main__":
    main()
