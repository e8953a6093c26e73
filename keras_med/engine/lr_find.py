"""`keras-med lr-find --recipe NAME ...`: the learning-rate finder on a recipe's own data and model."""

from __future__ import annotations

import json

from keras_med.atomic import write_text_atomic
from keras_med.command_line import CommandParser, HelpFormatter
from keras_med.engine.command import build_parser, resolve_run_config
from keras_med.engine.spec import RecipeSpec
from keras_med.errors import ConfigError


def check_sweep(min_lr: float, max_lr: float, steps: int) -> None:
    """The sweep's own flags: 0 < --min-lr < --max-lr, --steps at least 2 (a slope needs two points)."""
    problems = []
    if not min_lr > 0:
        problems.append(f"--min-lr: expected a learning rate above 0, got {min_lr}")
    if not max_lr > min_lr:
        problems.append(f"--max-lr: expected a learning rate above --min-lr {min_lr}, got {max_lr}")
    if steps < 2:
        problems.append(f"--steps: expected an integer of at least 2, got {steps}")
    if problems:
        raise ConfigError("; ".join(problems))


def run_lr_find(spec: RecipeSpec, argv: list[str]) -> int:
    """Parse `argv` for `spec`, sweep the learning rate, write lr_find.png/json; returns the exit status."""
    parser = build_parser(spec, CommandParser(
        prog=f"keras-med lr-find --recipe {spec.name}",
        description="Exponential learning-rate sweep on the recipe's training split; writes lr_find.png.",
        formatter_class=HelpFormatter), cross_validation_flags=False)
    parser.add_argument("--min-lr", type=float, default=1e-7, help="First learning rate of the sweep.")
    parser.add_argument("--max-lr", type=float, default=1.0, help="Last learning rate of the sweep.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps the sweep takes.")
    args = parser.parse_args(argv)
    check_sweep(args.min_lr, args.max_lr, args.steps)
    # Also selects the Keras backend, before anything below imports Keras.
    config = resolve_run_config(spec, args)
    from keras_med.data.preparation import prepare_data, stage
    from keras_med.engine.run import announce_device, build_model, make_run_dir
    from keras_med.training import compile_model, find_learning_rate, setup_runtime

    out = make_run_dir(config, args.run_dir)
    strategy = setup_runtime(config.train)
    announce_device()
    prepared = prepare_data(spec, config, out)
    model = build_model(config, prepared.table, strategy)
    with strategy.scope():
        compile_model(model, config.train, task=prepared.table.task, learning_rate=args.min_lr,
                      label_weights=prepared.label_weights, class_priors=prepared.class_priors)
    stage("sweeping the learning rate from %g to %g over %d steps", args.min_lr, args.max_lr, args.steps)
    result = find_learning_rate(model, prepared.train_ds, min_lr=args.min_lr, max_lr=args.max_lr,
                                steps=args.steps, plot_path=out / "lr_find.png")
    suggested = result.suggested_lr
    write_text_atomic(out / "lr_find.json", json.dumps({"suggested_learning_rate": float(suggested)}, indent=2))
    stage("suggested learning rate %.2e (plot: %s)", suggested, out / "lr_find.png")
    return 0
