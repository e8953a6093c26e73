"""`keras-med`: one console script for every stage.

    keras-med train --recipe ham10000 --data-dir DIR [recipe flags]   (= python -m keras_med.recipes.ham10000)
    keras-med lr-find --recipe ham10000 --data-dir DIR
    keras-med prepare --recipe chexnet --data-dir DIR --image-size 224 --out SHARDS   (then train --prepared SHARDS)
    keras-med evaluate --model best.keras --labels LABELS.csv --images DIR [--tta flips]
    keras-med explain --model best.keras IMAGE... [--method gradcam++] [--class mel]
    keras-med export --model best.keras --name ham10000 [--version N]
    keras-med predict --model saved_models/ham10000/1 IMAGE... [--json]
    keras-med compare RUN_A RUN_B          (runs or evaluate folders, paired by image: keras_med.comparison)
    keras-med calibrate ...                (a site's own thresholds: keras_med.export.command_calibrate)
    keras-med monitor ...                  (a prediction log's answers and drift: keras_med.monitoring)
    keras-med models
    keras-med recipes
    keras-med app --model saved_models/ham10000 [--port 7860]

Each subcommand imports its room lazily so `--help` answers at once. The recipes come from their
registry (`keras_med.recipes.registry`), not from a list here.
"""

from __future__ import annotations

import importlib
import logging
import sys

from keras_med.command_line import CommandParser, HelpFormatter, add_verbose_flag, run_command
from keras_med.recipes.registry import available_recipes, recipe_spec

log = logging.getLogger("keras_med")


def _split_recipe(argv: list[str], prog: str) -> tuple[str, list[str]]:
    """Pull `--recipe NAME` out of argv so the rest can go to that recipe's own parser.

    Without `--recipe`, the `recipe` key of the `--config` file names it (a run's config.toml, or
    recipes/chexnet.toml); else `--data-dir` means the general `classify` recipe (which detects
    the layout), and anything else the `ham10000` recipe as before.
    """
    parser = CommandParser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("--recipe", default=None, choices=available_recipes())
    parser.add_argument("--config", default=None)
    known, _ = parser.parse_known_args(argv)
    rest = _without_recipe_flag(argv)
    if known.recipe:
        return known.recipe, rest
    named = _recipe_of_config_file(known.config)
    if named:
        return named, rest
    has_data = any(arg == "--data-dir" or arg.startswith("--data-dir=") for arg in rest)
    return ("classify" if has_data else "ham10000"), rest


