"""Prepared TFRecord shards: a dataset decoded and resized once, then read fast every epoch.

Why: decoding ChestX-ray14's 112,120 PNGs of 1024x1024 costs far more than training on them at
224 px on a GPU, and it is repeated every epoch when the set is too large to cache in memory.
`write_prepared_shards` decodes and resizes each image once and stores it in sharded TFRecord
files, the format `tf.data` reads with parallel, sequential I/O (TensorFlow's own recommendation
for datasets of 100k+ images). TensorFlow-specific by design, like the rest of the input pipeline.

A prepared directory holds:
- `manifest.json`: format, recipe, class names, task, image size, resize mode, encoding, counts
  per split, the shard list, and the table: per image `path`, `label`, `group`, `split`,
  `record_id`, `shard` and `position` (its index inside the shard);
- `<split>-00000.tfrecord`, ...: each shard holds images of one split, in `record_id` order.

Each record is a `tf.train.Example` with `record_id` (int64), `image` (bytes: JPEG, or raw uint8
`height x width x channels`), `height`, `width` and `channels`. Images whose three channels are
equal (X-rays) are stored with one channel, a third of the bytes; readers make them RGB again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_med.data.decode import RESIZE_MODES, check_images, load_image, plan_decoding, resize_image
from keras_med.data.errors import DataError, MissingColumnError
from keras_med.data.files import check_on_bad_image, write_bad_images
# The batch-level tail (cast to float32, augment, MixUp/CutMix, prefetch) is shared with the
# file pipeline so that both give the same batches from the same pixels.
from keras_med.data.pipeline import STREAM_SHUFFLE_BUFFER, finish_pipeline, fit_pixels
from keras_med.data.table import LINE_COLUMN, SPLITS, ImageTable

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "keras_med.prepared/1"
ENCODINGS = ("jpeg", "raw")
TABLE_COLUMNS = ["path", "label", "group", "split", "record_id", "shard", "position"]
AUTOTUNE = tf.data.AUTOTUNE
FEATURES = {
    "record_id": tf.io.FixedLenFeature([], tf.int64),
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
}


def write_prepared_shards(table: ImageTable, out_dir: str | os.PathLike, *, image_size: int,
                          resize: str = "resize", encoding: str = "jpeg", quality: int = 95,
                          shard_size: int = 2048, on_bad_image: str = "error",
                          report_dir: str | os.PathLike | None = None, recipe: str = "",
                          source: str = "") -> dict:
    """Decode, resize and store every image of a split table in sharded TFRecords; returns the manifest.

    Args:
        table: an `ImageTable` with a `split` column (files, or pixels in memory such as MedMNIST).
        out_dir: the prepared directory (created; must not hold shards already).
        image_size: side of the stored square images (the model's image size).
        resize: `"resize"` (stretch) or `"pad"` (keep the aspect ratio), as in training.
        encoding: `"jpeg"` (small, lossy, decoded on read) or `"raw"` (uint8 pixels, exact, larger).
        quality: JPEG quality (1-100).
        shard_size: images per shard.
        on_bad_image: `"error"` raises naming the first unreadable file; `"skip"` leaves bad files
            out and lists them in `report_dir/bad_images.csv` (default: `out_dir`).
        recipe: the recipe name, recorded in the manifest.
        source: where the data came from, recorded in the manifest.
    """
    check_on_bad_image(on_bad_image)
    if encoding not in ENCODINGS:
        raise DataError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 1 <= quality <= 100:
        raise DataError(f"quality must be in 1..100, got {quality!r}")
    if shard_size < 1:
        raise DataError(f"shard_size must be a positive number of images, got {shard_size!r}")
    if "split" not in table.frame.columns:
        raise MissingColumnError("the table has no 'split' column; split it (split_by_group) before preparing")
    out_dir = Path(out_dir)
    if out_dir.is_dir() and (any(out_dir.glob("*.tfrecord")) or (out_dir / MANIFEST).exists()):
        raise DataError(f"{out_dir} already holds prepared shards; choose another output directory or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # Shards hold one split each, so a split's pipeline reads only its own files.
    rank = table.frame["split"].map({name: index for index, name in enumerate(SPLITS)})
    order = np.argsort(rank.to_numpy(), kind="stable")
    frame = table.frame.iloc[order].reset_index(drop=True)
    pixels = None if table.pixels is None else table.pixels[order]
    records = _encoded_images(frame, pixels, image_size, resize, encoding, quality)

    shard_of = np.full(len(frame), "", dtype=object)
    position_of = np.full(len(frame), -1, dtype=np.int64)
    shards: list[dict] = []
    writer, expected = None, 0
    bad_ids: list[int] = []
    try:
        for record_id, data, shape in records.as_numpy_iterator():
            if record_id != expected:
                bad_ids += _report_gap(frame, expected, record_id, on_bad_image)
            expected = record_id + 1
            split = frame["split"].iat[record_id]
            if not shards or shards[-1]["split"] != split or shards[-1]["count"] >= shard_size:
                if writer is not None:
                    writer.close()
                number = sum(shard["split"] == split for shard in shards)
                shards.append({"file": f"{split}-{number:05d}.tfrecord", "split": split, "count": 0})
                writer = tf.io.TFRecordWriter(str(out_dir / shards[-1]["file"]))
            writer.write(_example(record_id, data, shape).SerializeToString())
            shard_of[record_id], position_of[record_id] = shards[-1]["file"], shards[-1]["count"]
            shards[-1]["count"] += 1
    finally:
        if writer is not None:
            writer.close()
    if expected != len(frame):
        bad_ids += _report_gap(frame, expected, len(frame), on_bad_image)
    undecodable = []
    if bad_ids:
        lines = frame[LINE_COLUMN].iloc[bad_ids].tolist() if LINE_COLUMN in frame.columns else None
        undecodable = check_images(frame["path"].iloc[bad_ids].tolist(), "skip", lines=lines,
                                   metadata=table.metadata).bad
        logger.warning("left out %d unreadable image(s); listed in bad_images.csv", len(bad_ids))
    # The loader's missing files too, so the prepared directory lists every image left out.
    write_bad_images(report_dir or out_dir, table.skipped + undecodable)

    kept = position_of >= 0
    written = frame.loc[kept, ["path", "label", "group", "split"]].assign(
        record_id=np.flatnonzero(kept), shard=shard_of[kept], position=position_of[kept])
    for shard in shards:
        shard["bytes"] = (out_dir / shard["file"]).stat().st_size
    manifest = {
        "format": FORMAT, "recipe": recipe, "source": str(source), "class_names": table.class_names,
        "long_names": table.long_names, "task": table.task, "image_size": image_size, "resize": resize,
        "encoding": encoding, "quality": quality if encoding == "jpeg" else None,
        "counts": {name: int((written["split"] == name).sum()) for name in SPLITS},
        "bad_images": len(table.skipped) + len(bad_ids), "shards": shards, "seconds": round(time.perf_counter() - started, 1),
        "table": {column: written[column].astype(str if column in ("path", "label", "group", "split", "shard")
                                                 else np.int64).tolist() for column in TABLE_COLUMNS},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    total = sum(shard["bytes"] for shard in shards)
    logger.info("prepared %d images at %d px (%s) into %d shards, %.1f MB, in %.1f s: %s", len(written),
                image_size, encoding, len(shards), total / 1e6, manifest["seconds"], out_dir)
    return manifest


def _encoded_images(frame: pd.DataFrame, pixels, image_size: int, resize: str, encoding: str,
                    quality: int) -> tf.data.Dataset:
    """`(record_id, bytes, shape)` per readable image, in order; unreadable files are left out."""
    ids = np.arange(len(frame), dtype=np.int64)
    if pixels is not None:
        source = tf.data.Dataset.from_tensor_slices((ids, fit_pixels(pixels, image_size, resize)))
    else:
        paths = frame["path"].astype(str).tolist()
        plan = plan_decoding(paths, image_size, resize)  # EXIF orientation and Pillow-only files, as in training
        source = tf.data.Dataset.from_tensor_slices((ids, paths)).map(
            lambda record_id, path: (record_id, load_image(path, image_size, resize, plan)),
            num_parallel_calls=AUTOTUNE)

    def encode(record_id, image):
        gray = tf.reduce_all(tf.equal(image[..., :1], image))
        stored = tf.cond(gray, lambda: image[..., :1], lambda: image)
        # Raw pixels leave the graph as a flat uint8 array; the writer stores its bytes.
        data = tf.io.encode_jpeg(stored, quality=quality) if encoding == "jpeg" else tf.reshape(stored, [-1])
        return record_id, data, tf.shape(stored, out_type=tf.int64)

    dataset = source.map(encode, num_parallel_calls=AUTOTUNE).ignore_errors()
    return dataset.prefetch(AUTOTUNE)


def _example(record_id: int, data: bytes, shape) -> tf.train.Example:
    data = data if isinstance(data, bytes) else data.tobytes()
    height, width, channels = (int(value) for value in shape)

    def integer(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "record_id": integer(int(record_id)), "height": integer(height), "width": integer(width),
        "channels": integer(channels), "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}))


def _report_gap(frame: pd.DataFrame, first: int, stop: int, on_bad_image: str) -> list[int]:
    """Records `first..stop-1` did not decode: raise naming the first (error mode) or return them."""
    missing = list(range(first, stop))
    if on_bad_image == "error":
        check_images([frame["path"].iat[missing[0]]], "error")
        raise DataError(f"{frame['path'].iat[missing[0]]}: failed to decode or resize")
    return missing


def read_manifest(prepared_dir: str | os.PathLike) -> dict:
    """The manifest of a prepared directory, checked; raises `DataError` naming what is wrong."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{prepared_dir} is not a prepared directory: it has no {MANIFEST}; "
                        "write one with `keras-med prepare --recipe NAME --data-dir DIR --out DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON: {error}") from error
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r}; expected {FORMAT!r}")
    missing = [column for column in TABLE_COLUMNS if column not in manifest.get("table", {})]
    if missing:
        raise MissingColumnError(f"{path}: the table lacks column(s) {missing}")
    for shard in manifest["shards"]:
        if not (Path(prepared_dir) / shard["file"]).is_file():
            raise DataError(f"{path}: shard {shard['file']} is missing from {prepared_dir}")
    return manifest


