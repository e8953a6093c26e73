"""The record of a finished training in the run directory, so a re-run does not train again.

`fit_model` writes `training_done.json` atomically once the best weights and the history are
final, and only then removes the resume state. A run killed later (during evaluation or export)
and started again with the same run directory finds the record, loads `checkpoints/best.keras`
and goes straight on to evaluation and export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from keras_med.atomic import write_text_atomic
from keras_med.errors import ConfigError
from keras_med.run_directory import TRAINING_RECORD
from keras_med.training.divergence import Divergence

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class TrainingOutcome:
    """How a finished training ended.

    Args:
        best_checkpoint: Whether `checkpoints/best.keras` holds a good (finite) model.
        divergence: Where training diverged, or None.
        settings: The `model` and `train` configuration sections it was trained with.
    """

    best_checkpoint: bool
    divergence: Divergence | None = None
    settings: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"best_checkpoint": self.best_checkpoint,
                "divergence": None if self.divergence is None else self.divergence.to_dict(),
                "settings": self.settings}


def training_settings(config) -> dict:
    """The configuration sections that decide the trained weights: `model` and `train`."""
    values = config.to_dict()
    return {section: values[section] for section in ("model", "train")}


def check_training_settings(outcome: TrainingOutcome, settings: dict, run_dir: str | Path) -> None:
    """Refuse to reuse a finished run directory with other `model` or `train` settings.

    Args:
        outcome: The run directory's recorded outcome.
        settings: The settings of the run about to reuse it (`training_settings(config)`).
        run_dir: The run directory, for the message.

    Raises:
        ConfigError: naming each setting that changed, and suggesting a new `--run-dir`.
    """
    current = json.loads(json.dumps(settings))
    changed = [f"{section}.{key} ({outcome.settings.get(section, {}).get(key)!r} -> {value!r})"
               for section, values in current.items() for key, value in values.items()
               if outcome.settings.get(section, {}).get(key) != value]
    if outcome.settings and changed:
        raise ConfigError(f"--run-dir {run_dir}: its training finished with other settings ({', '.join(changed)}); "
                          "pass a new --run-dir to train with these")


def write_training_outcome(run_dir: str | Path, outcome: TrainingOutcome) -> Path:
    """Record a finished training in `run_dir/training_done.json` (atomically)."""
    return write_text_atomic(Path(run_dir) / TRAINING_RECORD, json.dumps(outcome.to_dict(), indent=2))


def read_training_outcome(run_dir: str | Path) -> TrainingOutcome | None:
    """The recorded outcome of the run's training, or None when it has not finished.

    An unreadable record (the file is written atomically, so only outside damage makes one) is
    reported and treated as absent: the run trains again.

    Args:
        run_dir: The run directory.
    """
    path = Path(run_dir) / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        divergence = values.get("divergence")
        return TrainingOutcome(bool(values["best_checkpoint"]),
                               None if divergence is None else Divergence.from_dict(divergence),
                               values.get("settings", {}))
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("%s unreadable (%s); training again", path, error)
        return None
