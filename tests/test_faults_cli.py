"""A user's mistake on any command: exit status 2, one line on stderr naming the flag or file, no traceback.

Most cases run the command functions in this process (capsys); a few run the real entry points
in a subprocess to prove what a user sees. Validation happens before any data is read: every
recipe case below also names a data directory that does not exist, and must still report the
bad value (and never reach `run_recipe`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_med.cli import main as cli_main
from keras_med.command_line import run_command
from keras_med.config import RecipeConfig
from keras_med.engine import command as base
from keras_med.errors import RunDivergedError
from keras_med.recipes import chexnet, classify, covid_cxr, ham10000

RECIPE_PROG = "python -m keras_med.recipes.ham10000"
REPO = Path(__file__).resolve().parents[1]


def error_lines(stderr: str, prog: str) -> list[str]:
    """Our lines on stderr (TensorFlow's start-up lines are not ours)."""
    return [line for line in stderr.splitlines() if line.startswith(prog)]


def assert_one_line_error(capsys, prog: str, *expected: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = error_lines(err, prog)
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a recipe gets as far as training."""

    def refuse(*args, **kwargs):
        raise AssertionError("run_recipe was reached: validation came too late")

    monkeypatch.setattr(base, "run_recipe", refuse)


# --- validation before work ---------------------------------------------------------------------
@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "0"], "--epochs ([train] epochs): expected an integer of at least 1, got 0"),
    (["--epochs", "-3"], "--epochs ([train] epochs)"),
    (["--image-size", "0"], "--image-size ([data] image_size)"),
    (["--image-size", "16"], "at least 32"),
    (["--batch-size", "0"], "--batch-size ([data] batch_size)"),
    (["--val-fraction", "1.5"], "--val-fraction ([data] val_fraction): expected a fraction in [0.0, 1.0)"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], "expected a sum below 1"),
    (["--learning-rate", "0"], "--learning-rate ([train] learning_rate): expected a number above 0.0"),
    (["--finetune-learning-rate", "-1e-4"], "--finetune-learning-rate"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--model", "resnet18"], "--model ([model] model): expected one of"),
    (["--model", "custom_cnn", "--weights", "imagenet"], "has no pretrained backbone"),
    (["--weights", "/nonexistent/w.weights.h5"], "--weights ([model] weights)"),
    (["--monitor", "accuracy"], "starting with 'val_'"),
    (["--model", "vgg16", "--width", "0.5"], "--width ([model] width): model 'vgg16' has no width multiplier"),
    (["--name", "a/b"], "--name ([export] name)"),
    (["--optimizer", "lion"], "argument --optimizer: invalid choice"),
    (["--epochs", "abc"], "argument --epochs: invalid int value"),
    (["--plan", "fast"], "argument --plan"),
])
def test_recipe_refuses_a_bad_flag_before_touching_data(tmp_path, capsys, no_training, flags, expected):
    code = base.main(ham10000.SPEC, ["--data-dir", str(tmp_path / "missing"), *flags])
    assert code == 2
    assert_one_line_error(capsys, RECIPE_PROG, expected)


def test_every_problem_is_named_at_once(tmp_path, capsys, no_training):
    assert base.main(ham10000.SPEC, ["--data-dir", str(tmp_path / "missing"), "--epochs", "0"]) == 2
    line = assert_one_line_error(capsys, RECIPE_PROG, "--epochs")
    assert f"--data-dir ([data] data_dir): expected an existing directory or file, got '{tmp_path / 'missing'}'" in line


@pytest.mark.parametrize("text, expected", [
    ("[train]\nepochs = 0\n", "--epochs ([train] epochs)"),
    ("[trian]\nepochs = 1\n", "unknown key or section 'trian'"),
    ("[data]\nimage_size = 'big'\n", "[data] image_size: expected int"),
    ("[data\n", "not valid TOML"),
])
def test_bad_toml_is_one_line_naming_file_or_key(tmp_path, capsys, no_training, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert base.main(ham10000.SPEC, ["--demo", "--config", str(path)]) == 2
    line = assert_one_line_error(capsys, RECIPE_PROG, expected)
    if "[train] epochs" not in expected:
        assert str(path) in line


def test_missing_config_file_is_named(tmp_path, capsys, no_training):
    assert cli_main(["train", "--config", str(tmp_path / "nope.toml"), "--demo"]) == 2
    assert_one_line_error(capsys, "keras-med train", f"--config {tmp_path / 'nope.toml'}: no such file")


def test_verbose_shows_the_traceback(tmp_path, capsys, no_training):
    assert base.main(ham10000.SPEC, ["--demo", "--epochs", "0", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert error_lines(err, RECIPE_PROG)[-1].endswith("got 0")


def test_prepared_without_manifest_and_missing_split_file(tmp_path, capsys, no_training):
    assert cli_main(["train", "--recipe", "chexnet", "--prepared", str(tmp_path),
                     "--split-file", str(tmp_path / "split.csv")]) == 2
    assert_one_line_error(capsys, "keras-med train", "--prepared ([data] prepared)", "--split-file ([data] split_file)")


def test_metadata_file_is_looked_for_in_the_data_dir(tmp_path, capsys, no_training):
    assert cli_main(["train", "--recipe", "chexnet", "--data-dir", str(tmp_path), "--metadata", "nothing.csv"]) == 2
    assert_one_line_error(capsys, "keras-med train", "--metadata ([data] metadata)", f"also looked in {tmp_path}")


@pytest.mark.parametrize("spec", [ham10000.SPEC, chexnet.SPEC, covid_cxr.SPEC, classify.SPEC],
                         ids=lambda spec: spec.name)
def test_shipped_defaults_and_demo_overrides_validate(spec):
    detects = spec.resolve_auto_values is not None
    spec.defaults.validate(allow_auto=detects)
    RecipeConfig.from_dict(spec.demo_overrides, base=spec.defaults).validate(allow_auto=detects)


def test_shipped_recipe_files_validate():
    for path in sorted((REPO / "recipes").glob("*.toml")):
        config = RecipeConfig.load(path)
        # classify's "auto" model and image size are replaced by its detection step, then validated.
        config.validate(allow_auto=config.recipe == "classify")


def test_auto_values_are_refused_where_no_detection_step_replaces_them(capsys, no_training):
    assert base.main(ham10000.SPEC, ["--demo", "--image-size", "0", "--model", "auto", "--augment", "auto"]) == 2
    assert_one_line_error(capsys, RECIPE_PROG, "--image-size", "--model", "--augment ([data] augment): expected a "
                          "value of its own, got 'auto'")


# --- the recipe-level commands ------------------------------------------------------------------
def test_lr_find_refuses_bad_sweep_and_bad_config(tmp_path, capsys):
    assert cli_main(["lr-find", "--demo", "--min-lr", "0", "--steps", "1"]) == 2
    assert_one_line_error(capsys, "keras-med lr-find", "--min-lr", "--steps")
    assert cli_main(["lr-find", "--data-dir", str(tmp_path / "missing"), "--batch-size", "0"]) == 2
    assert_one_line_error(capsys, "keras-med lr-find", "--batch-size ([data] batch_size)")


def test_prepare_refuses_bad_flags(tmp_path, capsys):
    assert cli_main(["prepare", "--demo"]) == 2
    assert_one_line_error(capsys, "keras-med prepare", "the following arguments are required: --out")
    assert cli_main(["prepare", "--demo", "--out", str(tmp_path), "--quality", "0"]) == 2
    assert_one_line_error(capsys, "keras-med prepare", "--quality")
    assert cli_main(["prepare", "--out", str(tmp_path / "o")]) == 2
    line = assert_one_line_error(capsys, "keras-med prepare", "no data: expected --data-dir DIR, --demo")
    assert "--prepared" not in line


def test_without_data_a_recipe_says_where_its_data_is(capsys):
    assert cli_main(["train", "--recipe", "covid_cxr"]) == 2
    err = capsys.readouterr().err
    assert "no data: expected --data-dir DIR, --demo or --prepared DIR" in err and "Traceback" not in err


def test_unknown_recipe_command_and_flag(capsys):
    assert cli_main(["train", "--recipe", "mnist"]) == 2
    assert_one_line_error(capsys, "keras-med train", "argument --recipe: invalid choice: 'mnist'")
    assert cli_main(["trian"]) == 2
    assert "keras-med: error: unknown command 'trian'" in capsys.readouterr().err
    assert cli_main(["models", "--bad"]) == 2
    assert_one_line_error(capsys, "keras-med models", "unrecognized arguments: --bad")


# --- commands on a trained model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory with a 7-output softmax model (32 px) but 6 names in class_names.json."""
    import keras

    root = tmp_path_factory.mktemp("tiny_run")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="predictions")(x))
    (root / "checkpoints").mkdir()
    model.save(root / "checkpoints" / "best.keras")
    names = ["akiec", "bcc", "bkl", "df", "mel", "nv"]
    (root / "class_names.json").write_text(json.dumps({"class_names": names, "task": "multiclass"}))
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(root / "image.png")
    return root