def load_prepared_table(prepared_dir: str | os.PathLike) -> ImageTable:
    """The prepared images as an `ImageTable` in `record_id` order, split as when they were prepared.

    The frame has `path` (the original file), `label`, `group`, `split`, `record_id`, `shard` and
    `position`; the pixels stay in the shards (`read_prepared_pixels`, `build_prepared_pipeline`).

    Args:
        prepared_dir: a directory written by `write_prepared_shards`.
    """
    manifest = read_manifest(prepared_dir)
    frame = pd.DataFrame(manifest["table"]).sort_values("record_id").reset_index(drop=True)
    logger.info("prepared set %s: %d images at %d px (%s), splits %s", prepared_dir, len(frame),
                manifest["image_size"], manifest["encoding"], manifest["counts"])
    return ImageTable(frame, manifest["class_names"], manifest["task"], dict(manifest.get("long_names") or {}),
                      group_column="group")


def attach_prepared_records(table: ImageTable, prepared_dir: str | os.PathLike) -> ImageTable:
    """Give a table read from a split file the `record_id`, `shard` and `position` of its images.

    Args:
        table: e.g. from `load_split`; rows are matched to prepared images by `path`.
        prepared_dir: the prepared directory.
    """
    prepared = load_prepared_table(prepared_dir).frame.set_index("path")[["record_id", "shard", "position"]]
    frame = table.frame.drop(columns=[c for c in ("record_id", "shard", "position") if c in table.frame])
    frame = frame.join(prepared, on="path")
    absent = frame["record_id"].isna().to_numpy()
    if absent.any():
        raise DataError(f"{int(absent.sum())} image(s) of the split are not in the prepared set {prepared_dir}, "
                        f"e.g. {frame['path'].iat[int(np.flatnonzero(absent)[0])]!r}")
    return table.with_frame(frame.astype({"record_id": np.int64, "position": np.int64}))


