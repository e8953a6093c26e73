"""Recipe configuration: typed dataclasses that load from TOML, take CLI flags, and are saved per run.

- `schema`: the five sections (`data`, `model`, `train`, `evaluation`, `export`) and `RecipeConfig`,
  each field with its flag's help, choices and rule; the recipe options.
- `rules`: the rules of one value and how a message names a setting (`--epochs ([train] epochs)`).
- `validation`: `RecipeConfig.validate()`'s checks, all problems at once, before any data is read.
- `toml`: reading `--config FILE` and writing a run's `config.toml`.
- `command_line`: one flag per field, and the resolution defaults -> demo -> TOML -> flags.
"""

from keras_med.config.command_line import add_config_arguments, config_from_arguments
from keras_med.config.schema import (RECIPE_OPTIONS, TABLE_OPTIONS, DataConfig, EvaluationConfig, ExportConfig,
                                     ModelConfig, RecipeConfig, TrainConfig, check_recipe_options, drop_unused_options)

__all__ = ["RECIPE_OPTIONS", "TABLE_OPTIONS", "DataConfig", "EvaluationConfig", "ExportConfig", "ModelConfig",
           "RecipeConfig", "TrainConfig", "add_config_arguments", "check_recipe_options", "config_from_arguments",
           "drop_unused_options"]
