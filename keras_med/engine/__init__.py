"""The recipe engine: what every recipe does, once (files -> split -> model -> fit -> evaluate -> export).

- `spec`: `RecipeSpec`, what a recipe declares (defaults, options, loader, demo data).
- `command`: the recipe command line, resolving the configuration once and dispatching to one
  run, `--members` or `--cv`.
- `run`: `run_recipe`, one model trained, evaluated and exported (composition only).
- `ensemble`: the ensemble logic `--cv` (`cross_validation`) and `--members` (`members`) share.
- `trust`: the out-of-distribution guard and conformal sets fitted after training.
- `lr_find`, `prepare`: the `keras-med lr-find` and `keras-med prepare` commands.

The problems themselves live in `keras_med.recipes`; data preparation in `keras_med.data.preparation`.
"""