def sort_by_record(table: ImageTable) -> ImageTable:
    """The table in `record_id` order: the order in which the shards yield its images."""
    order = np.argsort(table.frame["record_id"].to_numpy(), kind="stable")
    return dataclasses.replace(table, frame=table.frame.iloc[order].reset_index(drop=True),
                               pixels=None if table.pixels is None else table.pixels[order])


def _records(prepared_dir: str | os.PathLike, table: ImageTable, training: bool, seed: int) -> tuple:
    """`(dataset of (position in table, image uint8), manifest)` for the table's rows, from their shards."""
    manifest = read_manifest(prepared_dir)
    if "record_id" not in table.frame.columns:
        raise MissingColumnError("the table has no 'record_id' column; load it with load_prepared_table")
    ids = table.frame["record_id"].to_numpy(dtype=np.int64)
    if not training and np.any(np.diff(ids) <= 0):
        raise DataError("the table's record_id must increase (shards are read in order); use sort_by_record")
    wanted = set(table.frame["shard"])
    files = [str(Path(prepared_dir) / shard["file"]) for shard in manifest["shards"] if shard["file"] in wanted]
    lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids), dtype=tf.int64)), default_value=-1)
    if training:
        dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        # Deterministic order: a seeded run sees the same batches every time (parallel reads still overlap).
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                                     num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        dataset = tf.data.TFRecordDataset(files)

    def parse(serialised):
        example = tf.io.parse_single_example(serialised, FEATURES)
        return lookup.lookup(example["record_id"]), example

    decode = _decoder(manifest["encoding"])
    # Rows of other splits (or left out by --max-images) are dropped before their pixels are decoded.
    dataset = (dataset.map(parse, num_parallel_calls=AUTOTUNE).filter(lambda position, example: position >= 0)
               .map(lambda position, example: (position, decode(example)), num_parallel_calls=AUTOTUNE,
                    deterministic=True))
    return dataset, manifest


