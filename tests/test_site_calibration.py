"""`keras-med calibrate`: a site's own images re-fit the guard and the sets into a new SavedModel version."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_med.cli import main
from keras_med.export.saved_model import describe_signatures
from test_export_guards import CLASSES, lesions, png, small_model
from helpers import export_with_trust


def shifted(images):
    """Another device: brighter, with a blue cast (the lesions stay lesions)."""
    return np.clip(images * 0.6 + np.array([90.0, 60.0, 140.0]), 0, 255).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_model()
    base = tmp_path_factory.mktemp("saved_models")
    export_with_trust(model, lesions(240, seed=0), lesions(120, seed=1), base, CLASSES)
    site = tmp_path_factory.mktemp("site")
    pixels = shifted(lesions(160, seed=2))
    labels = np.random.default_rng(3).integers(0, len(CLASSES), len(pixels))
    rows = ["path,label"]
    for index, (image, label) in enumerate(zip(pixels, labels)):
        (site / f"site{index:03d}.png").write_bytes(png(image))
        rows.append(f"site{index:03d}.png,{CLASSES[label]}")
    (site.parent / "site.csv").write_text("\n".join(rows) + "\n")
    return {"base": base, "site": site, "labels": site.parent / "site.csv"}


def test_a_shifted_site_goes_from_flagged_to_the_calibrated_pass_rate(exported, tmp_path, capsys):
    model_dir = exported["base"] / "skin"
    assert main(["calibrate", "--model", str(model_dir), "--images", str(exported["site"]),
                 "--labels", str(exported["labels"]), "--out", str(tmp_path / "calibration.json")]) == 0
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert report["before"]["pass_rate"] < 0.3, "the shifted images should mostly be flagged before"
    assert report["after"]["pass_rate"] == pytest.approx(0.95, abs=0.03)
    assert set(report["after"]["per_class_coverage"]) == set(CLASSES)
    assert report["after"]["coverage"] >= 0.85
    printed = capsys.readouterr().out
    assert "pass rate" in printed and "before" in printed

    # a new version, its signatures unchanged, recording the site data
    first, second = model_dir / "1", model_dir / "2"
    assert describe_signatures(second) == describe_signatures(first)
    assert (second / "saved_model.pb").read_bytes() == (first / "saved_model.pb").read_bytes()
    stored = json.loads((second / "assets.extra" / "keras_med.json").read_text())
    record = stored["site_calibration"]
    assert record["images"] == 160 and len(record["sha256"]) == 64 and record["labelled"]
    assert stored["ood"]["threshold"] > json.loads((first / "assets.extra" / "keras_med.json").read_text())["ood"]["threshold"]
    metadata = tf.saved_model.load(str(second)).signatures["metadata"]()
    assert metadata["ood_threshold"].numpy() == pytest.approx(stored["ood"]["threshold"], rel=1e-6)
    assert metadata["conformal_applies_to"].numpy() == b"answer"
    # the training kind of image still passes mostly under the old version and is still answered
    answer = tf.saved_model.load(str(first)).signatures["serving_default"](
        image_bytes=tf.constant([png(image) for image in lesions(20, seed=9)]))
    assert answer["in_distribution"].numpy().mean() >= 0.8


def test_calibrate_refuses_a_folder_without_images(exported, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    assert main(["calibrate", "--model", str(exported["base"] / "skin"), "--images", str(empty)]) == 2
    assert "expected image files" in capsys.readouterr().err
