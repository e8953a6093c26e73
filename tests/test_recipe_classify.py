"""The general classify recipe: layouts detected, tables, groups, tiny runs, DICOM, fine-tuning from a run."""

import json
import logging
import tomllib

import numpy as np
import pandas as pd
import pytest

from keras_med.cli import _split_recipe
from keras_med.cli import main as cli_main
from keras_med.config import RecipeConfig
from keras_med.data import DataError, MissingColumnError
from keras_med.data.augment import AUGMENT_PRESETS, build_augmenter
from keras_med.data.synthetic import DEMO_CLASSES, write_classes_demo
from keras_med.engine.command import main
from keras_med.errors import ConfigError
from keras_med.recipes import classify

from helpers import tiny_flags

TINY = tiny_flags(demo_size=None, epochs=2, bootstrap=20, explain=1, seed=1,
                  extra=["--model", "custom_cnn", "--head-units", "16"])


def config(**data) -> RecipeConfig:
    return RecipeConfig.from_dict({"data": data}, base=classify.SPEC.defaults)


def write_multilabel_csv(root, rng, count=48, size=32):
    """`labels.csv` (file, findings, patient) over grayscale PNGs whose findings are visible blobs."""
    from PIL import Image

    rows = []
    (root / "images").mkdir(parents=True)
    for index in range(count):
        left, right = index % 2 == 0, index % 3 == 0
        pixels = rng.normal(90, 10, (size, size))
        pixels[8:24, 2:12] += 120 * left
        pixels[8:24, 20:30] += 120 * right
        name = f"img{index:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / name)
        findings = "|".join(label for label, on in (("left", left), ("right", right)) if on) or "No Finding"
        rows.append({"file": f"images/{name}", "findings": findings, "patient": f"p{index // 2}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def four_class_run(tmp_path_factory):
    """Model A: a four-class PNG folder set trained through classify (custom_cnn, 32 px, 2 epochs), no groups."""
    root = tmp_path_factory.mktemp("classify")
    data = write_classes_demo(root / "data", n_images=96, seed=0, image_size=32)
    run_dir = root / "runs" / "a"
    assert main(classify.SPEC, ["--data-dir", str(data), "--no-export", "--run-dir", str(run_dir)] + TINY) == 0
    return root, run_dir


# --- layouts --------------------------------------------------------------------------------------------
def test_layouts_are_detected_and_forceable(tmp_path, image_writer):
    flat = write_classes_demo(tmp_path / "flat", n_images=8, image_size=16)
    assert classify.detect_layout(flat, config()) == "folder"
    for split in ("train", "test"):
        image_writer(tmp_path / "presplit" / split / "NORMAL" / "a.png", np.zeros((8, 8)))
        image_writer(tmp_path / "presplit" / split / "PNEUMONIA" / "b.png", np.zeros((8, 8)))
    assert classify.detect_layout(tmp_path / "presplit", config()) == "folder"
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "labels.csv").write_text("file,label\n")
    assert classify.detect_layout(tmp_path / "table", config()) == "table"
    assert classify.detect_layout(tmp_path / "table" / "labels.csv", config()) == "table"
    np.savez(tmp_path / "set.npz", a=np.zeros(1))
    assert classify.detect_layout(tmp_path / "set.npz", config()) == "npz"
    assert classify.detect_layout(tmp_path / "table", config(layout="folder")) == "folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no layout recognised.*--layout"):
        classify.detect_layout(tmp_path / "empty", config())


def test_presplit_folder_keeps_splits_and_orders_binary_negative_first(tmp_path, image_writer):
    for split, count in (("train", 6), ("test", 2)):
        for index in range(count):
            image_writer(tmp_path / split / "PNEUMONIA" / f"person{index}_virus_1.png", np.zeros((8, 8)))
            image_writer(tmp_path / split / "NORMAL" / f"IM-{index:04d}-0001.png", np.zeros((8, 8)))
    resolved = classify.resolve_data(config(data_dir=str(tmp_path)))
    assert resolved.data.layout == "folder" and resolved.data.group_pattern, "Kermany names give patients"
    table = classify.load_table(tmp_path, resolved)
    assert table.task == "binary" and table.class_names == ["NORMAL", "PNEUMONIA"]
    assert set(table.frame["split"]) == {"train", "test"}


def write_mel_nv_folder(root, image_writer, count=4):
    for name in ("mel", "nv"):
        for index in range(count):
            image_writer(root / name / f"{name}{index}.png", np.full((8, 8), 40 * index, dtype=np.uint8))
    return root


