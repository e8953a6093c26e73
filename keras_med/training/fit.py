"""Fit plans: `scratch` (train everything) and `finetune` (head first, then unfreeze the top blocks).

Freezing goes through the model's `ImageClassifier` interface (`freeze_backbone`, `unfreeze_top`).

`fit_model` runs the plan it is given (`resolve_plan` turns `auto` into one), compiles the model for
each phase from the `train` settings, writes
the whole history (with `phase` and a global `epoch`) to `run_dir/history.csv`, and keeps the
best model at `run_dir/checkpoints/best.keras`. A killed run re-run with the same run
directory resumes: each phase has its own BackupAndRestore directory, a finished head phase
leaves its weights in `backup/phase1_done.weights.h5` so it is not repeated, and a finished
training leaves `training_done.json` so a run killed during evaluation or export does not train
again. Every one of these files is written atomically. A diverging run stops at the first
non-finite loss or weights, never checkpoints them, and keeps the best good model; with none,
`fit_model` raises `RunDivergedError`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_med.atomic import atomic_path, remove_stale_temporaries
from keras_med.config import TrainConfig
from keras_med.errors import ConfigError, RunDivergedError
from keras_med.models import ImageClassifier, model_spec
from keras_med.models.transfer import is_checkpoint
from keras_med.models.weights import normalize_weights
from keras_med.run_directory import BEST_CHECKPOINT, HISTORY_FILE, TRAINING_RECORD, RunDirectory
from keras_med.tasks import infer_task, monitor_mode
from keras_med.training.callbacks import LinearWarmUp, build_callbacks
from keras_med.training.checkpoints import first_line
from keras_med.training.compile import compile_model
from keras_med.training.divergence import Divergence, DivergenceGuard
from keras_med.training.outcome import (TrainingOutcome, check_training_settings, read_training_outcome,
                                        write_training_outcome)
from keras_med.training.runtime import data_parallel_devices, model_scope, prepare_train_step, trim_to_devices

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StepAugmentation:
    """Augmentation run inside the training step, on the accelerator (`--augment-on device`).

    Attributes:
        augment: the augmentation preset (`keras_med.data.AUGMENT_PRESETS`).
        mixup: MixUp's alpha (0: off).
        cutmix: CutMix's alpha (0: off).
    """

    augment: str
    mixup: float = 0.0
    cutmix: float = 0.0



def _classifier(model: keras.Model) -> ImageClassifier:
    if not isinstance(model, ImageClassifier):
        raise ConfigError(f"model: '{model.name}' is not a keras_med ImageClassifier; the finetune plan freezes "
                          "through the classifier's backbone. Build it with create_model")
    return model


def freeze_backbone(model: keras.Model) -> None:
    """Make only the head trainable (`ImageClassifier.freeze_backbone`).

    Args:
        model: An `ImageClassifier` (as `create_model` builds).
    """
    _classifier(model).freeze_backbone()


def unfreeze_top(model: keras.Model, n_blocks: int) -> int:
    """Make the backbone's top `n_blocks` blocks trainable (-1: all), BatchNorm kept frozen.

    Args:
        model: An `ImageClassifier`.
        n_blocks: Blocks of the backbone's own structure (`keras_med.models.blocks`); -1 for all.

    Returns:
        How many layers were made trainable.
    """
    return _classifier(model).unfreeze_top(n_blocks)


def resolve_plan(plan: str, model_name: str, weights: str) -> str:
    """'auto' becomes 'finetune' for a pretrained backbone with weights, else 'scratch'.

    Args:
        plan: `"auto"`, `"scratch"` or `"finetune"` (`--plan`).
        model_name: the registered model name (`--model`).
        weights: `--weights`: 'imagenet', 'none', a weights file or an earlier run's `.keras` file.

    Returns:
        `"scratch"` or `"finetune"`.
    """
    if plan not in ("auto", *FIT_PLANS):
        raise ValueError(f"plan: expected one of {['auto', *FIT_PLANS]}, got {plan!r}")
    if plan != "auto":
        return plan
    weights = normalize_weights(weights)
    # a .keras model of an earlier run is a trained backbone whatever the architecture (models.transfer)
    pretrained = weights is not None and (model_spec(model_name).pretrained or is_checkpoint(weights))
    return "finetune" if pretrained else "scratch"


def _fit_phase(model, train_ds, val_ds, train, run_dir, *, phase, learning_rate, initial_epoch, epochs,
               backup_dir, class_weight, monitor, sample_batch=None, class_names=None, warmup_epochs=0.0,
               label_weights=None, class_priors=None, learning_rate_flag="--learning-rate",
               augmentation=None) -> Divergence | None:
    """One `model.fit` of a plan; returns where it diverged, or None."""
    task = infer_task(model)
    with model_scope(model):
        compile_model(model, train, task, learning_rate, label_weights=label_weights, class_priors=class_priors)
        prepare_train_step(model, augmentation)
    callbacks = build_callbacks(run_dir, patience=train.patience, ema=train.ema, phase=phase, backup_dir=backup_dir,
                                best_so_far=best_value(Path(run_dir) / HISTORY_FILE, monitor),
                                sample_batch=sample_batch, class_names=class_names, monitor=monitor,
                                learning_rate_flag=learning_rate_flag, learning_rate=learning_rate,
                                lr_schedule=train.lr_schedule, first_epoch=initial_epoch, last_epoch=epochs,
                                warmup_epochs=warmup_epochs)
    if warmup_epochs > 0:
        callbacks.insert(0, LinearWarmUp(learning_rate, warmup_epochs, first_epoch=initial_epoch))
    steps = train.steps_per_epoch
    if steps < 0:
        raise ValueError(f"steps_per_epoch: expected 0 (whole split) or a positive number, got {steps}")
    # Keras never resets the epoch BackupAndRestore restored, so a second fit() after a
    # resumed one would start at the first fit's epoch; clear it before each phase.
    model._initial_epoch = None
    logger.info("phase %d: epochs %d..%d at lr %g, %d trainable weights", phase, initial_epoch + 1, epochs,
                learning_rate, len(model.trainable_weights))
    devices = data_parallel_devices(model)
    train_ds, val_ds = (trim_to_devices(dataset, devices) if dataset is not None else None
                        for dataset in (train_ds, val_ds))
    model.fit(train_ds.repeat() if steps else train_ds, validation_data=val_ds, epochs=epochs,
              initial_epoch=initial_epoch, steps_per_epoch=steps or None, class_weight=class_weight,
              callbacks=callbacks, shuffle=False, verbose=2)
    return next(callback for callback in callbacks if isinstance(callback, DivergenceGuard)).divergence


def _fit_scratch(model, train_ds, val_ds, train, run_dir, **kwargs) -> Divergence | None:
    model.trainable = True
    return _fit_phase(model, train_ds, val_ds, train, run_dir, phase=1, learning_rate=train.learning_rate,
                      initial_epoch=0, epochs=train.epochs,
                      backup_dir=Path(run_dir) / "backup" / "phase1", **kwargs)


def _load_head_phase(model, head_done: Path) -> bool:
    """Load the finished head phase's weights; False (with a warning) when the file cannot be read."""
    if not head_done.is_file():
        return False
    try:
        model.load_weights(str(head_done))
    except Exception as error:  # h5py: OSError on a damaged file
        logger.warning("%s unreadable (%s); resuming the head phase from its backup instead", head_done,
                       first_line(error))
        return False
    logger.info("head phase finished in an earlier run; resuming from %s", head_done)
    return True


