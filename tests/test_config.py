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


# --- recipe options, old config files, the one resolution path ------------------------------------
def test_an_old_run_config_loads_and_options_the_recipe_does_not_take_are_ignored_with_one_warning(tmp_path, caplog):
    from keras_med.engine.command import build_parser, resolve_run_config
    from keras_med.recipes import ham10000

    # A config.toml as runs wrote it before options belonged to recipes: every key, some set for
    # another recipe (covid_cxr's views, a table's label column).
    old = RecipeConfig()
    old.recipe, old.data.views, old.data.label_column, old.train.epochs = "ham10000", "PA", "dx", 7
    old.save(tmp_path / "config.toml")
    args = build_parser(ham10000.SPEC).parse_args(["--config", str(tmp_path / "config.toml"), "--demo"])
    with caplog.at_level("WARNING", logger="keras_med"):
        config = resolve_run_config(ham10000.SPEC, args)
    assert config.train.epochs == 7
    assert (config.data.views, config.data.label_column) == (RecipeConfig().data.views, "")
    warnings = [record.getMessage() for record in caplog.records if "not used by" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert "[data] label_column, [data] views are not used by the ham10000 recipe; ignored" in warnings[0]


def test_each_recipe_shows_only_its_own_options_and_each_default_once():
    from keras_med.engine.command import build_parser
    from keras_med.recipes.registry import recipe_spec

    expected = {"ham10000": set(), "covid_cxr": {"--views", "--negatives", "--metadata"},
                "chexnet": {"--metadata", "--label-column", "--image-column", "--group-column", "--no-finding"}}
    every = {"--views", "--negatives", "--metadata", "--label-column", "--image-column", "--group-column",
             "--no-finding", "--layout", "--modality", "--label-separator", "--group-pattern", "--dicom-tags"}
    for name, own in expected.items():
        parser = build_parser(recipe_spec(name))
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert flags & every == own, name
        assert {"--data-dir", "--epochs", "--config", "--prepared"} <= flags
        help_text = parser.format_help()
        entries = help_text.split("\n  -")
        assert all(entry.count("(default:") <= 1 for entry in entries), [e for e in entries if e.count("(default:") > 1]
        assert "(default: None)" not in help_text
    assert "--dicom-tags" in build_parser(recipe_spec("classify")).format_help()


def test_a_recipe_option_name_must_exist():
    from keras_med.engine.spec import RecipeSpec
    from keras_med.recipes import ham10000

    with pytest.raises(ValueError, match="options: expected names among"):
        RecipeSpec(name="x", description="x", defaults=RecipeConfig(), load_table=ham10000.load_table,
                   write_demo=ham10000.write_demo, data_help="", options=("view",))


def test_recipes_are_registered_and_listed_one_line_each(capsys):
    from keras_med.cli import main as cli_main
    from keras_med.recipes.registry import available_recipes, recipe_spec

    assert {"ham10000", "chexnet", "covid_cxr", "classify"} <= set(available_recipes())
    assert cli_main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == available_recipes()
    assert any(line.startswith("ham10000 ") and recipe_spec("ham10000").description in line for line in lines)
    with pytest.raises(ValueError, match="keras-med recipes lists them"):
        recipe_spec("mnist")


@pytest.mark.parametrize("command", ["train", "lr-find", "prepare"])
def test_train_lr_find_and_prepare_resolve_the_same_way(command, tmp_path, capsys):
    """Bad TOML is one line for each; lr-find takes --prepared like train, prepare has no such flag."""
    from keras_med.cli import main as cli_main

    (tmp_path / "bad.toml").write_text("[data\n")
    extra = ["--out", str(tmp_path / "out")] if command == "prepare" else []
    assert cli_main([command, "--demo", "--config", str(tmp_path / "bad.toml"), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"keras-med {command}: error: {tmp_path / 'bad.toml'}: not valid TOML" in err
    assert cli_main([command, "--prepared", str(tmp_path), *extra]) == 2
    expected = ("unrecognized arguments: --prepared" if command == "prepare" else
                "--prepared ([data] prepared): expected a folder written by `keras-med prepare`")
    assert expected in capsys.readouterr().err


def test_a_config_file_names_its_recipe_when_no_recipe_flag_is_given(tmp_path):
    from keras_med.cli import _split_recipe

    (tmp_path / "run.toml").write_text('recipe = "covid_cxr"\n[data]\nviews = "PA"\n')
    config = ["--config", str(tmp_path / "run.toml")]
    assert _split_recipe([*config, "--demo"], "keras-med train") == ("covid_cxr", [*config, "--demo"])
    assert _split_recipe(["--recipe", "chexnet", *config], "keras-med train") == ("chexnet", config)
    assert _split_recipe(["--data-dir", "x"], "keras-med train") == ("classify", ["--data-dir", "x"])
    assert _split_recipe(["--config", str(tmp_path / "none.toml")], "keras-med train")[0] == "ham10000"
