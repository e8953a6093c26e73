"""`keras-med prepare`: a recipe's data decoded, resized and split once, into sharded TFRecords.

    keras-med prepare --recipe chexnet --data-dir /data/ChestX-ray14 --image-size 224 --out /fast/cxr14_224
    keras-med train --recipe chexnet --prepared /fast/cxr14_224

The table comes from the recipe's own loader (so its options apply: `--no-finding`, `--label-column`,
`--views`, ...), the split is made here (by group, or the official one the loader sets, or
`--split-file`) and stored in the manifest, so every run on the shards shares it. Only the data
settings of the recipe's flags matter here.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from keras_med.command_line import CommandParser, HelpFormatter
from keras_med.config import RECIPE_OPTIONS, RecipeConfig
from keras_med.engine.command import build_parser, resolve_run_config
from keras_med.engine.spec import RecipeSpec
from keras_med.errors import ConfigError

log = logging.getLogger("keras_med")

# The settings `prepare_shards` reads (its flags): where the data is, its size, the split and its seed.
PREPARE_SETTINGS = {"data": ("data_dir", "demo", "demo_size", "image_size", "resize", "val_fraction", "test_fraction",
                             "split_file", "max_images", "on_bad_image", *RECIPE_OPTIONS),
                    "train": ("seed",)}


def build_prepare_parser(spec: RecipeSpec) -> argparse.ArgumentParser:
    """The recipe's flags that prepare reads (`PREPARE_SETTINGS`) plus the output options of `prepare`."""
    parser = build_parser(spec, CommandParser(
        prog=f"keras-med prepare --recipe {spec.name}",
        description=f"Write {spec.name}'s images as sharded TFRecords of resized images (train later with --prepared).",
        formatter_class=HelpFormatter), sections=PREPARE_SETTINGS)
    group = parser.add_argument_group("[prepare]")
    group.add_argument("--out", required=True, help="Directory for the shards and manifest.json (must not hold shards).")
    group.add_argument("--encoding", default="jpeg", choices=["jpeg", "raw"],
                       help="How images are stored: JPEG (small, decoded on read) or raw uint8 pixels (exact, larger).")
    group.add_argument("--quality", type=int, default=95, help="JPEG quality.")
    group.add_argument("--shard-size", type=int, default=2048, help="Images per shard.")
    return parser


def run_prepare(spec: RecipeSpec, argv: list[str]) -> int:
    """Parse `argv` for `spec` and write its prepared shards; returns the exit code."""
    args = build_prepare_parser(spec).parse_args(argv)
    problems = []
    if not 1 <= args.quality <= 100:
        problems.append(f"--quality: expected an integer in [1, 100], got {args.quality}")
    if args.shard_size < 1:
        problems.append(f"--shard-size: expected an integer of at least 1, got {args.shard_size}")
    if problems:
        raise ConfigError("; ".join(problems))
    config = resolve_run_config(spec, args, prepared_allowed=False)
    manifest = prepare_shards(spec, config, Path(args.out), encoding=args.encoding, quality=args.quality,
                              shard_size=args.shard_size)
    log.info("prepared %s: %s images per split in %d shards at %s; train with --prepared %s",
             spec.name, manifest["counts"], len(manifest["shards"]), args.out, args.out)
    return 0


def prepare_shards(spec: RecipeSpec, config: RecipeConfig, out: Path, *, encoding: str = "jpeg",
                   quality: int = 95, shard_size: int = 2048) -> dict:
    """Load the recipe's table, split it as training would, and write it as shards; returns the manifest.

    Args:
        spec: the recipe (its `load_table` and `write_demo`).
        config: uses the `data` section (data_dir, demo, image_size, resize, fractions, split_file,
            max_images, on_bad_image) and `train.seed`.
        out: the prepared directory.
        encoding: `"jpeg"` or `"raw"`.
        quality: JPEG quality.
        shard_size: images per shard.
    """
    from keras_med import data as kdata
    from keras_med.data.preparation import load_split_table, stage

    table = load_split_table(spec, config)
    stage("writing %d images at %d px as %s shards to %s", len(table), config.data.image_size, encoding, out)
    return kdata.write_prepared_shards(
        table, out, image_size=config.data.image_size, resize=config.data.resize, encoding=encoding,
        quality=quality, shard_size=shard_size, on_bad_image=config.data.on_bad_image, recipe=spec.name,
        source=config.data.data_dir or "demo")
