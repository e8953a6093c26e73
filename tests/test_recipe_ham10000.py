"""The HAM10000 recipe end to end on a tiny synthetic set: every output of a run, and a served model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keras_med.engine.command import main
from keras_med.evaluation.decision_rule import read_decision_rule
from keras_med.recipes import ham10000

from helpers import tiny_flags

TINY = tiny_flags(demo_size=160, epochs=3, bootstrap=50, explain=1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    run_dir = root / "runs" / "ham10000" / "tiny"
    # --decision-rule balanced (off by default): the served model must apply the run's rule too
    code = main(ham10000.SPEC, TINY + ["--output-dir", str(root / "runs"), "--run-dir", str(run_dir),
                                       "--saved-models", str(root / "saved_models"), "--decision-rule", "balanced"])
    assert code == 0
    return root, run_dir


def test_run_directory_has_every_output(finished_run):
    root, run_dir = finished_run
    for name in ["config.toml", "split.csv", "class_names.json", "checkpoints/best.keras", "history.csv",
                 "metrics.json", "report.md", "report.html", "plots/confusion_matrix.png",
                 "plots/training_curves.png"]:
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == 3 and {"loss", "val_loss", "val_balanced_accuracy", "learning_rate"} <= set(history)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ["accuracy", "balanced_accuracy", "macro_auc"]:
        low, high = metrics[key]["ci95"]
        assert low <= metrics[key]["value"] <= high
    class_names = json.loads((run_dir / "class_names.json").read_text())["class_names"]
    assert set(metrics["per_class"]) == set(class_names)


def test_split_keeps_each_lesion_in_one_split(finished_run):
    _, run_dir = finished_run
    split = pd.read_csv(run_dir / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1
    assert set(split["split"]) == {"train", "val", "test"}


def test_saved_config_repeats_the_run_settings(finished_run):
    from keras_med.config import RecipeConfig

    _, run_dir = finished_run
    config = RecipeConfig.load(run_dir / "config.toml")
    assert config.data.image_size == 32 and config.model.model == "custom_cnn" and config.train.epochs == 3


def test_exported_model_reloads_and_agrees_with_the_checkpoint(finished_run):
    import keras
    import tensorflow as tf

    root, run_dir = finished_run
    assert "ham10000" in (root / "saved_models" / "models.config").read_text()
    served = tf.saved_model.load(str(root / "saved_models" / "ham10000" / "1"))
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    # Whole-number pixels, as images have: predict_pixels rounds to uint8 like the training
    # pipeline, so fractional pixels would be compared against a different input (seen failing
    # CI by 1e-3 on another CPU).
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("float32")
    outputs = served.signatures["predict_pixels"](tf.constant(pixels))
    # The run's decision rule (keras_med.evaluation.decision_rule) is inside the served model.
    rule = read_decision_rule(run_dir / "checkpoints" / "best.keras")
    assert rule is not None and rule.biases == tuple(json.loads((run_dir / "metrics.json").read_text())
                                                     ["decision_rule"]["biases"])
    np.testing.assert_allclose(outputs["probabilities"].numpy(), rule.apply(model.predict(pixels, verbose=0)),
                               atol=1e-5)
    names = [name.decode() for name in outputs["top_class_name"].numpy()]
    assert set(names) <= set(json.loads((run_dir / "class_names.json").read_text())["class_names"])


def test_exported_demo_says_when_it_does_not_know(finished_run):
    import io

    import tensorflow as tf
    from PIL import Image

    def png(pixels):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    root, run_dir = finished_run
    served = tf.saved_model.load(str(root / "saved_models" / "ham10000" / "1"))
    rng = np.random.default_rng(0)
    blank, one_pixel, noise = np.zeros((40, 40, 3)), rng.integers(0, 256, (1, 1, 3)), rng.integers(0, 256, (40, 40, 3))
    answer = served.signatures["serving_default"](image_bytes=tf.constant([png(blank), png(one_pixel), png(noise)]))
    assert {"in_distribution", "ood_score", "prediction_set"} <= set(answer)
    assert answer["prediction_set"].shape == (3, 7)
    assert not answer["in_distribution"].numpy().any()
    assert not answer["decisions"].numpy().any()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ood"]["validation_pass_rate"] >= 0.95 and metrics["conformal"]["target"] == 0.9
    report = (run_dir / "report.md").read_text()
    assert "## Unfamiliar inputs" in report and "## Prediction sets" in report
    # A later `keras-med export` of the checkpoint serves the same guard and sets.
    from keras_med.evaluation.trust import load_run_trust

    stored = load_run_trust(run_dir / "checkpoints" / "best.keras")
    assert stored["ood_guard"].threshold == metrics["ood"]["threshold"]
    assert stored["conformal_sets"].thresholds.tolist() == metrics["conformal"]["thresholds"]


def test_without_data_it_says_where_ham10000_is_and_fails(capsys):
    assert main(ham10000.SPEC, []) == 2
    message = capsys.readouterr().err
    assert "--data-dir" in message and "Dataverse" in message and "--demo" in message


def test_help_documents_every_flag():
    result = subprocess.run([sys.executable, "-m", "keras_med.recipes.ham10000", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ["--data-dir", "--model", "--image-size", "--epochs", "--batch-size", "--weights",
                 "--output-dir", "--config", "--seed", "--demo"]:
        assert flag in result.stdout


def test_console_script_train_is_the_same_entry(capsys):
    """`keras-med train --recipe R` runs recipe R's own entry: the same checks and the same words, under
    the console script's name (the whole train round through it: tests/test_every_model_cli.py)."""
    from keras_med.cli import main as cli_main

    assert main(ham10000.SPEC, []) == 2
    direct = capsys.readouterr().err
    assert cli_main(["train", "--recipe", "ham10000"]) == 2
    through_cli = capsys.readouterr().err
    assert "Dataverse" in through_cli
    assert through_cli == direct.replace("python -m keras_med.recipes.ham10000: error", "keras-med train: error")
    assert cli_main(["train", "--recipe", "chexnet"]) == 2
    assert "ChestX-ray14 is not here" in capsys.readouterr().err


