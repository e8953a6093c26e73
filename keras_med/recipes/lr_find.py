"""`keras-med lr-find --recipe NAME ...`: the learning-rate finder on a recipe's own data and model."""

from __future__ import annotations

import argparse
import json

from keras_med.recipes.base import (RecipeSpec, build_model, build_parser, configure_logging,
                                    make_run_dir, prepare_data, stage)
from keras_med.config import RecipeConfig, config_from_arguments


def run_lr_find(spec: RecipeSpec, argv: list[str]) -> int:
    parser = build_parser(spec, argparse.ArgumentParser(
        prog=f"keras-med lr-find --recipe {spec.name}",
        description="Exponential learning-rate sweep on the recipe's training split; writes lr_find.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    parser.add_argument("--min-lr", type=float, default=1e-7, help="First learning rate of the sweep.")
    parser.add_argument("--max-lr", type=float, default=1.0, help="Last learning rate of the sweep.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps the sweep takes.")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    defaults = spec.defaults
    if getattr(args, "data.demo", None):
        defaults = RecipeConfig.from_dict(spec.demo_overrides, base=defaults, source="demo defaults")
    config = config_from_arguments(args, defaults)
    if not config.data.data_dir and not config.data.demo:
        parser.error("give --data-dir DIR or --demo")

    from keras_med.backend import select_backend

    select_backend(config.train.backend)
    from keras_med.training import compile_model, find_learning_rate, setup_runtime

    out = make_run_dir(config, args.run_dir)
    strategy = setup_runtime(config.train)
    prepared = prepare_data(spec, config, out)
    model = build_model(config, prepared.table, strategy)
    with strategy.scope():
        compile_model(model, config.train, task=prepared.table.task, learning_rate=args.min_lr)
    stage("sweeping the learning rate from %g to %g over %d steps", args.min_lr, args.max_lr, args.steps)
    result = find_learning_rate(model, prepared.train_ds, min_lr=args.min_lr, max_lr=args.max_lr,
                                steps=args.steps, plot_path=out / "lr_find.png")
    suggested = result.suggested_lr
    (out / "lr_find.json").write_text(json.dumps({"suggested_learning_rate": float(suggested)}, indent=2))
    stage("suggested learning rate %.2e (plot: %s)", suggested, out / "lr_find.png")
    return 0
