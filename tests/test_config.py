"""Configuration: TOML round trip, flags over file over defaults, clear errors."""

import argparse

import pytest

from keras_med.config import RecipeConfig, add_config_arguments, config_from_arguments


def parse(argv, defaults=None):
    defaults = defaults or RecipeConfig()
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, defaults)
    return config_from_arguments(parser.parse_args(argv), defaults)


def test_toml_round_trip(tmp_path):
    config = RecipeConfig()
    config.data.image_size = 96
    config.train.finetune_learning_rate = 3e-5
    config.model.weights = "/some/file.weights.h5"
    config.save(tmp_path / "config.toml")
    again = RecipeConfig.load(tmp_path / "config.toml")
    assert again == config


def test_flags_win_over_file_which_wins_over_defaults(tmp_path):
    (tmp_path / "x.toml").write_text('[data]\nimage_size = 160\nbatch_size = 8\n[train]\nepochs = 3\n')
    config = parse(["--config", str(tmp_path / "x.toml"), "--image-size", "96", "--no-class-weights",
                    "--output-dir", str(tmp_path / "runs")])
    assert config.data.image_size == 96
    assert config.data.batch_size == 8
    assert config.train.epochs == 3
    assert config.data.class_weights is False
    assert config.output_dir == str(tmp_path / "runs")
    assert config.model.model == RecipeConfig().model.model


def test_integer_in_toml_is_accepted_for_a_float_field(tmp_path):
    (tmp_path / "x.toml").write_text("[train]\nlearning_rate = 1\n")
    assert RecipeConfig.load(tmp_path / "x.toml").train.learning_rate == 1.0


@pytest.mark.parametrize("text, message", [
    ("[data]\nimage_sise = 3\n", "unknown key 'image_sise' in [data]"),
    ("[data]\nimage_size = 'big'\n", "[data] image_size: expected int"),
    ("[train]\noptimizer = 'lion'\n", "expected one of"),
    ("[trian]\nepochs = 1\n", "unknown key or section 'trian'"),
    ("[data\n", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        RecipeConfig.load(path)
    assert message in str(error.value)
    if "TOML" not in message:
        assert str(path) in str(error.value)


def test_shipped_recipe_files_load():
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.toml"))
    assert files, "recipes/*.toml are missing"
    for path in files:
        RecipeConfig.load(path)