def test_positive_class_chooses_the_positive_of_a_binary_task(tmp_path, image_writer, caplog):
    data = write_mel_nv_folder(tmp_path / "folder", image_writer)
    with caplog.at_level(logging.INFO, logger="keras_med"):
        table = classify.load_table(data, config(data_dir=str(data)))
    # Neither name is a known negative: the guess is the later name, and the log says how to change it.
    assert table.class_names == ["mel", "nv"] and "'nv' taken as the positive one" in caplog.text
    assert "--positive-class" in caplog.text
    chosen = classify.load_table(data, config(data_dir=str(data), positive_class="MEL"))
    assert chosen.task == "binary" and chosen.class_names == ["nv", "mel"], "matched case-insensitively"
    assert (chosen.targets()[:, 0] == (chosen.frame["label"] == "mel").to_numpy()).all(), "1 means melanoma"
    # The flag also overrides a known negative name, in a table as in a folder.
    pd.DataFrame({"file": [f"{name}/{name}{index}.png" for name in ("mel", "nv") for index in range(4)],
                  "label": ["positive"] * 4 + ["negative"] * 4}).to_csv(data / "labels.csv", index=False)
    table_config = config(data_dir=str(data / "labels.csv"))
    assert classify.load_table(data / "labels.csv", table_config).class_names == ["negative", "positive"]
    flipped = classify.load_table(data / "labels.csv", config(data_dir=str(data / "labels.csv"),
                                                              positive_class="negative"))
    assert flipped.class_names == ["positive", "negative"]


def test_positive_class_not_a_class_or_on_a_multiclass_task_is_a_config_error(tmp_path, image_writer):
    data = write_mel_nv_folder(tmp_path / "folder", image_writer)
    with pytest.raises(ConfigError, match=r"--positive-class 'bcc'.*not one of the two classes \['mel', 'nv'\]"):
        classify.load_table(data, config(data_dir=str(data), positive_class="bcc"))
    image_writer(data / "bcc" / "bcc0.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"multiclass with 3 classes \['bcc', 'mel', 'nv'\].*only a binary"):
        classify.load_table(data, config(data_dir=str(data), positive_class="mel"))


def test_classify_command_refuses_an_unknown_positive_class_in_one_line(tmp_path, image_writer, capsys):
    data = write_mel_nv_folder(tmp_path / "folder", image_writer)
    code = main(classify.SPEC, ["--data-dir", str(data), "--positive-class", "melanoma", "--no-export",
                                "--run-dir", str(tmp_path / "run")] + TINY)
    assert code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "--positive-class" in line]
    assert len(error_lines) == 1 and "not one of the two classes ['mel', 'nv']" in error_lines[0]
    assert not (tmp_path / "run" / "checkpoints" / "best.keras").exists(), "refused before training"


def test_multilabel_table_columns_separator_and_groups_are_detected(tmp_path):
    write_multilabel_csv(tmp_path, np.random.default_rng(0), count=12)
    resolved = classify.resolve_data(config(data_dir=str(tmp_path), label_column="findings"))
    assert (resolved.data.layout, resolved.data.image_column, resolved.data.label_separator,
            resolved.data.group_column) == ("table", "file", "|", "patient")
    table = classify.load_table(tmp_path, resolved)
    assert table.task == "multilabel" and table.class_names == ["left", "right"]
    np.testing.assert_array_equal(table.targets()[:4], [[1, 1], [0, 0], [1, 0], [0, 1]])
    assert table.groups[:4].tolist() == ["p0", "p0", "p1", "p1"]


def test_table_without_label_column_names_the_flag(tmp_path):
    write_multilabel_csv(tmp_path, np.random.default_rng(0), count=4)
    with pytest.raises(MissingColumnError, match="--label-column"):
        classify.resolve_data(config(data_dir=str(tmp_path)))


def test_no_groups_warns_loudly_and_group_pattern_groups(tmp_path, caplog):
    data = write_classes_demo(tmp_path, n_images=16, image_size=16)
    with caplog.at_level(logging.WARNING, logger="keras_med"):
        table = classify.load_table(data, classify.resolve_data(config(data_dir=str(data))))
    assert "NO PATIENT GROUPS" in caplog.text and table.frame["group"].nunique() == 16
    grouped = classify.load_table(data, config(data_dir=str(data), group_pattern=r"^(patient\d+)_"))
    assert grouped.frame["group"].nunique() == 2


def test_medmnist_npz_keeps_official_splits_and_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{split}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
              for split, n in (("train", 10), ("val", 4), ("test", 4))}
    arrays |= {f"{split}_labels": rng.integers(0, 2, (len(arrays[f"{split}_images"]), 3))
               for split in ("train", "val", "test")}
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    table = classify.load_table(tmp_path / "chestmnist.npz", config())
    assert table.task == "multilabel" and len(table.class_names) == 3
    assert table.frame["split"].value_counts().to_dict() == {"train": 10, "val": 4, "test": 4}


def test_auto_defaults_follow_modality_data_and_machine(tmp_path):
    data = write_classes_demo(tmp_path, n_images=8, image_size=40)
    resolved = classify.resolve_auto_values(config(data_dir=str(data), modality="histology"))
    assert resolved.data.augment == "histology"
    assert (resolved.model.model, resolved.model.weights) == ("mobilenetv2", "imagenet"), "no GPU here"
    assert resolved.data.image_size == 64, "40 px images: not upsampled to 160"
    scratch = classify.resolve_auto_values(RecipeConfig.from_dict({"data": {"data_dir": str(data), "image_size": 96},
                                                              "model": {"model": "custom_cnn"}},
                                                             base=classify.SPEC.defaults))
    assert (scratch.model.weights, scratch.data.image_size, scratch.data.augment) == ("none", 96, "light")