def _without_recipe_flag(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--recipe":
            skip = True
        elif not arg.startswith("--recipe="):
            rest.append(arg)
    return rest


def _recipe_of_config_file(path: str | None) -> str | None:
    """The registered recipe a TOML file's `recipe` key names, or None (a bad file is reported later)."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            name = tomllib.load(handle).get("recipe")
    except (TypeError, OSError, tomllib.TOMLDecodeError):
        return None
    return name if name in available_recipes() else None


def cmd_train(argv: list[str]) -> int:
    from keras_med.engine.command import build_parser, run_from_arguments

    name, rest = _split_recipe(argv, "keras-med train")
    spec = recipe_spec(name)
    parser = build_parser(spec, CommandParser(
        prog=f"keras-med train --recipe {name}", description=spec.description,
        formatter_class=HelpFormatter))
    return run_from_arguments(spec, parser.parse_args(rest))


def cmd_lr_find(argv: list[str]) -> int:
    from keras_med.engine.lr_find import run_lr_find

    name, rest = _split_recipe(argv, "keras-med lr-find")
    return run_lr_find(recipe_spec(name), rest)


def cmd_prepare(argv: list[str]) -> int:
    from keras_med.engine.prepare import run_prepare

    name, rest = _split_recipe(argv, "keras-med prepare")
    return run_prepare(recipe_spec(name), rest)


def cmd_models(argv: list[str]) -> int:
    parser = CommandParser(prog="keras-med models", description=(
        "List the registered model names, one per line on stdout. Any KerasHub image classifier "
        "preset also works as --model kerashub:PRESET or kerashub:/path/to/preset (said on stderr)."))
    parser.add_argument("--details", action="store_true", help=(
        "A table instead: each model's backbone parameters and whether its ImageNet weights are available "
        "offline here (builds every model: about a minute of CPU)."))
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    from keras_med.models import available_models

    if args.details:
        from keras_med.models.catalog import format_catalog, model_catalog

        sys.stdout.write(format_catalog(model_catalog()))
        return 0
    for name in available_models():
        sys.stdout.write(name + "\n")
    # stderr, so that stdout stays one registered name per line for scripts.
    sys.stderr.write("also: kerashub:PRESET or kerashub:/path/to/preset (a KerasHub image classifier backbone)\n")
    return 0


def cmd_recipes(argv: list[str]) -> int:
    parser = CommandParser(prog="keras-med recipes", description="List the registered recipes, one per line.")
    add_verbose_flag(parser)
    parser.parse_args(argv)
    names = available_recipes()
    width = max(len(name) for name in names)
    for name in names:
        sys.stdout.write(f"{name:<{width}}  {recipe_spec(name).description}\n")
    return 0


def _mounted(module: str, prog: str):
    """Subcommands owned by other rooms expose `add_arguments(parser)` and `run(args)`."""

    def command(argv: list[str]) -> int:
        target = importlib.import_module(module)
        parser = CommandParser(prog=f"keras-med {prog}", description=target.__doc__.splitlines()[0],
                               formatter_class=HelpFormatter)
        target.add_arguments(parser)
        add_verbose_flag(parser)
        return int(target.run(parser.parse_args(argv)) or 0)

    return command


COMMANDS = {
    "train": (cmd_train, "Train, evaluate and export a recipe (same flags as python -m keras_med.recipes.<name>)."),
    "lr-find": (cmd_lr_find, "Sweep the learning rate exponentially and plot loss against it."),
    "prepare": (cmd_prepare, "Write a recipe's images as sharded TFRecords of resized images (train with --prepared)."),
    "evaluate": (_mounted("keras_med.evaluation.command", "evaluate"),
                 "Score trained model(s) on a labelled external test set (several --model: an ensemble)."),
    "explain": (_mounted("keras_med.explain.command", "explain"), "Grad-CAM / Grad-CAM++ overlays for images."),
    "export": (_mounted("keras_med.export.command_export", "export"),
               "Export a .keras model as a SavedModel for TF Serving (and TFLite / ONNX)."),
    "predict": (_mounted("keras_med.export.command_predict", "predict"),
                "Predict images with a SavedModel, a .keras file or a TF Serving server."),
    "compare": (_mounted("keras_med.comparison.command", "compare"),
                "Compare runs on their shared test images: paired intervals, McNemar, DeLong."),
    "models": (cmd_models, "List the registered model names."),
    "recipes": (cmd_recipes, "List the registered recipes (name and description)."),
    "app": (_mounted("keras_med.app.command", "app"), "Serve a web page to try a model on images (Gradio)."),
    "calibrate": (_mounted("keras_med.export.command_calibrate", "calibrate"),
                  "Re-fit a served model's guard (and sets) on a site's own images: a new version."),
    "monitor": (_mounted("keras_med.monitoring.command", "monitor"),
                "Watch prediction logs for drift against the validation split; exit 1 on an alert."),
}


def main(argv: list[str] | None = None) -> int:
    """`keras-med COMMAND ...`; a user's mistake prints one line and returns 2 (see keras_med.command_line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: keras-med COMMAND [options]   (keras-med COMMAND --help for its options)", "", "commands:"]
        lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        sys.stdout.write("\n".join(lines) + "\n")
        if argv and argv[0] not in ("-h", "--help"):
            sys.stderr.write(f"keras-med: error: unknown command '{argv[0]}'; expected one of {list(COMMANDS)}\n")
            return 2
        return 0 if argv else 2
    command, _ = COMMANDS[argv[0]]
    return run_command(f"keras-med {argv[0]}", command, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