def test_lr_find_command_writes_plot_and_suggestion(tmp_path):
    from keras_med.cli import main as cli_main

    run_dir = tmp_path / "lr"
    assert cli_main(["lr-find", "--recipe", "ham10000", "--demo", "--demo-size", "160", "--image-size", "32",
                     "--steps", "30", "--output-dir", str(tmp_path), "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "lr_find.png").stat().st_size > 0
    suggested = json.loads((run_dir / "lr_find.json").read_text())["suggested_learning_rate"]
    assert 1e-7 <= suggested <= 1.0


@pytest.mark.slow
def test_a_run_on_shuffled_labels_is_named_no_better_than_chance(ham_demo_dir, tmp_path):
    import shutil

    data = tmp_path / "shuffled"
    shutil.copytree(ham_demo_dir, data)
    table = pd.read_csv(data / "HAM10000_metadata.csv")
    # Shuffle the diagnoses between lesions: the images no longer say anything about the label.
    lesions = table["lesion_id"].unique()
    diagnosis = dict(zip(lesions, np.random.default_rng(0).permutation(table.groupby("lesion_id")["dx"].first()[lesions])))
    table["dx"] = table["lesion_id"].map(diagnosis)
    table.to_csv(data / "HAM10000_metadata.csv", index=False)
    run_dir = tmp_path / "run"
    code = main(ham10000.SPEC, ["--data-dir", str(data), "--model", "custom_cnn", "--weights", "none", "--plan", "scratch",
                                "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--head-units", "32",
                                "--bootstrap", "200", "--explain", "0", "--no-export", "--run-dir", str(run_dir),
                                "--output-dir", str(tmp_path / "runs")])
    assert code == 0
    report = (run_dir / "report.md").read_text()
    assert report.split("\n\n")[1].startswith("WARNING: The model is no better than chance")
    assert json.loads((run_dir / "metrics.json").read_text())["health"]["findings"][0]["kind"] == "no_skill"


@pytest.mark.parametrize("command, has_cv", [("train", True), ("lr-find", False), ("prepare", False)])
def test_cross_validation_flags_only_where_models_are_trained_and_evaluated(command, has_cv, capsys):
    from keras_med.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--recipe", "ham10000", "--help"])
    assert exit_info.value.code == 0
    assert ("--cv" in capsys.readouterr().out) == has_cv


def test_result_card_is_generated_from_the_finished_run(finished_run, tmp_path):
    """benchmarks/result_cards.py on a real run directory: its own figures and split, read back."""
    import importlib.util

    root, run_dir = finished_run
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "result_cards.py"
    spec = importlib.util.spec_from_file_location("result_cards", script)
    cards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cards)
    assert cards.main(["--runs", str(run_dir), "--out", str(tmp_path)]) == 0
    card = (tmp_path / "ham10000.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    value, (low, high) = metrics["balanced_accuracy"]["value"], metrics["balanced_accuracy"]["ci95"]
    assert f"{value:.3f} ({low:.3f}-{high:.3f})" in card
    assert "python -m keras_med.recipes.ham10000 --demo" in card
    assert ", 0 of them in more than one split" in card  # split by lesion
