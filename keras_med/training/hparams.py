"""A run's settings and final test figures in TensorBoard's HParams dashboard.

`log_run_hparams(run_dir, config, metrics)` writes, into `RUN_DIR/logs` (where the TensorBoard
callback writes `train/` and `validation/`), one HParams session: every value of the resolved
configuration, flattened to `section.key` (`model.model`, `train.learning_rate`, ...), and the
test figures of `metrics.json` as scalars `test/<name>` (`test/balanced_accuracy`, `test/macro_auc`,
`test/ece`, `test/recall/<class>`). `tensorboard --logdir runs` then lists every run in the
HParams dashboard, with those figures and the last `train/` and `validation/` epoch scalars as
metric columns, so runs can be sorted and filtered by any setting.

No experiment summary (`hparams_config`) is written per run: TensorBoard reads one of them for a
whole log folder, picked arbitrarily when several runs each wrote their own, so recipes with other
settings would lose their columns. Without one, TensorBoard builds the experiment from every run's
session (the union of their settings) and the scalars it finds.

TensorFlow-specific (`tf.summary`), like the rest of the logging: imported only when called.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOGS_FOLDER = "logs"
TEST_PREFIX = "test/"


def flatten_settings(values: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """`{"train": {"epochs": 3}}` -> `{"train.epochs": 3}`; lists, None and others become text.

    HParams values must be a bool, a number or a string; text keeps every other value readable
    and filterable (`[0.5, 0.5]`, `none`).
    """
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_settings(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is None:
            flat[name] = "none"
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def final_test_figures(metrics: dict) -> dict[str, float]:
    """The test figures of a `metrics.json` dict worth a column: headlines, ECE, per-class recall and AUC."""
    figures: dict[str, float] = {}
    for key, item in metrics.items():
        if isinstance(item, dict) and "ci95" in item and isinstance(item.get("value"), (int, float)):
            figures[key] = float(item["value"])
    calibration = metrics.get("calibration") or {}
    if isinstance(calibration.get("ece_before"), (int, float)):
        figures["ece"] = float(calibration["ece_before"])
    for name, row in (metrics.get("per_class") or {}).items():
        for column in ("recall", "auc"):
            if isinstance(row, dict) and isinstance(row.get(column), (int, float)):
                figures[f"{column}/{name}"] = float(row[column])
    return figures


def _settings_of(config) -> dict:
    if isinstance(config, dict):
        return config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config: expected a RecipeConfig or a dict of its sections, got {type(config).__name__}")


def log_run_hparams(run_dir: str | Path, config, metrics: dict, *, trial_id: str | None = None) -> Path | None:
    """Write the run's settings and test figures as an HParams session into `RUN_DIR/logs`.

    Args:
        run_dir: the run directory.
        config: the resolved `RecipeConfig` (or the dict of its sections, e.g. `config.toml` read back).
        metrics: the dict `evaluate_run` returned (the content of `metrics.json`).
        trial_id: the session's name in TensorBoard (its "Trial ID"); default: the run directory's
            last two parts (`ham10000/20250101-120000`).

    Returns:
        The folder written to, or None without the `tensorboard` package (as the TensorBoard
        callback, the run then has no logs; a warning says so).
    """
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        logger.warning("the tensorboard package is not installed: settings not logged for the HParams dashboard")
        return None
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    settings = flatten_settings(_settings_of(config))
    figures = final_test_figures(metrics)
    log_dir = Path(run_dir) / LOGS_FOLDER
    log_dir.mkdir(parents=True, exist_ok=True)
    if trial_id is None:
        trial_id = "/".join(Path(run_dir).resolve().parts[-2:])
    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        with writer.as_default():
            hp.hparams(settings, trial_id=trial_id, start_time_secs=int(time.time()))
            for name, value in figures.items():
                tf.summary.scalar(TEST_PREFIX + name, value, step=0)
        writer.flush()
    finally:
        writer.close()
    logger.info("logged %d settings and %d test figures for TensorBoard's HParams dashboard in %s",
                len(settings), len(figures), log_dir)
    return log_dir
