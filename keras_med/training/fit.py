"""Fit plans: `scratch` (train everything) and `finetune` (head first, then unfreeze the top).

`fit_model` picks the plan from `config.train.plan`, compiles the model for each phase, writes
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

import logging
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_med.atomic import atomic_path, remove_stale_temporaries
from keras_med.config import RecipeConfig
from keras_med.errors import RunDivergedError
from keras_med.models import model_spec
from keras_med.models.registry import normalize_weights
from keras_med.models.transfer import is_checkpoint
from keras_med.training.callbacks import LinearWarmUp, build_callbacks, monitor_mode
from keras_med.training.checkpoints import first_line
from keras_med.training.compile import compile_model
from keras_med.training.divergence import Divergence, DivergenceGuard
from keras_med.training.runtime import data_parallel_devices, model_scope, prepare_train_step, trim_to_devices
from keras_med.training.outcome import (TRAINING_RECORD, TrainingOutcome, check_training_settings,
                                        read_training_outcome, training_settings, write_training_outcome)

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"
BEST_CHECKPOINT = Path("checkpoints") / "best.keras"


def is_head_layer(layer: keras.layers.Layer) -> bool:
    """Head layers are the ones a fit plan trains first: `head_*` and `predictions`."""
    return layer.name.startswith("head_") or layer.name == "predictions"


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers with weights that are neither head nor input preprocessing, in model order."""
    return [layer for layer in model.layers
            if layer.weights and not is_head_layer(layer) and not layer.name.startswith("preprocess_")]


def freeze_backbone(model: keras.Model) -> None:
    """Make only the head trainable.

    Args:
        model: A model built by `create_model`.
    """
    if not any(is_head_layer(layer) for layer in model.layers):
        raise ValueError("model: no layers named head_* or 'predictions'; build it with create_model")
    for layer in model.layers:
        layer.trainable = is_head_layer(layer)


def unfreeze_top(model: keras.Model, count: int) -> int:
    """Make the top `count` backbone layers trainable (-1: all), BatchNorm layers excepted.

    Keras 3 runs a BatchNormalization layer with trainable=False in inference mode, which keeps
    its ImageNet statistics from being overwritten by small medical batches.

    Args:
        model: A model built by `create_model`.
        count: Number of top backbone layers (with weights) to unfreeze; -1 for all.

    Returns:
        How many layers were made trainable.
    """
    if not isinstance(count, int) or count < -1:
        raise ValueError(f"unfreeze: expected -1 (all) or a number of layers >= 0, got {count!r}")
    layers = backbone_layers(model)
    selected = layers if count == -1 else layers[len(layers) - min(count, len(layers)):]
    unfrozen = 0
    for layer in selected:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = True
            unfrozen += 1
    return unfrozen


def infer_task(model: keras.Model) -> str:
    """The task a `create_model` model was built for, from its `predictions` layer."""
    output = model.get_layer("predictions")
    activation = keras.activations.serialize(output.activation)
    activation = activation if isinstance(activation, str) else activation.get("config", {}).get("name", "")
    if "softmax" in str(activation):
        return "multiclass"
    return "binary" if output.units == 1 else "multilabel"


def resolve_plan(config: RecipeConfig) -> str:
    """'auto' becomes 'finetune' for a pretrained backbone with weights, else 'scratch'.

    Args:
        config: Uses `train.plan`, `model.model` and `model.weights`.
    """
    plan = config.train.plan
    if plan not in ("auto", *FIT_PLANS):
        raise ValueError(f"plan: expected one of {['auto', *FIT_PLANS]}, got {plan!r}")
    if plan != "auto":
        return plan
    weights = normalize_weights(config.model.weights)
    # a .keras model of an earlier run is a trained backbone whatever the architecture (models.transfer)
    pretrained = weights is not None and (model_spec(config.model.model).pretrained or is_checkpoint(weights))
    return "finetune" if pretrained else "scratch"


