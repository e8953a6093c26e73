"""Fault injection on the data side (issue 10, items 9-14): each bad input behaves as documented.

docs/failure_behaviour.md ("Bad images and data") says what a user sees for each case below.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from keras_med.config import RecipeConfig
from keras_med.data import (BadImageError, EmptyClassError, ImageTable, MissingImageError, UnsafePathError,
                            build_image_pipeline, check_images, check_split, check_table_images, load_chestxray14,
                            load_ham10000, load_image_folder, save_split, split_by_group)
from keras_med.data.decode import plan_decoding
from keras_med.data.synthetic import write_chestxray14_demo
from keras_med.engine.command import main
from keras_med.evaluation import evaluate_run
from keras_med.evaluation.metrics import compute_metrics
from keras_med.recipes import chexnet, ham10000


def ham_layout(directory, image_writer, lesions, image_ids=None, dx=None):
    """A HAM10000 layout with one 32 px JPEG per row; returns the metadata frame (also written)."""
    image_ids = image_ids or [f"ISIC_{index:07d}" for index in range(len(lesions))]
    dx = dx or ["nv"] * len(lesions)
    frame = pd.DataFrame({"lesion_id": lesions, "image_id": image_ids, "dx": dx})
    for index, image_id in enumerate(image_ids):
        image_writer(directory / "images" / f"{image_id}.jpg", np.full((32, 32, 3), 10 * index, np.uint8))
    frame.to_csv(directory / "HAM10000_metadata.csv", index=False)
    return frame


# --- item 9: --on-bad-image skip honoured for missing images, with metadata line numbers ----------

def test_ham10000_recipe_skips_missing_and_undecodable_images_naming_their_metadata_lines(tmp_path, image_writer):
    data_dir, run_dir = tmp_path / "ham", tmp_path / "run"
    frame = ham_layout(data_dir, image_writer, [f"L{i}" for i in range(6)])
    (data_dir / "images" / f"{frame['image_id'][1]}.jpg").unlink()           # CSV line 3: missing
    (data_dir / "images" / f"{frame['image_id'][4]}.jpg").write_bytes(b"\xff\xd8\xff truncated")  # line 6
    config = RecipeConfig.from_dict({"data": {"on_bad_image": "skip"}}, base=ham10000.SPEC.defaults)

    table = ham10000.load_table(data_dir, config)
    assert len(table) == 5 and [row["line"] for row in table.skipped] == [3]
    with pytest.raises(BadImageError, match=r"ISIC_0000004.jpg \(.*HAM10000_metadata.csv line 6\)"):
        check_table_images(table, "error")
    checked = check_table_images(table, "skip", report_dir=run_dir, image_size=16)

    assert len(checked) == 4 and checked.pixels.shape == (4, 16, 16, 3)
    listed = pd.read_csv(run_dir / "bad_images.csv")
    assert listed["line"].tolist() == [3, 6]
    assert listed["reason"].str.split(":").str[0].tolist() == ["missing", "unreadable or truncated image"]
    assert listed["metadata"].str.endswith("HAM10000_metadata.csv").all()
    # the same line numbers the error mode names
    config_error = RecipeConfig.from_dict({"data": {"on_bad_image": "error"}}, base=ham10000.SPEC.defaults)
    with pytest.raises(MissingImageError, match=r"HAM10000_metadata.csv line 3, column 'image_id'"):
        ham10000.load_table(data_dir, config_error)

    # evaluation picks the list up: metrics.json and the report say how many and where
    y_true = np.eye(7, dtype=np.float32)[[0, 1, 2, 3, 4, 5, 6, 0]]
    metrics = evaluate_run(run_dir, class_names=table.class_names, task="multiclass",
                           y_true_test=y_true, y_prob_test=0.6 * y_true + 0.4 / 7, n_bootstrap=0, explain=0)
    assert metrics["bad_images"] == {"count": 2, "file": "bad_images.csv",
                                     "reasons": {"missing": 1, "unreadable or truncated image": 1}}
    assert json.loads((run_dir / "metrics.json").read_text())["bad_images"]["count"] == 2
    assert "2 image(s) were skipped as bad" in (run_dir / "report.md").read_text()


def test_rewriting_the_list_never_duplicates_a_row(tmp_path, image_writer):
    data_dir, report = tmp_path / "ham", tmp_path / "report"
    frame = ham_layout(data_dir, image_writer, ["L0", "L1", "L2"])
    (data_dir / "images" / f"{frame['image_id'][2]}.jpg").unlink()
    table = load_ham10000(data_dir, on_bad_image="skip", report_dir=report)
    for _ in range(2):  # the loader wrote it; each check (a resumed run) rewrites the whole list
        check_table_images(table, "skip", report_dir=report)
    assert pd.read_csv(report / "bad_images.csv")["line"].tolist() == [4]


# --- item 10: decode by content, not by file name ----------------------------------------------

def test_png_and_gif_named_jpg_decode_in_an_all_jpg_folder(tmp_path, image_writer):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    paths = [image_writer(tmp_path / "a.jpg", pixels[0])]
    for name, fmt, image in (("b.jpg", "PNG", pixels[1]), ("c.jpg", "GIF", pixels[2])):
        Image.fromarray(image).save(tmp_path / name, format=fmt)
        paths.append(tmp_path / name)
    paths = [str(path) for path in paths]
    assert plan_decoding(paths, 24).image_format == "auto"
    assert plan_decoding(paths[:1], 24).image_format == "jpeg"

    decoded = check_images(paths, "error", image_size=24).pixels
    assert decoded.shape == (3, 24, 24, 3)
    np.testing.assert_array_equal(decoded[1], pixels[1])                 # PNG: lossless, exact
    gif = np.asarray(Image.open(paths[2]).convert("RGB"))                # GIF: palette, as PIL reads it
    assert np.abs(decoded[2].astype(int) - gif).max() <= 1
    streamed = next(iter(build_image_pipeline(paths, np.zeros((3, 1)), image_size=24, batch_size=3,
                                              training=False, cache="none")))[0].numpy()
    np.testing.assert_array_equal(streamed, decoded.astype(np.float32))


# --- item 11: blank group ids -------------------------------------------------------------------

def test_blank_lesion_ids_are_each_their_own_group_with_a_warning(tmp_path, image_writer, caplog):
    lesions = ["L1", "", "  ", "L1", "", "L2"]
    ham_layout(tmp_path, image_writer, lesions)
    with caplog.at_level(logging.WARNING, logger="keras_med"):
        table = load_ham10000(tmp_path)
    groups = table.frame["group"].tolist()
    assert groups[0] == groups[3] == "L1" and groups[5] == "L2"
    blank = [groups[i] for i in (1, 2, 4)]
    assert len(set(blank)) == 3 and not set(blank) & {"", "L1", "L2"}
    assert table.frame["group"].nunique() == 5
    assert "3 row(s) have a blank 'lesion_id'" in caplog.text and "line 3" in caplog.text


def test_blank_patient_ids_in_parquet_are_not_merged(tmp_path, image_writer):
    for index in range(4):
        image_writer(tmp_path / "img" / f"{index}.png", np.zeros((16, 16), np.uint8))
    pd.DataFrame({"Image Index": [f"{i}.png" for i in range(4)], "Finding Labels": ["Nodule"] * 4,
                  "Patient ID": ["7", None, None, "7"]}).to_parquet(tmp_path / "meta.parquet")
    table = load_chestxray14(tmp_path / "meta.parquet", tmp_path / "img")
    assert table.frame["group"].nunique() == 3 and table.frame["group"][0] == table.frame["group"][3] == "7"


# --- item 12: symlinks followed inside the data directory, escapes refused ---------------------

def test_symlinked_image_folder_and_file_are_followed(tmp_path, image_writer):
    elsewhere = tmp_path / "storage"
    for name in ("ISIC_0", "ISIC_1"):
        image_writer(elsewhere / "part1" / f"{name}.jpg", np.zeros((16, 16, 3), np.uint8))
    image_writer(elsewhere / "single" / "ISIC_2.jpg", np.zeros((16, 16, 3), np.uint8))
    data_dir = tmp_path / "ham"
    data_dir.mkdir()
    os.symlink(elsewhere / "part1", data_dir / "HAM10000_images_part_1")
    os.symlink(elsewhere / "single" / "ISIC_2.jpg", data_dir / "ISIC_2.jpg")
    os.symlink(data_dir, data_dir / "HAM10000_images_part_1" / "loop")   # a cycle must not hang the search
    pd.DataFrame({"lesion_id": ["L0", "L1", "L2"], "image_id": ["ISIC_0", "ISIC_1", "ISIC_2"],
                  "dx": ["nv", "mel", "bkl"]}).to_csv(data_dir / "HAM10000_metadata.csv", index=False)

    table = load_ham10000(data_dir)
    assert [os.path.realpath(path) for path in table.paths] == [
        os.path.realpath(elsewhere / folder / f"ISIC_{index}.jpg")
        for index, folder in enumerate(["part1", "part1", "single"])]
    assert all(path.startswith(str(data_dir)) for path in table.paths)  # named through the link the user made
    assert check_table_images(table).paths == table.paths

    folders = tmp_path / "folders"
    (folders / "NORMAL").mkdir(parents=True)
    image_writer(folders / "NORMAL" / "n.png", np.zeros((16, 16), np.uint8))
    os.symlink(elsewhere / "part1", folders / "PNEUMONIA")            # a class folder that is a link
    # sub-folders of a class folder are read too: through part1/loop the linked ISIC_2.jpg is found
    # once, and the loop back to part1 is not searched again
    table = load_image_folder(folders)
    assert sorted(table.frame["label"]) == ["NORMAL", "PNEUMONIA", "PNEUMONIA", "PNEUMONIA"]
    assert sorted(os.path.basename(path) for path in table.paths) == ["ISIC_0.jpg", "ISIC_1.jpg", "ISIC_2.jpg", "n.png"]


@pytest.mark.parametrize("reference", ["../outside.png", "img/../../outside.png", "{absolute}"])
def test_metadata_path_leaving_the_data_directory_is_refused(tmp_path, image_writer, reference):
    outside = image_writer(tmp_path / "outside.png", np.zeros((16, 16), np.uint8))
    data_dir = tmp_path / "data"
    image_writer(data_dir / "img" / "inside.png", np.zeros((16, 16), np.uint8))
    reference = reference.format(absolute=outside)
    pd.DataFrame({"Image Index": ["img/inside.png", reference], "Finding Labels": ["Nodule", "Mass"],
                  "Patient ID": [1, 2]}).to_csv(data_dir / "meta.csv", index=False)
    with pytest.raises(UnsafePathError, match=r"meta.csv line 3, column 'Image Index'.*leaves the data directory"):
        load_chestxray14(data_dir / "meta.csv", data_dir)


# --- item 13: a multilabel label missing from val/test: warning, undefined, training goes on -----

@pytest.mark.slow
def test_multilabel_label_missing_from_val_and_test_trains_and_reports_undefined(tmp_path, caplog):
    data_dir = write_chestxray14_demo(tmp_path / "cxr", n_images=90, seed=1, image_size=32)
    metadata = pd.read_csv(data_dir / "Data_Entry_2017.csv")
    labels = metadata["Finding Labels"].str.replace(r"\|?Hernia", "", regex=True).replace("", "No Finding")
    table = chexnet.load_table(data_dir, RecipeConfig.from_dict({"data": {"no_finding": "keep"}},
                                                                base=chexnet.SPEC.defaults))
    split = split_by_group(table.with_frame(table.frame.assign(label="")), 0.2, 0.2, seed=0).frame["split"]
    patient = metadata["Patient ID"][split.to_numpy() == "train"].iloc[0]
    hernia = metadata["Patient ID"] == patient
    metadata["Finding Labels"] = labels.where(~hernia, "Hernia")   # Hernia: one training patient only
    metadata.to_csv(data_dir / "Data_Entry_2017.csv", index=False)
    table = chexnet.load_table(data_dir, RecipeConfig.from_dict({"data": {"no_finding": "keep"}},
                                                                base=chexnet.SPEC.defaults))
    split_file = save_split(table.with_frame(table.frame.assign(split=split)), tmp_path / "split.csv")

    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="keras_med"):
        code = main(chexnet.SPEC, [
            "--data-dir", str(data_dir), "--no-finding", "keep", "--split-file", str(split_file),
            "--model", "custom_cnn", "--weights", "none", "--plan", "scratch", "--image-size", "32",
            "--batch-size", "16", "--epochs", "2", "--cache", "memory", "--bootstrap", "20", "--explain", "0",
            "--no-export", "--output-dir", str(tmp_path), "--run-dir", str(run_dir)])
    assert code == 0
    warned = [line for line in caplog.text.splitlines() if "'Hernia' (" in line]
    assert any("split 'val'" in line for line in warned) and any("split 'test'" in line for line in warned)
    assert "Hernia: no positive test image" in caplog.text

    metrics = json.loads((run_dir / "metrics.json").read_text())
    hernia_entry = metrics["per_class"]["Hernia"]
    assert hernia_entry["undefined"] == "no positive test image"
    assert all(hernia_entry[key] is None for key in ("auc", "auc_ci95", "pr_auc", "precision", "recall", "f1"))
    assert hernia_entry["specificity_at_threshold"] is not None
    assert "Hernia" in metrics["undefined_labels"]["test"] and "Hernia" in metrics["undefined_labels"]["val"]
    defined = [entry["auc"] for name, entry in metrics["per_class"].items() if name != "Hernia"]
    assert metrics["mean_auc"]["value"] == pytest.approx(np.mean([auc for auc in defined if auc is not None]))
    report = (run_dir / "report.md").read_text()
    hernia_row = next(line for line in report.splitlines() if line.startswith("| Hernia |"))
    assert hernia_row.count("undefined") >= 6 and "| 0.000 |" not in hernia_row
    assert "undefined (no positive test image)" in (run_dir / "chexnet_auroc.md").read_text()
    # the data table counts positives per label, so the report shows which split lacks Hernia
    header = next(line for line in report.splitlines() if line.startswith("| split |"))
    assert "Hernia" in header and "(none)" in header and "|Hernia" not in header


def test_undefined_label_metrics_are_null_not_zero():
    y_true = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    y_prob = np.array([[0.9, 0.8], [0.2, 0.7], [0.8, 0.1], [0.3, 0.2]], np.float32)
    metrics = compute_metrics("multilabel", y_true, y_prob, ["a", "b"], n_bootstrap=20)
    entry = metrics["per_class"]["b"]
    assert entry["undefined"] == "no positive test image"
    assert entry["precision"] is None and entry["f1"] is None and entry["auc"] is None
    assert entry["specificity_at_threshold"] == 0.5
    assert metrics["mean_auc"]["value"] == metrics["per_class"]["a"]["auc"] == 1.0


def test_multiclass_class_missing_from_train_stays_an_error():
    frame = pd.DataFrame({"path": [f"/x/{i}" for i in range(9)], "group": [f"g{i}" for i in range(9)],
                          "label": ["a", "b", "c"] * 3, "split": ["train"] * 3 + ["val"] * 3 + ["test"] * 3})
    frame.loc[[2], "label"] = "a"          # class c only in val and test
    with pytest.raises(EmptyClassError, match=r"split 'train'.*\['c'\]"):
        check_split(ImageTable(frame, ["a", "b", "c"], "multiclass"))


# --- item 14: EmptyClassError says which fix can work -------------------------------------------

def test_empty_class_error_names_too_few_groups_for_a_single_group_class():
    frame = pd.DataFrame({"path": [f"/x/{i}" for i in range(40)], "group": [f"g{i}" for i in range(36)] + ["r"] * 4,
                          "label": ["common"] * 36 + ["rare"] * 4})
    with pytest.raises(EmptyClassError) as caught:
        split_by_group(ImageTable(frame, ["common", "rare"], "binary"), 0.2, 0.2, seed=0)
    message = str(caught.value)
    assert "'rare' has 1 group(s) (4 image(s)) in all, too few groups to appear in all 3 splits" in message
    assert "fraction" not in message


def test_empty_class_error_suggests_fractions_when_groups_would_suffice():
    frame = pd.DataFrame({"path": [f"/x/{i}" for i in range(30)], "group": [f"g{i}" for i in range(30)],
                          "label": ["common"] * 25 + ["rare"] * 5,
                          "split": ["val"] * 3 + ["test"] * 3 + ["train"] * 24})
    with pytest.raises(EmptyClassError) as caught:
        check_split(ImageTable(frame, ["common", "rare"], "multiclass"))
    message = str(caught.value)
    assert "'rare' has 5 groups (5 images)" in message and "--val-fraction, --test-fraction" in message
    assert "too few groups" not in message
