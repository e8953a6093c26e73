"""`RecipeSpec`: what a recipe declares; the engine does the rest.

A recipe module (`keras_med.recipes.ham10000`, ...) is a `RecipeSpec`, registered by name
(`keras_med.recipes.registry`): its default configuration, the recipe options it takes, how to
load its data into an `ImageTable`, how to make its demo data, and where the real data is
published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from keras_med.config import RecipeConfig, check_recipe_options


@dataclass
class RecipeSpec:
    """A recipe: configuration plus the few things that differ between problems.

    Args:
        name: recipe name; also the served model's name and the run folder.
        description: one line for `--help` and `keras-med recipes`.
        defaults: the recipe's default configuration.
        options: the recipe options (`keras_med.config.RECIPE_OPTIONS`: `views`, `label_column`,
            ...) its loader reads; only these become its flags, and a TOML file's others are
            ignored with a warning.
        load_table: `(data_dir, config) -> ImageTable` for the real layout.
        write_demo: `(out_dir, config) -> data_dir` writing synthetic data in the real layout.
        data_help: where the real data is published and how to point at it.
        group_name: what a group is (lesion, patient), for messages and reports.
        demo_overrides: configuration sections that `--demo` changes (a small model that learns the
            synthetic set in minutes on a CPU, with no weights to download); flags still win.
        extra_evaluation: optional `(run_dir, metrics, data, model, y_prob, config) -> None` for
            recipe-specific tables and plots; `data` is the `PreparedData`, `y_prob` the
            `{"val", "test"}` probabilities the metrics came from.
        resolve_auto_values: optional `config -> config` run before anything else, turning the
            recipe's `auto` values into ones that fit the data and the machine (classify).
    """

    name: str
    description: str
    defaults: RecipeConfig
    load_table: Callable
    write_demo: Callable
    data_help: str
    group_name: str = "group"
    demo_overrides: dict = field(default_factory=dict)
    extra_evaluation: Callable | None = None
    resolve_auto_values: Callable | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self):
        self.options = check_recipe_options(self.options)