def _fit_finetune(model, train_ds, val_ds, train, run_dir, **kwargs) -> Divergence | None:
    backup_root = Path(run_dir) / "backup"
    head_done = backup_root / "phase1_done.weights.h5"
    if not _load_head_phase(model, head_done) and train.head_epochs > 0:
        freeze_backbone(model)
        divergence = _fit_phase(model, train_ds, val_ds, train, run_dir, phase=1, learning_rate=train.learning_rate,
                                initial_epoch=0, epochs=train.head_epochs, backup_dir=backup_root / "phase1",
                                **kwargs)
        if divergence is not None:
            return divergence
        with atomic_path(head_done) as temporary:
            model.save_weights(str(temporary))
    kwargs.pop("sample_batch", None)
    unfrozen = unfreeze_top(model, train.unfreeze)
    logger.info("fine-tuning: top %s backbone blocks, %d layers, unfrozen (BatchNorm kept frozen)",
                "all" if train.unfreeze == -1 else train.unfreeze, unfrozen)
    return _fit_phase(model, train_ds, val_ds, train, run_dir, phase=2,
                      learning_rate=train.finetune_learning_rate, learning_rate_flag="--finetune-learning-rate",
                      initial_epoch=train.head_epochs, epochs=train.head_epochs + train.epochs,
                      backup_dir=backup_root / "phase2", warmup_epochs=train.warmup_epochs, **kwargs)


FIT_PLANS = {"scratch": _fit_scratch, "finetune": _fit_finetune}


def best_value(history_path: Path, monitor: str) -> float | None:
    """Best `monitor` value recorded in a history.csv so far (None if there is none).

    Args:
        history_path: Path of history.csv.
        monitor: Column name; 'min' for losses, 'max' otherwise.
    """
    if not history_path.is_file() or history_path.stat().st_size == 0:
        return None
    values = pd.read_csv(history_path).get(monitor)
    if values is None or values.dropna().empty:
        return None
    return float(values.min() if monitor_mode(monitor) == "min" else values.max())


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """history.csv as a DataFrame, one row per global epoch (`RunDirectory.read_history`).

    A run killed between writing a row and saving its backup repeats that epoch on resume;
    the last row of each epoch is kept.

    Args:
        run_dir: The run directory.
    """
    return RunDirectory(run_dir).read_history()


def _sample_batch(train_ds) -> tuple | None:
    for element in train_ds.take(1):
        return tuple(np.asarray(part) for part in element[:2])
    return None