def _fit_phase(model, train_ds, val_ds, config, run_dir, *, phase, learning_rate, initial_epoch, epochs,
               backup_dir, class_weight, monitor, sample_batch=None, class_names=None, warmup_epochs=0.0,
               label_weights=None, learning_rate_flag="--learning-rate", augmentation=None) -> Divergence | None:
    """One `model.fit` of a plan; returns where it diverged, or None."""
    task = infer_task(model)
    with model_scope(model):
        compile_model(model, config.train, task, learning_rate, label_weights=label_weights)
        prepare_train_step(model, augmentation)
    callbacks = build_callbacks(config, run_dir, phase=phase, backup_dir=backup_dir,
                                best_so_far=best_value(Path(run_dir) / HISTORY_FILE, monitor),
                                sample_batch=sample_batch, class_names=class_names, monitor=monitor,
                                learning_rate_flag=learning_rate_flag, learning_rate=learning_rate)
    if warmup_epochs > 0:
        callbacks.insert(0, LinearWarmUp(learning_rate, warmup_epochs, first_epoch=initial_epoch))
    steps = config.train.steps_per_epoch
    if steps < 0:
        raise ValueError(f"steps_per_epoch: expected 0 (whole split) or a positive number, got {steps}")
    # Keras never resets the epoch BackupAndRestore restored, so a second fit() after a
    # resumed one would start at the first fit's epoch; clear it before each phase.
    model._initial_epoch = None
    logger.info("phase %d: epochs %d..%d at lr %g, %d trainable weights", phase, initial_epoch + 1, epochs,
                learning_rate, len(model.trainable_weights))
    devices = data_parallel_devices()
    train_ds, val_ds = (trim_to_devices(dataset, devices) if dataset is not None else None
                        for dataset in (train_ds, val_ds))
    model.fit(train_ds.repeat() if steps else train_ds, validation_data=val_ds, epochs=epochs,
              initial_epoch=initial_epoch, steps_per_epoch=steps or None, class_weight=class_weight,
              callbacks=callbacks, shuffle=False, verbose=2)
    return next(callback for callback in callbacks if isinstance(callback, DivergenceGuard)).divergence


