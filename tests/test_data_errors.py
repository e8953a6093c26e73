"""Every kind of bad input raises its documented error naming the culprit; skip mode lists it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keras_med.data import (BadImageError, DataError, EmptyClassError, ImageTable, MissingColumnError,
                            MissingImageError, UnknownLabelError, UnsafePathError, balanced_class_weights,
                            build_image_pipeline, check_images, check_table_images, load_chestxray14,
                            load_ham10000, split_by_group)


@pytest.fixture
def mini_ham(tmp_path, image_writer):
    """A 3-row HAM10000 layout; returns (dir, metadata frame)."""
    frame = pd.DataFrame({"lesion_id": ["L1", "L2", "L3"], "image_id": ["I1", "I2", "I3"],
                          "dx": ["nv", "mel", "bkl"], "age": [50, 60, 70]})
    for image_id in frame["image_id"]:
        image_writer(tmp_path / "HAM10000_images_part_1" / f"{image_id}.jpg", np.zeros((32, 32, 3), np.uint8))
    return tmp_path, frame


def _write(directory, frame):
    frame.to_csv(directory / "HAM10000_metadata.csv", index=False)


def test_missing_image_names_row_and_id(mini_ham):
    directory, frame = mini_ham
    frame.loc[1, "image_id"] = "I_GONE"
    _write(directory, frame)
    with pytest.raises(MissingImageError, match=r"line 3, column 'image_id'.*I_GONE"):
        load_ham10000(directory)


def test_missing_image_skipped_and_listed(mini_ham, tmp_path_factory):
    directory, frame = mini_ham
    frame.loc[1, "image_id"] = "I_GONE"
    _write(directory, frame)
    report = tmp_path_factory.mktemp("report")
    table = load_ham10000(directory, on_bad_image="skip", report_dir=report)
    assert table.frame["image_id"].tolist() == ["I1", "I3"]
    listed = pd.read_csv(report / "bad_images.csv")
    assert len(listed) == 1 and listed["path"].iloc[0].endswith("I_GONE") and listed["line"].iloc[0] == 3
    assert listed["metadata"].iloc[0].endswith("HAM10000_metadata.csv")


def test_unknown_label_names_row(mini_ham):
    directory, frame = mini_ham
    frame.loc[2, "dx"] = "melanoma?"
    _write(directory, frame)
    with pytest.raises(UnknownLabelError, match=r"line 4, column 'dx'.*melanoma\?"):
        load_ham10000(directory)


def test_missing_column_named(mini_ham):
    directory, frame = mini_ham
    _write(directory, frame.drop(columns="lesion_id"))
    with pytest.raises(MissingColumnError, match="lesion_id"):
        load_ham10000(directory)


def test_path_escaping_the_data_directory_is_rejected(tmp_path, image_writer):
    image_writer(tmp_path / "outside.png", np.zeros((32, 32), np.uint8))
    (tmp_path / "data" / "img").mkdir(parents=True)
    pd.DataFrame({"Image Index": ["../outside.png"], "Finding Labels": ["Nodule"], "Patient ID": [1]}).to_csv(
        tmp_path / "data" / "meta.csv", index=False)
    with pytest.raises(UnsafePathError, match=r"line 2.*'\.\./outside\.png' leaves the data directory"):
        load_chestxray14(tmp_path / "data" / "meta.csv", tmp_path / "data" / "img")


@pytest.fixture
def mixed_files(tmp_path, image_writer):
    """Two good images, one truncated JPEG, one text file named .png, one missing path."""
    good = [str(image_writer(tmp_path / f"good{i}.jpg", np.full((32, 32, 3), 99, np.uint8))) for i in range(2)]
    whole = image_writer(tmp_path / "whole.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:600])
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    return good, [str(truncated), str(not_image), str(tmp_path / "gone.jpg")]


def test_bad_image_raises_naming_the_file(mixed_files):
    good, bad = mixed_files
    with pytest.raises(BadImageError, match="truncated.jpg.*3 bad image"):
        check_images(good + bad)
    with pytest.raises(BadImageError, match="truncated.jpg"):
        build_image_pipeline(good + bad, np.zeros((5, 1), np.float32), image_size=16, batch_size=2, training=False)
    with pytest.raises(MissingImageError, match="gone.jpg"):
        check_images(good + bad[2:])


def test_skip_mode_counts_and_lists_exactly_the_bad_files(mixed_files, tmp_path_factory):
    good, bad = mixed_files
    report = tmp_path_factory.mktemp("report")
    paths = [good[0], bad[0], good[1], bad[1], bad[2]]
    frame = pd.DataFrame({"path": paths, "label": ["a", "b", "a", "b", "a"], "group": list("vwxyz")})
    table = check_table_images(ImageTable(frame, ["a", "b"], "binary"), on_bad_image="skip",
                               report_dir=report, image_size=16)
    assert table.paths == good and table.pixels.shape == (2, 16, 16, 3)
    listed = pd.read_csv(report / "bad_images.csv")
    assert sorted(listed["path"]) == sorted(bad)
    assert listed.set_index("path").loc[bad[2], "reason"].startswith("missing")


def test_class_left_empty_by_split_raises():
    frame = pd.DataFrame({"path": [f"/x/{i}" for i in range(20)], "group": [f"g{i}" for i in range(20)],
                          "label": ["common"] * 19 + ["rare"]})
    table = ImageTable(frame, ["common", "rare"], "binary")
    with pytest.raises(EmptyClassError, match="'rare'"):
        split_by_group(table, 0.2, 0.2, seed=0)


def test_bad_arguments_are_named():
    with pytest.raises(DataError, match="val_fraction"):
        split_by_group(ImageTable(pd.DataFrame({"path": ["a"], "label": ["x"], "group": ["g"]}), ["x", "y"],
                                  "binary"), val_fraction=1.5)
    with pytest.raises(DataError, match="augment must be one of"):
        build_image_pipeline(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 1)), image_size=8, batch_size=2,
                             training=True, augment="sepia")
    with pytest.raises(DataError, match=r"class index\(es\) \[2\]"):
        balanced_class_weights(np.eye(3)[[0, 1, 1]])