@pytest.mark.parametrize("name", ["fundus", "histology"])
def test_new_augmentation_presets_keep_shape_and_range(name):
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    out = np.asarray(build_augmenter(name, seed=1)(images, training=True))
    assert name in AUGMENT_PRESETS and out.shape == images.shape
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3 and not np.allclose(out, images)


def test_keras_med_train_with_data_dir_defaults_to_classify():
    assert _split_recipe(["--data-dir", "x", "--epochs", "1"], "keras-med train") == ("classify", ["--data-dir", "x", "--epochs", "1"])
    assert _split_recipe(["--demo"], "keras-med train")[0] == "ham10000"
    assert _split_recipe(["--recipe", "chexnet", "--data-dir", "x"], "keras-med train")[0] == "chexnet"


# --- tiny runs ---------------------------------------------------------------------------------------------
def test_four_class_folder_set_trains(four_class_run):
    _, run_dir = four_class_run
    names = json.loads((run_dir / "class_names.json").read_text())
    assert names["task"] == "multiclass" and names["class_names"] == sorted(DEMO_CLASSES)
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["recipe"] == "classify" and saved["data"]["layout"] == "folder"
    assert saved["data"]["group_pattern"] == "" and saved["data"]["augment"] == "light"
    assert (run_dir / "checkpoints" / "best.keras").is_file()
    assert "NO PATIENT GROUPS" in (run_dir / "report.md").read_text(), "the model card warns of ungrouped splits"


@pytest.mark.slow
def test_multilabel_csv_set_trains(tmp_path):
    data = write_multilabel_csv(tmp_path / "data", np.random.default_rng(1), count=60)
    run_dir = tmp_path / "run"
    assert main(classify.SPEC, ["--data-dir", str(data / "labels.csv"), "--label-column", "findings",
                                "--group-column", "patient", "--no-export", "--run-dir", str(run_dir)] + TINY) == 0
    assert json.loads((run_dir / "class_names.json").read_text())["task"] == "multilabel"
    assert "NO PATIENT GROUPS" not in (run_dir / "report.md").read_text()


def test_finetune_from_checkpoint_on_dicom_folder_then_predict_a_dcm(four_class_run, tmp_path, capsys):
    """Model A's backbone under a new binary head, trained on DICOM files; `keras-med predict` on a .dcm."""
    import keras

    from keras_med.models import create_model

    root, run_a = four_class_run
    best_a = run_a / "checkpoints" / "best.keras"
    model_a = keras.saving.load_model(best_a, compile=False)
    model = create_model("mobilenetv2", num_classes=2, image_size=32, task="binary", weights=str(best_a),
                         head_units=8)
    assert model.backbone.weights and len(model.backbone.weights) == len(model_a.backbone.weights)
    for new, old in zip(model.backbone.weights, model_a.backbone.weights):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert model.get_layer("predictions").units == 1 and model_a.get_layer("predictions").units == 4
    assert model.name == model_a.name == "custom_cnn"

    data = write_classes_demo(tmp_path / "dicom", n_images=48, seed=2, image_size=32,
                              classes=("normal", "lesion"), file_format="dcm")
    run_b, saved_models = tmp_path / "run_b", tmp_path / "saved_models"
    tiny = [arg for arg in TINY if arg not in ("--model", "custom_cnn")]
    assert main(classify.SPEC, ["--data-dir", str(data), "--weights", str(best_a), "--run-dir", str(run_b),
                                "--saved-models", str(saved_models), "--explain", "0", "--head-epochs", "1"]
                + tiny) == 0
    saved = tomllib.loads((run_b / "config.toml").read_text())
    assert saved["model"]["weights"] == str(best_a) and saved["model"]["model"] == "custom_cnn"
    assert f"backbone weights came from {best_a}" in (run_b / "report.md").read_text()
    history = pd.read_csv(run_b / "history.csv")
    assert set(history["phase"]) == {1, 2}, "fine-tune plan: head first, then the backbone"

    dcm = next((data / "lesion").glob("*.dcm"))
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(saved_models / "classify" / "1"), str(dcm), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer[0]["valid"] and set(answer[0]["probabilities"]) == {"normal", "lesion"}


def test_dicom_folder_loads_with_header_tags(tmp_path):
    data = write_classes_demo(tmp_path, n_images=8, image_size=16, classes=("normal", "lesion"), file_format="dcm")
    table = classify.load_table(data, config(data_dir=str(data), dicom_tags="Modality,PatientSex"))
    assert table.task == "binary" and table.class_names == ["normal", "lesion"] and len(table) == 8
    assert set(table.frame["Modality"]) == {"OT"} and set(table.frame["PatientSex"]) == {""}
    assert all(path.endswith(".dcm") for path in table.paths)
