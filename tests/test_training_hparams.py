"""TensorBoard HParams logging: a run's settings and test figures, read back from the event files."""

from __future__ import annotations

import pytest

from keras_med.config import RecipeConfig
from keras_med.training.hparams import final_test_figures, flatten_settings, log_run_hparams

METRICS = {
    "task": "multiclass", "balanced_accuracy": {"value": 0.71, "ci95": [0.65, 0.77]},
    "macro_auc": {"value": 0.93, "ci95": None}, "accuracy": {"value": None, "ci95": None},
    "calibration": {"ece_before": 0.042, "ece_after": 0.02},
    "per_class": {"mel": {"recall": 0.55, "auc": 0.88, "support": 40}, "nv": {"recall": 0.9, "auc": None}},
}


def read_back(log_dir):
    """The HParams session's settings and the scalars of the event files in `log_dir` (not its subfolders)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    settings = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                for name, value in session.hparams.items()}
    scalars = {tag: float(tensor_util.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto))
               for tag in accumulator.Tags()["tensors"] if tag.startswith("test/")}
    return session, settings, scalars


def test_settings_are_flattened_to_hparams_values():
    flat = flatten_settings({"train": {"epochs": 3, "mixed": True, "members": None}, "data": {"sizes": [1, 2]}})
    assert flat == {"train.epochs": 3, "train.mixed": True, "train.members": "none", "data.sizes": "[1, 2]"}


def test_test_figures_take_headlines_ece_and_per_class_values():
    assert final_test_figures(METRICS) == {"balanced_accuracy": 0.71, "macro_auc": 0.93, "ece": 0.042,
                                     "recall/mel": 0.55, "auc/mel": 0.88, "recall/nv": 0.9}


def test_run_settings_and_test_figures_reach_the_hparams_plugin(tmp_path):
    config = RecipeConfig()
    config.model.model = "mobilenetv2"
    config.train.learning_rate = 0.003

    log_dir = log_run_hparams(tmp_path / "run", config, METRICS, trial_id="run-1")

    assert log_dir == tmp_path / "run" / "logs"
    session, settings, scalars = read_back(log_dir)
    assert session.group_name == "run-1"
    assert settings["model.model"] == "mobilenetv2"
    assert settings["train.learning_rate"] == pytest.approx(0.003)
    assert settings["recipe"] == config.recipe
    assert len(settings) == len(flatten_settings(config.to_dict()))
    assert scalars == pytest.approx({"test/balanced_accuracy": 0.71, "test/macro_auc": 0.93, "test/ece": 0.042,
                                     "test/recall/mel": 0.55, "test/auc/mel": 0.88, "test/recall/nv": 0.9})


def test_the_trial_is_named_after_the_run_directory(tmp_path):
    run_dir = tmp_path / "ham10000" / "20250101-120000"
    log_run_hparams(run_dir, {"model": {"model": "custom_cnn"}}, {"macro_auc": {"value": 0.8, "ci95": None}})
    session, settings, scalars = read_back(run_dir / "logs")
    assert session.group_name == "ham10000/20250101-120000"
    assert settings == {"model.model": "custom_cnn"} and scalars == {"test/macro_auc": pytest.approx(0.8)}


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch, caplog):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real_find_spec(name, *args))
    assert log_run_hparams(tmp_path / "run", {"model": {"model": "x"}}, METRICS) is None
    assert not (tmp_path / "run" / "logs").exists()
    assert "tensorboard package is not installed" in caplog.text