def _fit_scratch(model, train_ds, val_ds, config, run_dir, **kwargs) -> Divergence | None:
    for layer in model.layers:
        layer.trainable = True
    return _fit_phase(model, train_ds, val_ds, config, run_dir, phase=1, learning_rate=config.train.learning_rate,
                      initial_epoch=0, epochs=config.train.epochs,
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


def _fit_finetune(model, train_ds, val_ds, config, run_dir, **kwargs) -> Divergence | None:
    train = config.train
    backup_root = Path(run_dir) / "backup"
    head_done = backup_root / "phase1_done.weights.h5"
    if not _load_head_phase(model, head_done) and train.head_epochs > 0:
        freeze_backbone(model)
        divergence = _fit_phase(model, train_ds, val_ds, config, run_dir, phase=1, learning_rate=train.learning_rate,
                                initial_epoch=0, epochs=train.head_epochs, backup_dir=backup_root / "phase1",
                                **kwargs)
        if divergence is not None:
            return divergence
        with atomic_path(head_done) as temporary:
            model.save_weights(str(temporary))
    kwargs.pop("sample_batch", None)
    freeze_backbone(model)
    unfrozen = unfreeze_top(model, train.unfreeze)
    logger.info("fine-tuning: %d backbone layers unfrozen (BatchNorm kept frozen)", unfrozen)
    return _fit_phase(model, train_ds, val_ds, config, run_dir, phase=2,
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
    """history.csv as a DataFrame, one row per global epoch.

    A run killed between writing a row and saving its backup repeats that epoch on resume;
    the last row of each epoch is kept.

    Args:
        run_dir: The run directory.
    """
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: no {HISTORY_FILE} in {run_dir}; has the model been trained?")
    history = pd.read_csv(path)
    return history.drop_duplicates(subset="epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _sample_batch(train_ds) -> tuple | None:
    for element in train_ds.take(1):
        return tuple(np.asarray(part) for part in element[:2])
    return None


def fit_model(model: keras.Model, train_ds, val_ds, config: RecipeConfig, run_dir: str | Path,
              class_weight: dict | None = None, *, class_names: list[str] | None = None,
              label_weights: tuple | None = None, augment_in_step: bool = False) -> pd.DataFrame:
    """Train `model` with the plan of `config.train.plan`; compiles the model itself.

    Args:
        model: A model from `create_model`, built inside the strategy scope of `setup_runtime`.
        train_ds: `tf.data.Dataset` of `(images, targets)` batches.
        val_ds: Validation dataset, or None (the monitor then falls back to the training metric).
        config: The recipe configuration (uses `train` and `model`).
        run_dir: Run directory; created if missing. Reusing one resumes a killed run; one whose
            training finished (`training_done.json`) is not trained again.
        class_weight: Optional `{class_index: weight}` for the loss.
        label_weights: Optional multilabel `(positive_weights, negative_weights)` per label, for a
            weighted binary cross-entropy (`keras_med.data.balanced_label_weights`).
        class_names: Names to caption the sample images shown in TensorBoard.
        augment_in_step: Apply `config.data`'s augmentation preset and MixUp/CutMix inside the
            training step, on the accelerator (`--augment-on device`, TensorFlow backend); `train_ds`
            must then come un-augmented (`augment="none"`, no mixing). The model stays free of
            augmentation layers either way.

    Returns:
        The history, one row per epoch of all phases (also in `run_dir/history.csv`); the model
        holds the weights of `run_dir/checkpoints/best.keras`. Whether training diverged after
        good epochs is in `read_training_outcome(run_dir)`.

    Raises:
        RunDivergedError: Training diverged before any good epoch; no model was written.
        ConfigError: `run_dir` holds a finished training made with other model or train settings.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_stale_temporaries(folder)
    outcome = read_training_outcome(run_dir)
    if outcome is None:
        outcome = _train(model, train_ds, val_ds, config, run_dir, class_weight=class_weight,
                         class_names=class_names, label_weights=label_weights, augment_in_step=augment_in_step)
    else:
        check_training_settings(outcome, config, run_dir)
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


def _train(model, train_ds, val_ds, config, run_dir: Path, augment_in_step: bool = False,
           **kwargs) -> TrainingOutcome:
    plan = resolve_plan(config)
    monitor = config.train.monitor
    if val_ds is None and monitor.startswith("val_"):
        logger.warning("no validation data: monitoring %s instead of %s", monitor[4:], monitor)
        monitor = monitor[4:]
    logger.info("fit plan %s, run directory %s", plan, run_dir)
    augmentation = None
    if augment_in_step:
        from keras_med.data.pipeline import batch_augmentation

        # In the model's scope: the random layers keep their state in variables the step updates.
        with model_scope(model):
            augmentation = batch_augmentation(config.data.augment, config.data.mixup, config.data.cutmix,
                                              config.train.seed)
        logger.info("augmentation on the device, inside the training step")
    divergence = FIT_PLANS[plan](model, train_ds, val_ds, config, run_dir, monitor=monitor,
                                 sample_batch=_sample_batch(train_ds), augmentation=augmentation, **kwargs)
    history = read_history(run_dir)
    with atomic_path(run_dir / HISTORY_FILE) as temporary:
        history.to_csv(temporary, index=False)
    # Only non-finite-free models reach best.keras (AtomicModelCheckpoint), so its presence says
    # whether a good model exists.
    outcome = TrainingOutcome((run_dir / BEST_CHECKPOINT).is_file(), divergence, training_settings(config))
    write_training_outcome(run_dir, outcome)
    # Recorded as finished: nothing left to resume.
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return outcome