def _decoder(encoding: str) -> Callable:
    def decode(example):
        if encoding == "jpeg":
            image = tf.io.decode_jpeg(example["image"], channels=3)
        else:
            shape = tf.stack([example["height"], example["width"], example["channels"]])
            image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape)
            image = tf.repeat(image, 3 // tf.cast(example["channels"], tf.int32), axis=-1)
        image.set_shape([None, None, 3])
        return image

    return decode


def _fit_size(image, stored_size: int, image_size: int, resize: str):
    return image if stored_size == image_size else resize_image(image, image_size, resize)


def read_prepared_pixels(prepared_dir: str | os.PathLike, table: ImageTable, image_size: int | None = None,
                         resize: str = "resize") -> ImageTable:
    """The table with its images read from the shards into memory (`table.pixels`, uint8).

    Args:
        prepared_dir: the prepared directory.
        table: rows with `record_id` and `shard` (from `load_prepared_table`).
        image_size: the model's image size; images stored at another size are resized.
        resize: `"resize"` or `"pad"`, for that resize.
    """
    dataset, manifest = _records(prepared_dir, table, training=True, seed=0)
    stored = int(manifest["image_size"])
    image_size = image_size or stored
    _warn_on_size(stored, image_size, prepared_dir)
    pixels = np.empty((len(table), image_size, image_size, 3), np.uint8)
    seen = np.zeros(len(table), bool)
    batches = dataset.map(lambda position, image: (position, _fit_size(image, stored, image_size, resize)),
                          num_parallel_calls=AUTOTUNE).batch(256).prefetch(AUTOTUNE)
    for positions, images in batches.as_numpy_iterator():
        pixels[positions] = images
        seen[positions] = True
    if not seen.all():
        raise DataError(f"{int((~seen).sum())} image(s) of the table were not found in the shards of {prepared_dir}")
    return ImageTable(table.frame, table.class_names, table.task, table.long_names, table.group_column, pixels)


def _warn_on_size(stored: int, image_size: int, prepared_dir) -> None:
    if stored < image_size:
        logger.warning("%s holds %d px images; upscaling them to %d px loses detail: prepare at %d px",
                       prepared_dir, stored, image_size, image_size)


def build_prepared_pipeline(prepared_dir: str | os.PathLike, table: ImageTable, *, image_size: int,
                            batch_size: int, training: bool, augment: str = "none", resize: str = "resize",
                            cache: str = "none", mixup: float = 0.0, cutmix: float = 0.0,
                            oversample: bool = False, seed: int = 42, split: str | None = None) -> tf.data.Dataset:
    """Stream `(images float32 (B, S, S, 3) in 0..255, targets float32)` batches from prepared shards.

    The same batches as `build_image_pipeline(table.paths, table.targets(), training=False, ...)`
    when not training (raw encoding: the same pixels; JPEG: within JPEG's loss), for sets too large
    to hold in memory: parallel reads of the split's shards, decode, shuffle buffer, batch, augment.

    Args:
        prepared_dir: the prepared directory.
        table: the rows to read (e.g. `table.subset("train")`), with `record_id` and `shard`;
            targets come from its labels. Not training: in `record_id` order (`sort_by_record`).
        image_size: the model's image size (stored images of another size are resized).
        batch_size: images per batch.
        training: shuffle shards and images and augment (True), or keep the order (False).
        augment: augmentation preset (training only).
        resize: `"resize"` or `"pad"`, when the stored size differs.
        cache: `"none"`, or a file path (or folder) for `Dataset.cache`, one file per split and set
            of records (`"memory"`: use `read_prepared_pixels`).
        mixup: MixUp alpha (0: off).
        cutmix: CutMix alpha (0: off).
        oversample: not available when streaming shards: raises; use class weights, or
            `read_prepared_pixels` and the in-memory pipeline.
        seed: seeds shuffling and augmentation.
        split: the split's name, part of a cache file's name (`keras_med.data.cache_files`).
    """
    if oversample:
        raise DataError("oversample is not available when streaming prepared shards; use class weights "
                        "(--class-weights) or --cache memory")
    if len(table) == 0:
        raise DataError("the table is empty; expected at least one image")
    targets = tf.constant(table.targets())
    dataset, manifest = _records(prepared_dir, table, training, seed)
    stored = int(manifest["image_size"])
    _warn_on_size(stored, image_size, prepared_dir)
    dataset = dataset.map(lambda position, image: (_fit_size(image, stored, image_size, resize),
                                                   tf.gather(targets, position)), num_parallel_calls=AUTOTUNE)
    # The filter hides the count from tf.data; stating it lets Keras know an epoch's steps.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(table)))
    if cache not in ("none", "memory"):
        # One file per split and set of records (keras_med.data.cache_files), never shared.
        from keras_med.data.cache_files import split_cache_file

        records = [f"{Path(prepared_dir).resolve()}#{record}" for record in table.frame["record_id"]]
        dataset = dataset.cache(split_cache_file(cache, records, table.targets(), image_size=image_size,
                                                 resize=resize, decode=json.dumps(manifest, sort_keys=True, default=str),
                                                 split=split))
    if training:
        dataset = dataset.shuffle(min(len(table), STREAM_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, num_parallel_calls=AUTOTUNE)
    return finish_pipeline(dataset, training, augment, mixup, cutmix, seed)


def prepared_image_source(prepared_dir: str | os.PathLike, table: ImageTable,
                          image_size: int, resize: str = "resize") -> Callable[[int], np.ndarray]:
    """`index -> image` (uint8 `(S, S, 3)`) for row `index` of `table`, read from its shard.

    For the few test images a report shows (mistakes, Grad-CAM) when the originals are not at hand.
    """
    manifest = read_manifest(prepared_dir)
    stored = int(manifest["image_size"])
    decode = _decoder(manifest["encoding"])
    shards = table.frame["shard"].tolist()
    positions = table.frame["position"].to_numpy(dtype=np.int64)

    def image(index: int) -> np.ndarray:
        serialised = next(iter(tf.data.TFRecordDataset(str(Path(prepared_dir) / shards[index]))
                               .skip(int(positions[index])).take(1)))
        picture = decode(tf.io.parse_single_example(serialised, FEATURES))
        return _fit_size(picture, stored, image_size, resize).numpy()

    return image
