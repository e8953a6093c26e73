"""Prepared TFRecord shards: the same batches as the files, a complete manifest, bad files named."""

import json

import numpy as np
import pandas as pd
import pytest

from keras_med.data import (DataError, ImageTable, build_image_pipeline, check_table_images, load_chestxray14,
                            load_prepared_table, prepared_image_source, read_prepared_pixels, save_split,
                            split_by_group, write_prepared_shards)
from keras_med.data.errors import BadImageError, MissingColumnError
from keras_med.data.synthetic import write_chestxray14_demo
from keras_med.data.tfrecords import attach_prepared_records, build_prepared_pipeline, read_manifest

SIZE = 32


@pytest.fixture(scope="module")
def split_table(tmp_path_factory):
    root = write_chestxray14_demo(tmp_path_factory.mktemp("cxr"), n_images=48, seed=1, image_size=40)
    table = load_chestxray14(root / "Data_Entry_2017.csv", root / "images", no_finding="keep")
    return split_by_group(table, val_fraction=0.2, test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def prepared(split_table, tmp_path_factory):
    """The same table prepared raw (exact pixels) and as JPEG, 7 images per shard."""
    root = tmp_path_factory.mktemp("prepared")
    return {encoding: (root / encoding, write_prepared_shards(split_table, root / encoding, image_size=SIZE,
                                                              encoding=encoding, shard_size=7))
            for encoding in ("raw", "jpeg")}


def batches(dataset):
    return [(images.numpy(), targets.numpy()) for images, targets in dataset]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_raw_shards_give_the_same_batches_as_the_files(prepared, split):
    directory, _ = prepared["raw"]
    part = load_prepared_table(directory).subset(split)
    from_files = batches(build_image_pipeline(part.paths, part.targets(), image_size=SIZE, batch_size=5,
                                              training=False, cache="none"))
    from_shards = batches(build_prepared_pipeline(directory, part, image_size=SIZE, batch_size=5, training=False))
    assert len(from_files) == len(from_shards) > 0
    for (files_images, files_targets), (shard_images, shard_targets) in zip(from_files, from_shards):
        np.testing.assert_array_equal(shard_images, files_images)
        np.testing.assert_array_equal(shard_targets, files_targets)


def test_jpeg_shards_match_the_files_within_jpeg_loss(prepared):
    directory, _ = prepared["jpeg"]
    part = load_prepared_table(directory).subset("train")
    from_files = batches(build_image_pipeline(part.paths, part.targets(), image_size=SIZE, batch_size=8,
                                              training=False))
    from_shards = batches(build_prepared_pipeline(directory, part, image_size=SIZE, batch_size=8, training=False))
    for (files_images, files_targets), (shard_images, shard_targets) in zip(from_files, from_shards):
        np.testing.assert_array_equal(shard_targets, files_targets)
        assert np.abs(shard_images - files_images).mean() < 3.0


def test_raw_shards_are_smaller_for_gray_images_and_jpeg_smaller_still(prepared):
    raw_bytes = sum(shard["bytes"] for shard in prepared["raw"][1]["shards"])
    jpeg_bytes = sum(shard["bytes"] for shard in prepared["jpeg"][1]["shards"])
    # Gray X-rays are stored with one channel: about SIZE * SIZE bytes per image, not 3x that.
    assert raw_bytes < 1.3 * SIZE * SIZE * 48
    assert jpeg_bytes < raw_bytes


def test_manifest_describes_the_set(prepared, split_table):
    directory, manifest = prepared["raw"]
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["class_names"] == split_table.class_names and manifest["task"] == "multilabel"
    assert manifest["image_size"] == SIZE and manifest["encoding"] == "raw"
    assert manifest["counts"] == split_table.frame["split"].value_counts().to_dict()
    assert sum(shard["count"] for shard in manifest["shards"]) == len(split_table)
    assert max(shard["count"] for shard in manifest["shards"]) <= 7
    table = pd.DataFrame(manifest["table"])
    assert {"path", "label", "group", "split"} <= set(table.columns)
    # Each shard holds one split, so a split's pipeline reads only its files.
    assert (table.groupby("shard")["split"].nunique() == 1).all()
    merged = table.merge(split_table.frame[["path", "label", "split"]], on="path", suffixes=("", "_source"))
    assert len(merged) == len(split_table)
    assert (merged["label"] == merged["label_source"]).all() and (merged["split"] == merged["split_source"]).all()


def test_memory_read_matches_decoding_the_files(prepared, split_table):
    directory, _ = prepared["raw"]
    table = read_prepared_pixels(directory, load_prepared_table(directory))
    decoded = check_table_images(ImageTable(table.frame[["path", "label", "group"]], table.class_names,
                                            table.task), image_size=SIZE)
    np.testing.assert_array_equal(table.pixels, decoded.pixels)
    image = prepared_image_source(directory, table, SIZE)
    np.testing.assert_array_equal(image(len(table) - 1), table.pixels[-1])


def test_training_stream_sees_every_image_once_per_epoch(prepared):
    directory, _ = prepared["jpeg"]
    part = load_prepared_table(directory).subset("train")
    dataset = build_prepared_pipeline(directory, part, image_size=SIZE, batch_size=4, training=True, augment="xray")
    targets = np.concatenate([targets for _, targets in batches(dataset)])
    assert len(targets) == len(part)
    np.testing.assert_array_equal(np.sort(targets.sum(axis=0)), np.sort(part.targets().sum(axis=0)))
    with pytest.raises(DataError, match="oversample"):
        build_prepared_pipeline(directory, part, image_size=SIZE, batch_size=4, training=True, oversample=True)


def test_split_file_rows_find_their_records(prepared, tmp_path):
    directory, _ = prepared["raw"]
    table = load_prepared_table(directory)
    save_split(table, tmp_path / "split.csv")
    from keras_med.data import load_split

    again = attach_prepared_records(load_split(tmp_path / "split.csv", table.class_names, table.task), directory)
    assert again.frame.set_index("path")["record_id"].to_dict() == table.frame.set_index("path")["record_id"].to_dict()


def test_bad_images_are_named_or_skipped(split_table, tmp_path):
    broken = split_table.frame["path"].iloc[3]
    copy = tmp_path / "broken.png"
    copy.write_bytes(b"not a png at all")
    table = split_table.with_frame(split_table.frame.assign(path=split_table.frame["path"].where(
        split_table.frame["path"] != broken, str(copy))))
    with pytest.raises(BadImageError, match="broken.png"):
        write_prepared_shards(table, tmp_path / "strict", image_size=SIZE)
    manifest = write_prepared_shards(table, tmp_path / "lenient", image_size=SIZE, on_bad_image="skip")
    assert manifest["bad_images"] == 1 and sum(manifest["counts"].values()) == len(table) - 1
    assert "broken.png" in (tmp_path / "lenient" / "bad_images.csv").read_text()
    assert str(copy) not in manifest["table"]["path"]


def test_bad_arguments_and_directories_are_refused(split_table, prepared, tmp_path):
    with pytest.raises(DataError, match="already holds prepared shards"):
        write_prepared_shards(split_table, prepared["raw"][0], image_size=SIZE)
    with pytest.raises(DataError, match="encoding"):
        write_prepared_shards(split_table, tmp_path / "x", image_size=SIZE, encoding="png")
    unsplit = split_table.with_frame(split_table.frame.drop(columns="split"))
    with pytest.raises(MissingColumnError, match="split"):
        write_prepared_shards(unsplit, tmp_path / "y", image_size=SIZE)
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path)


def test_pixel_tables_such_as_medmnist_can_be_prepared(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(12, 28, 28, 1), dtype=np.uint8)
    frame = pd.DataFrame({"path": [f"x.npz#{i}" for i in range(12)], "label": ["a", "b"] * 6,
                          "group": [str(i) for i in range(12)], "split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2})
    table = ImageTable(frame, ["a", "b"], "binary", pixels=pixels)
    write_prepared_shards(table, tmp_path / "p", image_size=28, encoding="raw")
    loaded = read_prepared_pixels(tmp_path / "p", load_prepared_table(tmp_path / "p"))
    np.testing.assert_array_equal(loaded.pixels, np.repeat(pixels, 3, axis=-1))
