"""Every source loads its layout into an ImageTable with paths, labels, groups and original columns."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from keras_med.data import (HAM10000_CLASSES, KERMANY_GROUP_PATTERN, load_chestxray14, load_external_test,
                            load_ham10000, load_image_folder, load_medmnist)
from keras_med.data.synthetic import write_chestxray14_demo, write_image_folder_demo


def test_ham10000_official_two_part_layout(ham_demo_dir):
    table = load_ham10000(ham_demo_dir)
    assert table.class_names == HAM10000_CLASSES and table.task == "multiclass"
    assert len(table) == 140
    assert set(table.frame["label"]) == set(HAM10000_CLASSES)
    assert {"age", "sex", "localization", "dx_type"} <= set(table.frame.columns)
    folders = {p.split("/")[-2] for p in table.paths}
    assert folders == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert (table.frame["group"] == table.frame["lesion_id"]).all()
    assert table.targets().shape == (140, 7)
    assert table.long_names["mel"] == "Melanoma"


def test_ham10000_single_images_folder(ham_demo_dir, tmp_path):
    target = tmp_path / "ham"
    (target / "images").mkdir(parents=True)
    shutil.copy(ham_demo_dir / "HAM10000_metadata.csv", target)
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for image in (ham_demo_dir / part).iterdir():
            shutil.copy(image, target / "images")
    table = load_ham10000(target)
    assert len(table) == 140 and all("/images/" in path for path in table.paths)


@pytest.mark.parametrize("metadata_format", ["csv", "parquet"])
def test_chestxray14_multi_hot_and_no_finding(tmp_path, metadata_format):
    write_chestxray14_demo(tmp_path, n_images=30, image_size=32, metadata_format=metadata_format)
    metadata = tmp_path / f"Data_Entry_2017.{metadata_format}"
    kept = load_chestxray14(metadata, tmp_path, no_finding="keep")
    dropped = load_chestxray14(metadata, tmp_path, no_finding="drop")
    raw = pd.read_csv(metadata) if metadata_format == "csv" else pd.read_parquet(metadata)
    none_rows = (raw["Finding Labels"] == "No Finding").sum()
    assert kept.task == "multilabel" and len(kept) == 30 and len(dropped) == 30 - none_rows
    targets = kept.targets()
    assert (targets.sum(axis=1) == 0).sum() == none_rows
    first = raw["Finding Labels"].iloc[0]
    expected = [name in first.split("|") for name in kept.class_names]
    assert targets[0].astype(bool).tolist() == expected
    assert (kept.frame["group"] == kept.frame["Patient ID"].astype(str)).all()


def test_chestxray14_configurable_column_names(tmp_path, image_writer):
    image_writer(tmp_path / "img" / "a.png", np.zeros((32, 32), np.uint8))
    image_writer(tmp_path / "img" / "b.png", np.zeros((32, 32), np.uint8))
    pd.DataFrame({"imagem": ["a.png", "b.png"], "patologia": ["Derrame|Nodulo", "Nodulo"],
                  "paciente": [1, 2]}).to_csv(tmp_path / "meta.csv", index=False)
    table = load_chestxray14(tmp_path / "meta.csv", tmp_path / "img", image_column="imagem",
                             label_column="patologia", group_column="paciente")
    assert table.class_names == ["Derrame", "Nodulo"]
    assert table.targets().tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_image_folder_flat_layout(tmp_path, image_writer):
    for label in ("cat_a", "cat_b", "cat_c"):
        for index in range(2):
            image_writer(tmp_path / label / f"{index}.png", np.zeros((32, 32, 3), np.uint8))
    table = load_image_folder(tmp_path)
    assert table.task == "multiclass" and table.class_names == ["cat_a", "cat_b", "cat_c"]
    assert "split" not in table.frame.columns and table.frame["group"].nunique() == 6


def test_image_folder_pre_split_keeps_test_and_groups_by_patient(tmp_path):
    write_image_folder_demo(tmp_path, n_images=40, image_size=32)
    table = load_image_folder(tmp_path, KERMANY_GROUP_PATTERN)
    assert table.task == "binary" and table.class_names == ["NORMAL", "PNEUMONIA"]
    on_disk = {str(p.absolute()): p.parts[-3] for p in tmp_path.glob("*/*/*.jpeg")}
    assert dict(zip(table.paths, table.frame["split"])) == on_disk
    person = table.frame[table.frame["file"].str.startswith("person")].iloc[0]
    assert person["group"] == f"{person['split']}/{person['file'].split('_')[0]}"
    assert table.frame["group"].nunique() < len(table)


def test_medmnist_keeps_official_splits_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{split}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
              for split, n in (("train", 6), ("val", 3), ("test", 4))}
    arrays.update({f"{split}_labels": np.array([[i % 2] for i in range(n)])
                   for split, n in (("train", 6), ("val", 3), ("test", 4))})
    np.savez(tmp_path / "tiny.npz", **arrays)
    table = load_medmnist(tmp_path / "tiny.npz", ["normal", "pneumonia"])
    assert table.task == "binary" and table.frame["split"].value_counts().to_dict() == {"train": 6, "test": 4, "val": 3}
    assert table.pixels.shape == (13, 28, 28, 1)
    test = table.subset("test")
    np.testing.assert_array_equal(test.pixels[:, :, :, 0], arrays["test_images"])
    assert test.targets()[:, 0].tolist() == [0, 1, 0, 1]


def test_external_test_label_and_isic_one_hot(tmp_path, image_writer):
    for name in ("ISIC_1", "ISIC_2"):
        image_writer(tmp_path / "images" / f"{name}.jpg", np.zeros((32, 32, 3), np.uint8))
    pd.DataFrame({"image_id": ["ISIC_1", "ISIC_2"], "label": ["MEL", "nv"]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"image": ["ISIC_1", "ISIC_2"], "MEL": [0.0, 1.0], "NV": [1.0, 0.0], "BCC": [0.0, 0.0],
                  "AKIEC": [0, 0], "BKL": [0, 0], "DF": [0, 0], "VASC": [0, 0]}).to_csv(tmp_path / "b.csv", index=False)
    by_label = load_external_test(tmp_path / "a.csv", tmp_path / "images", HAM10000_CLASSES)
    one_hot = load_external_test(tmp_path / "b.csv", tmp_path / "images", HAM10000_CLASSES)
    assert by_label.frame["label"].tolist() == ["mel", "nv"]
    assert one_hot.frame["label"].tolist() == ["nv", "mel"]
    assert (one_hot.frame["split"] == "test").all()
    assert one_hot.targets().argmax(axis=1).tolist() == [HAM10000_CLASSES.index("nv"), HAM10000_CLASSES.index("mel")]
