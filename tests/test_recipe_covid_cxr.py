"""The COVID / pneumonia screening recipe: its three layouts, patient splits, a tiny run, and --prepared."""

import json

import numpy as np
import pandas as pd
import pytest

from keras_med.config import RecipeConfig
from keras_med.data import DataError, MissingColumnError, MissingImageError, load_covid_chestxray, split_by_group
from keras_med.data.sources.covid_chestxray import write_covid_chestxray_demo
from keras_med.data.synthetic import write_image_folder_demo
from keras_med.engine.command import main
from keras_med.errors import ConfigError
from keras_med.recipes import covid_cxr

from helpers import tiny_flags

TINY = tiny_flags(epochs=3, bootstrap=30, explain=1)


def config(**data) -> RecipeConfig:
    return RecipeConfig.from_dict({"data": data}, base=covid_cxr.SPEC.defaults)


@pytest.fixture(scope="module")
def ieee_dir(tmp_path_factory):
    return write_covid_chestxray_demo(tmp_path_factory.mktemp("ieee8023"), n_images=80, seed=1, image_size=32)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("covid")
    run_dir = root / "runs" / "covid_cxr" / "tiny"
    code = main(covid_cxr.SPEC, TINY + ["--output-dir", str(root / "runs"), "--run-dir", str(run_dir),
                                        "--saved-models", str(root / "saved_models")])
    assert code == 0
    return root, run_dir


def test_ieee8023_keeps_xray_frontal_views_and_labels_covid(ieee_dir):
    metadata = pd.read_csv(ieee_dir / "metadata.csv")
    assert {"L", "Axial"} & set(metadata["view"]), "the demo should hold rows to leave out"
    table = covid_cxr.load_table(ieee_dir, config())
    frontal = metadata[(metadata["modality"] == "X-ray") & metadata["view"].isin(["PA", "AP", "AP Supine"])]
    assert len(table) == len(frontal) and table.task == "binary"
    assert table.class_names == ["other", "COVID-19"]
    expected = frontal["finding"].str.contains("COVID-19").to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(table.targets()[:, 0], expected)
    assert table.groups.tolist() == frontal["patientid"].astype(str).tolist()
    flipped = covid_cxr.load_table(ieee_dir, config(positive_class="other"))
    assert flipped.class_names == ["COVID-19", "other"]
    np.testing.assert_array_equal(flipped.targets()[:, 0], 1 - expected)


def test_ieee8023_negatives_can_be_no_finding_only(ieee_dir):
    table = covid_cxr.load_table(ieee_dir, config(negatives="no_finding", views="PA"))
    assert table.class_names == ["No Finding", "COVID-19"]
    assert set(table.frame["finding"]) <= {"No Finding", "Pneumonia/Viral/COVID-19"}
    assert set(table.frame["view"]) == {"PA"}


def test_ieee8023_bad_input_names_file_and_column(ieee_dir, tmp_path):
    metadata = pd.read_csv(ieee_dir / "metadata.csv")
    metadata.drop(columns="view").to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(MissingColumnError, match=r"metadata.csv.*'view'"):
        load_covid_chestxray(tmp_path)
    (tmp_path / "images").mkdir()
    metadata.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(MissingImageError, match=r"metadata.csv line \d+, column 'filename'"):
        load_covid_chestxray(tmp_path)
    with pytest.raises(DataError, match="views"):
        load_covid_chestxray(ieee_dir, views=["Lateral only"])


def test_patient_split_keeps_each_patient_in_one_split(ieee_dir):
    table = split_by_group(covid_cxr.load_table(ieee_dir, config()), val_fraction=0.2, test_fraction=0.2, seed=0)
    assert table.frame.groupby("group")["split"].nunique().max() == 1
    assert set(table.frame["split"]) == {"train", "val", "test"}


