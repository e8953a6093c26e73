"""The recipe command line: `python -m keras_med.recipes.<name>` and `keras-med train`.

`resolve_run_config` is the one way every recipe-level command (train, lr-find, prepare) turns
defaults, demo overrides, a TOML file and flags into a validated configuration, with the
recipe's `auto` values resolved once; `run_from_arguments` then runs one model, an ensemble of
`--members` or `--cv` folds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from keras_med.command_line import CommandParser, HelpFormatter, add_verbose_flag, run_command
from keras_med.config import RecipeConfig, add_config_arguments, config_from_arguments
from keras_med.engine import cross_validation
from keras_med.engine.run import run_recipe
from keras_med.engine.spec import RecipeSpec
from keras_med.errors import ConfigError


def build_parser(spec: RecipeSpec, parser: argparse.ArgumentParser | None = None, *,
                 sections: dict | None = None, cross_validation_flags: bool = True) -> argparse.ArgumentParser:
    """The recipe's flags (one per configuration field, `--config`, `--run-dir`, `--verbose`) on `parser`.

    Args:
        spec: the recipe; its own `options` get flags, other recipes' do not.
        parser: the parser to add to (default: `python -m keras_med.recipes.<name>`'s).
        sections: only these configuration fields (see `keras_med.config.add_config_arguments`),
            and no `--run-dir`, for a command that trains nothing (`keras-med prepare`).
        cross_validation_flags: add `--cv K` and `--cv-export` (commands that train and evaluate
            models; not `keras-med lr-find` or `prepare`).
    """
    parser = parser or CommandParser(
        prog=f"python -m keras_med.recipes.{spec.name}", description=spec.description,
        formatter_class=HelpFormatter)
    add_config_arguments(parser, spec.defaults, spec.options, sections)
    if sections is None:
        parser.add_argument("--run-dir", help="Exact run directory to use; re-running with the same one resumes "
                            "a killed run from its last finished epoch (default: <output-dir>/<recipe>/<timestamp>).")
    add_verbose_flag(parser)
    if cross_validation_flags and sections is None:
        cross_validation.add_arguments(parser)
    return parser


def main(spec: RecipeSpec, argv: list[str] | None = None) -> int:
    """`python -m keras_med.recipes.<name>`: parse, validate, train; a user's mistake is one line, exit 2."""
    parser = build_parser(spec)
    return run_command(parser.prog, lambda rest: run_from_arguments(spec, parser.parse_args(rest)),
                       sys.argv[1:] if argv is None else argv)


def resolve_run_config(spec: RecipeSpec, args: argparse.Namespace, *, prepared_allowed: bool = True) -> RecipeConfig:
    """The run's configuration: the recipe's defaults (and demo overrides), `--config`, flags; validated.

    Every recipe-level command (train, lr-find, prepare) resolves its configuration here, before
    touching any data, in this order: defaults -> demo overrides (`--demo`) -> the TOML file ->
    flags -> validation -> the recipe's `resolve_auto_values` (then validated again).

    Args:
        spec: the recipe.
        args: the parsed flags of `build_parser`.
        prepared_allowed: whether `--prepared DIR` is a data source for this command.

    Raises:
        ConfigError: a bad value, or no data source (after printing where the recipe's data is).
    """
    from keras_med.backend import select_backend

    detects = spec.resolve_auto_values is not None
    config = config_from_arguments(args, spec.defaults, spec.demo_overrides, spec.options)
    # Before validation imports Keras (the model registry): Keras fixes its backend when imported.
    select_backend(config.train.backend)
    config = config.validate(allow_auto=detects)
    if not config.data.data_dir and not config.data.demo and not (prepared_allowed and config.data.prepared):
        sys.stderr.write(spec.data_help.strip() + "\n")
        sources = "--data-dir DIR, --demo" + (" or --prepared DIR" if prepared_allowed else "")
        raise ConfigError(f"no data: expected {sources}")
    config = dataclasses.replace(config, recipe=spec.name)
    if detects:
        # The recipe's detection step looks at the data's layout (not its pixels) and the machine.
        config = spec.resolve_auto_values(config).validate()
    return config


def run_from_arguments(spec: RecipeSpec, args: argparse.Namespace) -> int:
    """Resolve and validate the configuration (once), then run one model, `--members` or `--cv`;
    returns the exit status."""
    cross_validation.check_arguments(args)
    config = resolve_run_config(spec, args)
    if args.cv and config.train.members > 1:
        raise ConfigError("--members: not with --cv (each fold would be an ensemble); use one of them")
    # Imported here: it imports the trust step (Keras), which `--help` does not need.
    from keras_med.engine.members import run_members

    if args.cv:
        cross_validation.run_cross_validation(spec, config, args.cv, run_dir=args.run_dir, export=args.cv_export)
    elif config.train.members > 1:
        run_members(spec, config, run_dir=args.run_dir)
    else:
        run_recipe(spec, config, run_dir=args.run_dir)
    return 0
