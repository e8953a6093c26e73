"""keras_med.run_directory: the run files around a checkpoint, and loading it checked against them."""

from __future__ import annotations

import json

import keras
import pytest

from keras_med.errors import RunFileError
from keras_med.run_directory import RunContentError, load_trained_model, read_run_info


def save_model(path, outputs: int, activation: str):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(outputs, activation=activation, name="predictions")(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("binary_run")
    return run_dir, save_model(run_dir / "checkpoints" / "best.keras", 1, "sigmoid")


def test_run_files_are_read_beside_or_above_the_checkpoint(binary_run):
    run_dir, model_path = binary_run
    (run_dir / "class_names.json").write_text(json.dumps(["normal", "covid"]))
    (run_dir / "metrics.json").write_text(json.dumps({"thresholds": [0.3]}))
    (run_dir / "config.toml").write_text('[data]\nresize = "pad"\n')
    trained = load_trained_model(model_path)
    assert trained.run.class_names == ["normal", "covid"]
    assert trained.run.task == "binary"  # read from the model: one sigmoid output
    assert (trained.run.thresholds, trained.run.resize, trained.image_size) == ([0.3], "pad", 32)
    assert trained.name == run_dir.name
    assert read_run_info(model_path, class_names=["a", "b"]).thresholds is None  # given names drop the run's


def test_class_names_fall_back_to_metrics_json(tmp_path):
    model_path = save_model(tmp_path / "model.keras", 3, "softmax")
    with pytest.raises(RunFileError, match="found no class_names.json"):
        load_trained_model(model_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"class_names": ["a", "b", "c"], "task": "multiclass"}))
    assert load_trained_model(model_path).run.source == str(tmp_path / "metrics.json")


@pytest.mark.parametrize("content, message", [
    ({"class_names": ["normal", "covid", "pneumonia"], "task": "binary"},
     "the model has 1 output and the run directory names 3 classes"),
    ({"class_names": ["a", "b"], "task": "regression"}, "task expected one of"),
    ({"names": ["a", "b"]}, "expected a list of class names or an object with 'class_names'"),
])
def test_a_run_directory_that_does_not_fit_the_model_is_refused(tmp_path, content, message):
    model_path = save_model(tmp_path / "checkpoints" / "best.keras", 1, "sigmoid")
    (tmp_path / "class_names.json").write_text(json.dumps(content))
    with pytest.raises(RunContentError, match=message) as error:
        load_trained_model(model_path)
    assert isinstance(error.value, ValueError)


def test_torn_files_are_named(tmp_path):
    model_path = tmp_path / "best.keras"
    model_path.write_bytes(b"PK\x03\x04 torn")
    (tmp_path / "class_names.json").write_text('{"class_names": ["a", ')
    with pytest.raises(RunContentError, match="class_names.json: not valid JSON"):
        load_trained_model(model_path)
    (tmp_path / "class_names.json").write_text('["a", "b"]')
    with pytest.raises(RunContentError, match="best.keras: Keras cannot load it"):
        load_trained_model(model_path)


def test_a_relative_run_directory_is_never_joined_to_itself(tmp_path, monkeypatch):
    """`run.write_json(run.conformal_file, ...)` on `runs/x`: the file is `runs/x/trust/conformal.json`,
    not `runs/x/runs/x/trust/conformal.json`, and reading it back finds it there."""
    from keras_med.run_directory import RunDirectory

    monkeypatch.chdir(tmp_path)
    run = RunDirectory("runs/x")
    run.trust_dir.mkdir(parents=True)
    written = run.write_json(run.conformal_file, {"coverage": 0.9})
    assert written.resolve() == (tmp_path / "runs" / "x" / "trust" / "conformal.json").resolve()
    assert not (tmp_path / "runs" / "x" / "runs").exists()
    assert run.read_json(run.conformal_file) == {"coverage": 0.9}
    assert run.read_json("trust/conformal.json") == {"coverage": 0.9}
    assert RunDirectory(tmp_path / "runs" / "x").read_json("trust/conformal.json") == {"coverage": 0.9}