def fit_model(model: keras.Model, train_ds, val_ds, run_dir: str | Path, *, train: TrainConfig, plan: str,
              settings: dict | None = None, class_weight: dict | None = None,
              class_names: list[str] | None = None, label_weights: tuple | None = None,
              class_priors: tuple | None = None, augment_in_step: StepAugmentation | None = None) -> pd.DataFrame:
    """Train `model` with a fit plan; compiles the model itself.

    Args:
        model: A model from `create_model`, built inside the strategy scope of `setup_runtime`.
        train_ds: `tf.data.Dataset` of `(images, targets)` batches.
        val_ds: Validation dataset, or None (the monitor then falls back to the training metric).
        run_dir: Run directory; created if missing. Reusing one resumes a killed run; one whose
            training finished (`training_done.json`) is not trained again.
        train: The training settings (optimizer, learning rates, epochs, monitor, patience, ...).
        plan: `"scratch"` or `"finetune"` (`resolve_plan` turns `--plan auto` into one).
        settings: What decides the trained weights, recorded in `training_done.json`; a finished
            run directory with other settings is refused (`keras_med.training.outcome`). Default:
            `{"train": <train as a dict>}`; a recipe adds its `model` section.
        class_weight: Optional `{class_index: weight}` for the loss.
        label_weights: Optional multilabel `(positive_weights, negative_weights)` per label, for a
            weighted binary cross-entropy (`keras_med.data.balanced_label_weights`).
        class_priors: Optional multiclass class frequencies of the training split, for the
            logit-adjusted loss (`train.logit_adjustment` > 0; `keras_med.data.class_priors`).
        class_names: Names to caption the sample images shown in TensorBoard.
        augment_in_step: A `StepAugmentation`: the augmentation preset and MixUp/CutMix to run inside the
            training step, on the accelerator (`--augment-on device`, TensorFlow backend); `train_ds`
            must then come un-augmented (`augment="none"`, no mixing). The model stays free of
            augmentation layers either way.

    Returns:
        The history, one row per epoch of all phases (also in `run_dir/history.csv`); the model
        holds the weights of `run_dir/checkpoints/best.keras`. Whether training diverged after
        good epochs is in `read_training_outcome(run_dir)`.

    Raises:
        RunDivergedError: Training diverged before any good epoch; no model was written.
        ConfigError: `run_dir` holds a finished training made with other settings.
    """
    if plan not in FIT_PLANS:
        raise ValueError(f"plan: expected one of {list(FIT_PLANS)} (resolve_plan turns 'auto' into one), got {plan!r}")
    settings = settings if settings is not None else {"train": dataclasses.asdict(train)}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, RunDirectory(run_dir).checkpoints_dir):
        remove_stale_temporaries(folder)
    outcome = read_training_outcome(run_dir)
    if outcome is None:
        outcome = _train(model, train_ds, val_ds, train, plan, settings, run_dir, class_weight=class_weight,
                         class_names=class_names, label_weights=label_weights, class_priors=class_priors,
                         augment_in_step=augment_in_step)
    else:
        check_training_settings(outcome, settings, run_dir)
        logger.info("training finished in an earlier run (%s): not training again", run_dir / TRAINING_RECORD)
    if outcome.best_checkpoint:
        # best.keras also holds the optimizer state of the phase that saved it, which may not
        # match the current optimizer; only the layer weights are wanted here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(run_dir / BEST_CHECKPOINT))
    elif outcome.divergence is not None:
        raise RunDivergedError(outcome.divergence.describe())
    return read_history(run_dir)


def _train(model, train_ds, val_ds, train: TrainConfig, plan: str, settings: dict, run_dir: Path,
           augment_in_step: StepAugmentation | None = None, **kwargs) -> TrainingOutcome:
    monitor = train.monitor
    if val_ds is None and monitor.startswith("val_"):
        logger.warning("no validation data: monitoring %s instead of %s", monitor[4:], monitor)
        monitor = monitor[4:]
    logger.info("fit plan %s, run directory %s", plan, run_dir)
    augmentation = None
    if augment_in_step is not None:
        from keras_med.data.pipeline import batch_augmentation

        # In the model's scope: the random layers keep their state in variables the step updates.
        with model_scope(model):
            augmentation = batch_augmentation(augment_in_step.augment, augment_in_step.mixup,
                                              augment_in_step.cutmix, train.seed)
        logger.info("augmentation on the device, inside the training step")
    divergence = FIT_PLANS[plan](model, train_ds, val_ds, train, run_dir, monitor=monitor,
                                 sample_batch=_sample_batch(train_ds), augmentation=augmentation, **kwargs)
    history = read_history(run_dir)
    with atomic_path(run_dir / HISTORY_FILE) as temporary:
        history.to_csv(temporary, index=False)
    # Only non-finite-free models reach best.keras (AtomicModelCheckpoint), so its presence says
    # whether a good model exists.
    outcome = TrainingOutcome((run_dir / BEST_CHECKPOINT).is_file(), divergence, settings)
    write_training_outcome(run_dir, outcome)
    # Recorded as finished: nothing left to resume.
    shutil.rmtree(RunDirectory(run_dir).backup_dir, ignore_errors=True)
    return outcome