def test_kermany_folders_are_detected_with_their_splits_and_patients(tmp_path):
    root = write_image_folder_demo(tmp_path / "kermany", n_images=40, seed=0, image_size=32)
    table = covid_cxr.load_table(root, config())
    assert table.class_names == ["NORMAL", "PNEUMONIA"] and table.task == "binary"
    assert covid_cxr.load_table(root, config(positive_class="normal")).class_names == ["PNEUMONIA", "NORMAL"]
    assert set(table.frame["split"]) == {"train", "test"}
    assert table.frame["group"].str.contains("person|IM-").all()
    flat = tmp_path / "flat"
    for name in ("COVID", "NORMAL"):
        (flat / name).mkdir(parents=True)
    (root / "train" / "NORMAL").rename(flat / "NORMAL" / "x")
    assert covid_cxr.binary_class_folders(flat) == ["NORMAL", "COVID"]
    # --positive-class picks the positive folder, even against a known negative name.
    assert covid_cxr.binary_class_folders(flat, "normal") == ["COVID", "NORMAL"]
    with pytest.raises(ConfigError, match=r"not one of the two classes \['COVID', 'NORMAL'\]"):
        covid_cxr.binary_class_folders(flat, "pneumonia")
    (flat / "OTHER").mkdir()
    with pytest.raises(DataError, match="two class folders"):
        covid_cxr.binary_class_folders(flat)


def test_pneumoniamnist_npz_keeps_official_splits(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2)[:, None]
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    table = covid_cxr.load_table(tmp_path / "pneumoniamnist.npz", config())
    assert table.class_names == ["normal", "pneumonia"] and table.task == "binary"
    assert table.frame["split"].value_counts().to_dict() == {"train": 10, "val": 4, "test": 4}


def test_run_reports_screening_metrics_at_the_sensitivity_operating_point(finished_run):
    _, run_dir = finished_run
    for name in ["split.csv", "checkpoints/best.keras", "history.csv", "metrics.json", "report.html",
                 "plots/roc_curves.png", "plots/pr_curves.png", "plots/confusion_matrix.png"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "binary" and len(metrics["thresholds"]) == 1
    assert metrics["operating_point"]["method"] == "sensitivity" and metrics["operating_point"]["target"] == 0.9
    for key in ("sensitivity", "specificity", "ppv", "npv", "roc_auc"):
        low, high = metrics[key]["ci95"]
        assert low <= metrics[key]["value"] <= high, key
    assert "findings" in metrics["health"]
    history = pd.read_csv(run_dir / "history.csv")
    assert "val_auc" in history and len(history) == 3
    split = pd.read_csv(run_dir / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1


def test_run_exports_one_threshold_with_the_served_model(finished_run):
    import tensorflow as tf

    root, _ = finished_run
    served = tf.saved_model.load(str(root / "saved_models" / "covid_cxr" / "1"))
    outputs = served.signatures["predict_pixels"](tf.zeros((2, 32, 32, 3)))
    assert outputs["probabilities"].shape[0] == 2
    assert "covid_cxr" in (root / "saved_models" / "models.config").read_text()


@pytest.mark.slow
def test_prepare_then_train_from_prepared_shards(tmp_path):
    from keras_med.cli import main as cli_main

    common = ["--recipe", "covid_cxr", "--demo", "--demo-size", "80", "--image-size", "32", "--seed", "2",
              "--output-dir", str(tmp_path / "runs")]
    assert cli_main(["prepare", *common, "--out", str(tmp_path / "shards"), "--shard-size", "16"]) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    run_dir = tmp_path / "runs" / "covid_cxr" / "prepared"
    assert cli_main(["train", *common, "--prepared", str(tmp_path / "shards"), "--cache", "none", "--epochs", "1",
                     "--bootstrap", "20", "--explain", "1", "--no-export", "--run-dir", str(run_dir)]) == 0
    split = pd.read_csv(run_dir / "split.csv").set_index("path")["split"]
    prepared_split = pd.DataFrame(manifest["table"]).set_index("path")["split"]
    assert split.sort_index().equals(prepared_split.sort_index())
    assert json.loads((run_dir / "metrics.json").read_text())["n_samples"] == manifest["counts"]["test"]


def test_in_memory_test_images_reach_the_report_at_the_model_size(tmp_path):
    from keras_med.data.preparation import test_image_source

    rng = np.random.default_rng(0)
    arrays = {f"{split}_{kind}": (rng.integers(0, 255, (4, 28, 28), dtype=np.uint8) if kind == "images"
                                  else (np.arange(4) % 2)[:, None])
              for split in ("train", "val", "test") for kind in ("images", "labels")}
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    test = covid_cxr.load_table(tmp_path / "pneumoniamnist.npz", config()).subset("test")
    images = test_image_source(test, config(image_size=32))
    assert images.shape == (4, 32, 32, 3)
