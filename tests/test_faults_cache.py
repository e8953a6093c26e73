"""Fault injection, `--cache FILE`: one cache file per split and per set of inputs, its folder created first.

A shared cache file made validation read the training images and a later run on another dataset
train on the first one's pixels; these tests build real streaming pipelines on tiny PNGs and read
what comes out of them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from keras_med.data.cache_files import cache_key, prepare_cache_location, split_cache_file
from keras_med.data.pipeline import build_image_pipeline
from keras_med.errors import ConfigError

SIZE = 16


def _images(folder, values):
    """One flat grey PNG per value (its pixel value tells later which file a batch came from)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, value in enumerate(values):
        path = folder / f"{index}.png"
        Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _pixel_values(dataset) -> list[int]:
    return sorted(int(round(float(images[i].numpy().mean()))) for images, _ in dataset for i in range(len(images)))


def _pipeline(paths, cache, split=None):
    return build_image_pipeline(paths, np.zeros((len(paths), 1)), image_size=SIZE, batch_size=4, training=False,
                                cache=cache, split=split)


def test_each_split_reads_its_own_images_through_one_cache_flag(tmp_path):
    train = _images(tmp_path / "data" / "train", [10, 20, 30, 40, 50])
    val = _images(tmp_path / "data" / "val", [200, 210])
    cache = str(tmp_path / "not" / "yet" / "there" / "ham")  # a folder that does not exist yet is created
    first = _pixel_values(_pipeline(train, cache, "train"))
    second = _pixel_values(_pipeline(val, cache, "val"))
    assert first == [10, 20, 30, 40, 50] and second == [200, 210]
    index_files = sorted(path.name for path in (tmp_path / "not" / "yet" / "there").glob("*.index"))
    assert len(index_files) == 2
    assert index_files[0].startswith("ham-train-") and index_files[1].startswith("ham-val-")
    # Read again from the cache files: still each split's own pixels.
    assert _pixel_values(_pipeline(val, cache, "val")) == [200, 210]


def test_another_dataset_with_the_same_cache_flag_gets_another_file(tmp_path):
    cache = str(tmp_path / "cache" / "c")
    first = _images(tmp_path / "a", [60, 70, 80])
    assert _pixel_values(_pipeline(first, cache)) == [60, 70, 80]
    other = _images(tmp_path / "b", [90, 100, 110])
    assert _pixel_values(_pipeline(other, cache)) == [90, 100, 110]
    assert len(list((tmp_path / "cache").glob("*.index"))) == 2


def test_key_changes_with_every_input_it_depends_on(tmp_path):
    paths = _images(tmp_path, [1, 2])
    targets = np.array([[0.0], [1.0]])
    base = cache_key(paths, targets, 64, "resize", "plan")
    assert cache_key(list(paths), targets.copy(), 64, "resize", "plan") == base  # the same inputs reuse it
    assert cache_key(paths, targets, 32, "resize", "plan") != base
    assert cache_key(paths, targets, 64, "pad", "plan") != base
    assert cache_key(paths, targets, 64, "resize", "other plan") != base
    assert cache_key(paths, targets[::-1], 64, "resize", "plan") != base
    assert cache_key(paths[::-1], targets, 64, "resize", "plan") != base
    # A file rewritten in place (same name) is another input.
    os.utime(paths[0], ns=(1, 1))
    assert cache_key(paths, targets, 64, "resize", "plan") != base


def test_cache_into_an_existing_folder_and_split_names(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    name = split_cache_file(str(folder), ["x.png"], np.zeros((1, 1)), image_size=8, resize="resize", split="val")
    assert os.path.dirname(name) == str(folder) and os.path.basename(name).startswith("cache-val-")
    assert prepare_cache_location("memory") is None and prepare_cache_location("none") is None


def test_cache_folder_that_cannot_be_created_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    paths = _images(tmp_path / "imgs", [5])
    with pytest.raises(ConfigError, match=f"--cache {blocker}/sub/c: cannot create or write the folder"):
        _pipeline(paths, str(blocker / "sub" / "c"))
