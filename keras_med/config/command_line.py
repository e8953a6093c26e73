"""The configuration on the command line: one flag per field (`--image-size` sets `[data] image_size`),
and the resolution defaults -> demo overrides -> `--config` TOML -> flags.
"""

from __future__ import annotations

import argparse
import dataclasses

from keras_med.config.rules import flag_name
from keras_med.config.schema import RECIPE_OPTIONS, RecipeConfig, drop_unused_options


def add_config_arguments(parser: argparse.ArgumentParser, defaults: RecipeConfig, options=RECIPE_OPTIONS,
                         sections: dict | None = None) -> None:
    """Add one flag per configuration field the recipe uses; each help states the recipe's own default once.

    Args:
        parser: the parser to add `--config`, `--output-dir` and the sections' flags to.
        defaults: the recipe's default configuration.
        options: the recipe options (`RECIPE_OPTIONS`) that get a flag; the others are left out.
        sections: the fields a command reads, when not all: `{section: None (all) or (names)}`,
            e.g. `{"data": None, "train": ("seed",)}` for `keras-med prepare`.
    """
    parser.add_argument("--config", metavar="TOML", help="TOML file whose values replace the recipe's defaults "
                        "(flags still win). E.g. recipes/ham10000.toml.")
    parser.add_argument("--output-dir", metavar="DIR", help=f"Where run directories go (default: {defaults.output_dir}).")
    for section_name in RecipeConfig.SECTIONS:
        if sections is not None and section_name not in sections:
            continue
        section = getattr(defaults, section_name)
        names = None if sections is None else sections[section_name]
        group = parser.add_argument_group(f"[{section_name}]")
        for spec in dataclasses.fields(section):
            if spec.metadata.get("recipe_option") and spec.name not in options:
                continue
            if names is not None and spec.name not in names:
                continue
            default = getattr(section, spec.name)
            help_text = spec.metadata.get("help", "")
            if "(default:" not in help_text:  # some say what an empty default means instead
                help_text += f" (default: {default!r})"
            # argparse's own default stays None ("not given"), so a --config file's value is not
            # overridden by it; the help states the recipe's default instead (HelpFormatter).
            dest = f"{section_name}.{spec.name}"
            if isinstance(default, bool):
                group.add_argument(flag_name(spec.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(flag_name(spec.name), dest=dest, type=type(default), default=None,
                                   choices=spec.metadata.get("choices"), metavar=_metavar(spec), help=help_text)


def _metavar(spec: dataclasses.Field) -> str | None:
    """`{a,b}` for choices (argparse's own), else the field's name: `--image-size IMAGE_SIZE`."""
    return None if spec.metadata.get("choices") else spec.name.upper()


def config_from_arguments(args: argparse.Namespace, defaults: RecipeConfig, demo_overrides: dict | None = None,
                          options=RECIPE_OPTIONS) -> RecipeConfig:
    """Recipe defaults (with the demo's overrides under `--demo`), then the --config file, then flags.

    Args:
        args: parsed flags of `add_config_arguments` (`--config`, `--output-dir`, `section.field`).
        defaults: the recipe's default configuration.
        demo_overrides: sections `--demo` changes (`RecipeSpec.demo_overrides`); flags still win.
        options: the recipe options the recipe takes; others set by the --config file are reset to
            their defaults with one warning (`drop_unused_options`).

    Returns:
        The resolved configuration, not yet validated (see `RecipeConfig.validate`).
    """
    config = defaults
    if demo_overrides and getattr(args, "data.demo", None):
        config = RecipeConfig.from_dict(demo_overrides, base=config, source="demo defaults")
    if getattr(args, "config", None):
        config = RecipeConfig.load(args.config, base=config)
        config = drop_unused_options(dataclasses.replace(config, recipe=defaults.recipe), options, args.config)
    overrides: dict = {}
    for dest, value in vars(args).items():
        if value is None or "." not in dest:
            continue
        section, name = dest.split(".", 1)
        overrides.setdefault(section, {})[name] = value
    if getattr(args, "output_dir", None):
        overrides["output_dir"] = args.output_dir
    return RecipeConfig.from_dict(overrides, base=config, source="command line")
