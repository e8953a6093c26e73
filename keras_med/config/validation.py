"""Checking a whole configuration before any work: each value against its field's rule, then the
checks that need several values, the model registry or the file system.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from keras_med.config.rules import AUTO_VALUES, auto_problem, field_problem, path_problem, where
from keras_med.errors import ConfigError


def validate_config(config, allow_auto: bool = False) -> None:
    """Raise one `ConfigError` naming every bad value of `config` (a `RecipeConfig`); see `RecipeConfig.validate`."""
    problems, bad = [], set()
    for section_name in config.SECTIONS:
        section = getattr(config, section_name)
        for spec in dataclasses.fields(section):
            value = getattr(section, spec.name)
            auto = spec.name in AUTO_VALUES and AUTO_VALUES[spec.name] == value
            if allow_auto and auto:
                continue
            problem = field_problem(value, spec) or (auto_problem(value) if auto else None)
            if problem:
                problems.append(f"{where(section_name, spec.name)}: {problem}")
                bad.add(spec.name)
    problems += cross_field_problems(config, bad, allow_auto)
    if problems:
        raise ConfigError("; ".join(problems))


def cross_field_problems(config, bad: set[str], allow_auto: bool = False) -> list[str]:
    """Checks that need several values, the model registry or the file system.

    Args:
        config: the configuration.
        bad: names of the fields already reported (their checks here are skipped).
        allow_auto: a detection step will still adapt the model settings (see `validate`).
    """
    data, model = config.data, config.model
    problems = []
    if not bad & {"val_fraction", "test_fraction"} and data.val_fraction + data.test_fraction >= 1.0:
        problems.append(f"{where('data', 'val_fraction')} + {where('data', 'test_fraction')}: expected a sum "
                        f"below 1 (some groups must be left to train on), got {data.val_fraction} + {data.test_fraction}")
    if not bad & {"model", "weights", "width"} and not (allow_auto and model.model == AUTO_VALUES["model"]):
        # With a detection step to come (allow_auto), the weights may still be adapted to the
        # model (classify: 'imagenet' becomes 'none' for a model without a pretrained backbone).
        problems += model_problems(model, name_only=allow_auto)
    # Imported here: the export package imports TensorFlow.
    from keras_med.export.metadata import is_valid_served_name

    name = config.export.name
    if "name" not in bad and name and not is_valid_served_name(name):
        problems.append(f"{where('export', 'name')}: expected letters, digits, '-', '_' or '.' "
                        f"(a folder name for TF Serving), got {name!r}")
    if bad & {"data_dir", "metadata", "split_file", "prepared", "demo"}:
        return problems
    if data.data_dir and not data.demo and not data.prepared:
        # A directory for most layouts; classify also takes a table or a MedMNIST .npz file.
        problems.append(path_problem(data.data_dir, "data", "data_dir", "directory or file"))
        if data.metadata:
            problems.append(path_problem(data.metadata, "data", "metadata", "file", inside=data.data_dir))
    if data.split_file:
        problems.append(path_problem(data.split_file, "data", "split_file", "file"))
    if data.prepared and not (Path(data.prepared).expanduser() / "manifest.json").is_file():
        problems.append(f"{where('data', 'prepared')}: expected a folder written by `keras-med prepare` "
                        f"(with manifest.json), got {data.prepared!r}")
    return [problem for problem in problems if problem]



def model_problems(model, name_only: bool = False) -> list[str]:
    """The model's own rules (`keras_med.models.registry.model_argument_problems`), named by flag and key."""
    # Imported here: the registry imports Keras, which `--help` should not wait for.
    from keras_med.models.registry import model_argument_problems

    return [f"{where('model', argument)}: {problem}" for argument, problem in
            model_argument_problems(model.model, model.weights, model.width, name_only=name_only)]