def test_class_names_that_do_not_match_the_model_are_named_at_load_time(tiny_run, capsys, tmp_path):
    model = str(tiny_run / "checkpoints" / "best.keras")
    expected = f"the model has 7 outputs and the run directory names 6 classes ({tiny_run / 'class_names.json'})"
    assert cli_main(["export", "--model", model, "--name", "tiny", "--base-dir", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "keras-med export", expected)
    assert not (tmp_path / "tiny").exists()
    assert cli_main(["explain", "--model", model, str(tiny_run / "image.png"), "--out", str(tmp_path / "x")]) == 2
    assert_one_line_error(capsys, "keras-med explain", expected)
    assert cli_main(["predict", "--model", model, str(tiny_run / "image.png")]) == 2
    assert expected in capsys.readouterr().err
    assert cli_main(["export", "--model", model, "--name", "tiny", "--base-dir", str(tmp_path),
                     "--class-names", "a,b"]) == 2
    assert_one_line_error(capsys, "keras-med export", "the model has 7 outputs and --class-names names 2 classes")


def test_export_refuses_bad_name_version_and_missing_model(tiny_run, capsys, tmp_path):
    model = str(tiny_run / "checkpoints" / "best.keras")
    assert cli_main(["export", "--model", model, "--name", "../x"]) == 2
    assert_one_line_error(capsys, "keras-med export", "--name: expected letters, digits")
    (tmp_path / "tiny" / "3").mkdir(parents=True)
    assert cli_main(["export", "--model", model, "--name", "tiny", "--version", "3", "--base-dir", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "keras-med export", "--version 3", "already exists")
    assert cli_main(["export", "--model", str(tmp_path / "none.keras"), "--name", "x"]) == 2
    assert_one_line_error(capsys, "keras-med export", f"{tmp_path / 'none.keras'}: expected an existing .keras file")


def test_export_onnx_without_its_packages_is_refused_first(tiny_run, capsys, tmp_path, monkeypatch):
    from keras_med.export import command_export

    monkeypatch.setattr(command_export.importlib.util, "find_spec", lambda name: None)
    model = str(tiny_run / "checkpoints" / "best.keras")
    assert cli_main(["export", "--model", model, "--name", "x", "--base-dir", str(tmp_path), "--onnx"]) == 2
    assert_one_line_error(capsys, "keras-med export", "--onnx: needs tf2onnx and onnxruntime", "pip install tf2onnx")
    assert not (tmp_path / "x").exists()


def test_evaluate_and_explain_refuse_bad_flags_and_files(tiny_run, capsys, tmp_path):
    model = str(tiny_run / "checkpoints" / "best.keras")
    assert cli_main(["evaluate", "--model", model, "--labels", str(tmp_path / "labels.csv"),
                     "--images", str(tmp_path), "--batch-size", "0"]) == 2
    assert_one_line_error(capsys, "keras-med evaluate", "--batch-size: expected an integer of at least 1",
                          f"--labels {tmp_path / 'labels.csv'}: no such file")
    assert cli_main(["explain", "--model", model, str(tmp_path / "missing.png")]) == 2
    assert_one_line_error(capsys, "keras-med explain", "missing.png")
    assert cli_main(["explain", "--model", model, str(tiny_run / "image.png"), "--method", "lime"]) == 2
    assert_one_line_error(capsys, "keras-med explain", "argument --method: invalid choice: 'lime'")
    assert cli_main(["evaluate", "--model", model, "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "the following arguments are required: --labels, --images" in err


def test_predict_refuses_a_missing_model(capsys, tmp_path):
    assert cli_main(["predict", "--model", str(tmp_path / "nothing"), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "no such .keras file or SavedModel folder" in err and "Traceback" not in err


# --- the wrapper itself --------------------------------------------------------------------------
def test_divergence_exits_3_and_a_bug_keeps_its_traceback(capsys):
    def diverged(argv):
        raise RunDivergedError("the loss became nan at epoch 3; try a lower --learning-rate or --clipnorm 1")

    assert run_command("keras-med train", diverged, []) == 3
    assert_one_line_error(capsys, "keras-med train", "nan at epoch 3")

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command("keras-med train", bug, [])


# --- the real entry points -----------------------------------------------------------------------
def run_entry_point(*args: str) -> subprocess.CompletedProcess:
    # As a user starts it: TensorFlow's log level not set (keras_med.backend.quiet_tensorflow_logs).
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@pytest.mark.system
def test_entry_point_recipe_module_one_line_exit_2(tmp_path):
    """Validation imports Keras and TensorFlow: their C++ start-up lines stay off stderr, which is one line."""
    result = run_entry_point("-m", "keras_med.recipes.ham10000", "--data-dir", str(tmp_path / "missing"),
                             "--epochs", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for noise in ("I0000", "E0000", "W0000", "oneDNN", "cuInit", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr
    lines = error_lines(result.stderr, RECIPE_PROG)
    assert len(lines) == 1 and "--epochs ([train] epochs)" in lines[0] and "--data-dir" in lines[0]
    assert result.stderr.strip().splitlines() == lines


@pytest.mark.system
def test_entry_point_console_script_one_line_exit_2(tmp_path):
    result = run_entry_point("-m", "keras_med.cli", "export", "--model", str(tmp_path / "best.keras"), "--name", "x")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr, "keras-med export")
    assert len(lines) == 1 and str(tmp_path / "best.keras") in lines[0]


def test_logit_adjustment_on_a_binary_task_is_one_line_naming_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo writes its data under ./runs
    # the task is known once the table is read: the refusal comes before any model is built or trained
    code = base.main(covid_cxr.SPEC, ["--demo", "--logit-adjustment", "1", "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert_one_line_error(capsys, "python -m keras_med.recipes.covid_cxr",
                          "--logit-adjustment: only for single-label tasks with 3 or more classes")
    assert not (tmp_path / "run" / "history.csv").exists()
