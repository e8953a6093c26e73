"""The CheXNet recipe: ChestX-ray14 loading options, the official and patient splits, a tiny run end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from keras_med.config import RecipeConfig
from keras_med.data import split_by_group
from keras_med.data.synthetic import write_chestxray14_demo
from keras_med.engine.command import main
from keras_med.recipes import chexnet

from helpers import tiny_flags

TINY = tiny_flags(epochs=2, bootstrap=30, explain=1)


def config(**data) -> RecipeConfig:
    return RecipeConfig.from_dict({"data": data}, base=chexnet.SPEC.defaults)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return write_chestxray14_demo(tmp_path_factory.mktemp("cxr14"), n_images=60, seed=2, image_size=32)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexnet")
    run_dir = root / "runs" / "chexnet" / "tiny"
    # --class-weights: the per-label weighted cross-entropy (CheXNet's loss) end to end
    code = main(chexnet.SPEC, TINY + ["--class-weights", "--output-dir", str(root / "runs"), "--run-dir", str(run_dir),
                                      "--saved-models", str(root / "saved_models")])
    assert code == 0
    return root, run_dir


def test_no_finding_dropped_or_kept_as_all_zero_rows(demo_dir):
    metadata = pd.read_csv(demo_dir / "Data_Entry_2017.csv")
    empty = int((metadata["Finding Labels"] == "No Finding").sum())
    assert empty > 0
    kept = chexnet.load_table(demo_dir, config(no_finding="keep"))
    dropped = chexnet.load_table(demo_dir, config(no_finding="drop"))
    assert len(kept) == len(metadata) and len(dropped) == len(metadata) - empty
    assert "No Finding" not in kept.class_names
    kept_targets = kept.targets()
    assert int((kept_targets.sum(axis=1) == 0).sum()) == empty
    assert (dropped.targets().sum(axis=1) > 0).all()
    row = metadata.index[metadata["Finding Labels"].str.contains(r"\|")][0]
    names = metadata["Finding Labels"].iloc[row].split("|")
    expected = np.array([name in names for name in kept.class_names], dtype=np.float32)
    np.testing.assert_array_equal(kept_targets[row], expected)


def test_csv_and_parquet_with_a_portuguese_label_column_give_the_same_dataset(tmp_path):
    csv_dir = write_chestxray14_demo(tmp_path / "csv", n_images=30, seed=5, image_size=32)
    parquet_dir = write_chestxray14_demo(tmp_path / "pq", n_images=30, seed=5, image_size=32,
                                         metadata_format="parquet")
    frame = pd.read_parquet(parquet_dir / "Data_Entry_2017.parquet").rename(
        columns={"Finding Labels": "patologia", "Image Index": "imagem"})
    (parquet_dir / "Data_Entry_2017.parquet").unlink()
    frame.to_parquet(parquet_dir / "paciente_gold.parquet", index=False)
    from_csv = chexnet.load_table(csv_dir, config())
    from_parquet = chexnet.load_table(parquet_dir, config(label_column="patologia", image_column="imagem"))
    assert from_csv.class_names == from_parquet.class_names
    np.testing.assert_array_equal(from_csv.targets(), from_parquet.targets())
    assert from_csv.groups.tolist() == from_parquet.groups.tolist()
    names = [path.split("/")[-1] for path in from_csv.paths]
    assert names == [path.split("/")[-1] for path in from_parquet.paths]


def test_official_lists_fix_the_test_split_and_patients_stay_in_one_split(tmp_path):
    root = write_chestxray14_demo(tmp_path, n_images=90, seed=4, image_size=32)
    metadata = pd.read_csv(root / "Data_Entry_2017.csv")
    test_patients = set(metadata["Patient ID"].unique()[:6])
    in_test = metadata["Patient ID"].isin(test_patients)
    (root / "test_list.txt").write_text("\n".join(metadata.loc[in_test, "Image Index"]))
    (root / "train_val_list.txt").write_text("\n".join(metadata.loc[~in_test, "Image Index"]))
    table = split_by_group(chexnet.load_table(root, config(no_finding="keep")), val_fraction=0.2,
                           test_fraction=0.2, seed=0)
    frame = table.frame
    assert set(frame.loc[frame["split"] == "test", "group"].astype(int)) == test_patients
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.groupby("group")["split"].nunique().max() == 1


def test_metadata_is_found_or_its_absence_explained(demo_dir, tmp_path):
    assert chexnet.find_metadata(demo_dir, config()).name == "Data_Entry_2017.csv"
    with pytest.raises(FileNotFoundError, match="--metadata"):
        chexnet.find_metadata(tmp_path, config())
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        chexnet.find_metadata(demo_dir, config(metadata="nothing.csv"))


def test_auroc_table_puts_the_paper_beside_ours():
    metrics = {"per_class": {"Pleural_Thickening": {"auc": 0.7, "auc_ci95": [0.6, 0.8]},
                             "Hernia": {"auc": 0.95, "auc_ci95": [0.9, 1.0]}},
               "mean_auc": {"value": 0.825, "ci95": [0.75, 0.9]}}
    table = chexnet.auroc_comparison(metrics).set_index("pathology")
    assert table.loc["Pleural_Thickening", "chexnet_2017"] == 0.8062
    assert table.loc["Hernia", "difference"] == pytest.approx(0.95 - 0.9164)
    assert table.loc["mean", "chexnet_2017"] == pytest.approx((0.8062 + 0.9164) / 2)
    assert chexnet.CHEXNET_PAPER_MEAN_AUROC == pytest.approx(np.mean(list(chexnet.CHEXNET_PAPER_AUROC.values())),
                                                             abs=6e-4)


def test_run_writes_the_multilabel_report_and_the_chexnet_table(finished_run):
    _, run_dir = finished_run
    for name in ["config.toml", "split.csv", "checkpoints/best.keras", "history.csv", "metrics.json",
                 "report.html", "plots/confusion_matrices.png", "plots/roc_curves.png",
                 "chexnet_auroc.md", "chexnet_auroc.csv"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    class_names = json.loads((run_dir / "class_names.json").read_text())["class_names"]
    assert metrics["task"] == "multilabel" and len(metrics["thresholds"]) == len(class_names)
    table = pd.read_csv(run_dir / "chexnet_auroc.csv")
    assert table["pathology"].tolist() == [*class_names, "mean"]
    assert table["chexnet_2017"].notna().all()
    assert "CheXNet 2017" in (run_dir / "chexnet_auroc.md").read_text()
    assert list((run_dir / "gradcam").glob("gradcampp_*.png"))
    split = pd.read_csv(run_dir / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1


def test_run_exports_a_multilabel_served_model(finished_run):
    """The served model answers the run's test images as its checkpoint does, one sigmoid per label,
    each label decided at its own threshold from metrics.json (where the guard passes the image)."""
    import keras
    import tensorflow as tf

    from keras_med.data.decode import load_image

    root, run_dir = finished_run
    served = tf.saved_model.load(str(root / "saved_models" / "chexnet" / "1"))
    class_names = json.loads((run_dir / "class_names.json").read_text())["class_names"]
    thresholds = np.asarray(json.loads((run_dir / "metrics.json").read_text())["thresholds"], np.float32)
    test_paths = pd.read_csv(run_dir / "split.csv").query("split == 'test'")["path"].head(6)
    pixels = np.stack([np.round(load_image(path, 32).numpy()) for path in test_paths]).astype(np.float32)
    outputs = served.signatures["predict_pixels"](pixels=tf.constant(pixels))
    expected = keras.saving.load_model(run_dir / "checkpoints" / "best.keras").predict(pixels, verbose=0)

    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (len(test_paths), len(class_names))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    in_distribution = outputs["in_distribution"].numpy()[:, None]
    np.testing.assert_array_equal(outputs["decisions"].numpy(), (probabilities >= thresholds) & in_distribution)


def test_without_data_it_says_where_chestxray14_is(capsys):
    assert main(chexnet.SPEC, []) == 2
    message = capsys.readouterr().err
    assert "nihcc" in message and "--demo" in message and "prepare" in message


def test_class_weights_train_with_a_per_label_weighted_loss(finished_run):
    import keras

    from keras_med.training.losses import WeightedBinaryCrossentropy

    _, run_dir = finished_run
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    assert isinstance(model.loss, WeightedBinaryCrossentropy)
    assert len(model.loss.positive_weights) == model.output_shape[-1]
    # rare labels weigh their positives more than their negatives
    assert max(p / n for p, n in zip(model.loss.positive_weights, model.loss.negative_weights)) > 1
