"""The default callbacks of a training run: Keras's own, writing their files atomically, plus a phase tag,
a divergence guard and image samples."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import keras
import numpy as np

from keras_med.run_directory import BEST_CHECKPOINT, HISTORY_FILE
from keras_med.tasks import monitor_mode
from keras_med.training.checkpoints import AtomicBackupAndRestore, AtomicCSVLogger, AtomicModelCheckpoint
from keras_med.training.divergence import DivergenceGuard

logger = logging.getLogger(__name__)


class PhaseTag(keras.callbacks.Callback):
    """Add a constant `phase` entry to the epoch logs, so history.csv says which fit phase each
    epoch belongs to (Keras has no callback for tagging logs).

    Args:
        phase: Phase number (1: head only, 2: fine-tuning; 1 for a single-phase plan).
    """

    def __init__(self, phase: int):
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["phase"] = self.phase

    def get_config(self):
        return {"phase": self.phase}


class LinearWarmUp(keras.callbacks.Callback):
    """Raise the learning rate linearly from near 0 to `target` over the first `epochs` of a phase.

    Fine-tuning a whole pretrained backbone with a fresh Adam optimizer moves every weight by about
    the full learning rate on the first steps (Adam's first updates are sign-like); on HAM10000
    training accuracy fell from 0.47 to 0.34 in the first fine-tuning epoch and took two epochs to
    recover, which the warm-up avoids (it did not raise the test figure).
    Keras's schedules can warm up (`CosineDecay(warmup_steps=...)`), but an optimizer driven by a
    schedule refuses ReduceLROnPlateau's changes, so the ramp is a callback that sets the
    learning-rate variable per batch and leaves it at `target` for ReduceLROnPlateau afterwards.

    Args:
        target: Learning rate at the end of the warm-up.
        epochs: Warm-up length in epochs (fractions allowed); 0 turns it off.
        first_epoch: The phase's first (global) epoch; a run resumed after the warm-up skips it.
    """

    def __init__(self, target: float, epochs: float, first_epoch: int = 0):
        super().__init__()
        if epochs < 0:
            raise ValueError(f"warmup_epochs: expected 0 (off) or more, got {epochs}")
        self.target, self.epochs, self.first_epoch = float(target), float(epochs), int(first_epoch)
        self._epoch = first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.params.get("steps") is None and 0 <= epoch - self.first_epoch < self.epochs:
            # batches per epoch unknown: one step of the ramp per epoch
            self._set(min(1.0, (epoch - self.first_epoch + 1) / self.epochs))

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.params.get("steps")
        if steps is None:
            return
        before = (self._epoch - self.first_epoch) + batch / steps  # epochs finished before this batch
        if 0 <= before < self.epochs:
            self._set(min(1.0, (before + 1 / steps) / self.epochs))

    def _set(self, fraction: float) -> None:
        self.model.optimizer.learning_rate.assign(self.target * fraction)


def cosine_learning_rate(base: float, epoch_in_phase: int, epochs: int, warmup_epochs: float = 0.0) -> float:
    """The learning rate of one epoch under cosine decay from `base` to 0 over a phase's epochs.

    Decay starts after the warm-up (whole epochs; LinearWarmUp ramps inside them) and reaches 0
    after the phase's last epoch, so the last epoch trains at a small rate rather than none.

    Args:
        base: The phase's learning rate.
        epoch_in_phase: 0 for the phase's first epoch.
        epochs: The phase's epochs.
        warmup_epochs: Epochs of warm-up at the start of the phase (at `base` here).

    Example:
    >>> [round(cosine_learning_rate(1.0, e, 4), 3) for e in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    warm = int(np.ceil(warmup_epochs))
    if epoch_in_phase < warm:
        return float(base)
    progress = (epoch_in_phase - warm) / max(1, epochs - warm)
    return float(base * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package (which implements `tf.summary`) is installed.

    TensorFlow 2.21 no longer installs it, and without it Keras's TensorBoard callback fails at
    its first write.
    """
    return importlib.util.find_spec("tensorboard") is not None


def _captions(targets: np.ndarray, class_names: list[str] | None) -> list[str]:
    targets = np.asarray(targets)
    names = list(class_names) if class_names else None

    def name(index: int) -> str:
        return names[index] if names and index < len(names) else f"class {index}"

    if targets.ndim == 1 or targets.shape[-1] == 1:
        positive = names[-1] if names else "positive"
        negative = names[0] if names and len(names) > 1 else "negative"
        return [positive if value >= 0.5 else negative for value in targets.reshape(-1)]
    if np.allclose(targets.sum(axis=-1), 1.0):
        return [name(int(index)) for index in targets.argmax(axis=-1)]
    return ["|".join(name(int(i)) for i in np.flatnonzero(row >= 0.5)) or "none" for row in targets]


def build_callbacks(run_dir: str | Path, *, monitor: str, patience: int, ema: float = 0.0, phase: int = 1,
                    backup_dir: str | Path | None = None, best_so_far: float | None = None,
                    sample_batch: tuple | None = None, class_names: list[str] | None = None,
                    learning_rate_flag: str = "--learning-rate",
                    learning_rate: float | None = None, lr_schedule: str = "plateau", first_epoch: int = 0,
                    last_epoch: int | None = None, warmup_epochs: float = 0.0) -> list[keras.callbacks.Callback]:
    """Default callbacks: divergence stop, LR schedule, best checkpoint, early stopping, logs, backup.

    Order matters: the divergence guard comes first, so a diverged epoch is marked before the
    checkpoint and backup see it; `phase` and the learning rate (logged by ReduceLROnPlateau) are
    added to the epoch logs before CSVLogger and TensorBoard write them. Checkpoint, history and
    backup are written atomically (`keras_med.training.checkpoints`).

    Args:
        run_dir: Run directory: `checkpoints/best.keras`, `logs/`, `history.csv`, `backup/`.
        monitor: Metric that picks the best checkpoint and stops early (`--monitor`).
        patience: EarlyStopping patience in epochs; ReduceLROnPlateau waits a third of it.
        ema: The optimizer's weight-averaging momentum; above 0, validation and checkpoints use
            the averaged weights.
        phase: Phase number written to the `phase` column.
        backup_dir: BackupAndRestore directory (default `run_dir/backup`).
        best_so_far: Best monitored value of earlier phases, so a later phase only overwrites
            best.keras with a better model.
        sample_batch: `(images, targets)` of one training batch to show in TensorBoard.
        class_names: Names used to caption the sample images.
        learning_rate_flag: The flag setting this phase's learning rate, named in the divergence advice.
        learning_rate: Its value.
        lr_schedule: 'plateau' (ReduceLROnPlateau halves the rate when `monitor` stalls) or 'cosine'
            (`cosine_learning_rate`, per epoch from `first_epoch` to `last_epoch`; needs `learning_rate`).
        first_epoch, last_epoch: The phase's first global epoch and the epoch it ends before.
        warmup_epochs: The phase's warm-up, which the cosine decay waits for.
    """
    run_dir = Path(run_dir)
    mode = monitor_mode(monitor)
    if patience < 1:
        raise ValueError(f"patience: expected at least 1 epoch, got {patience}")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if lr_schedule == "cosine":
        if learning_rate is None or last_epoch is None:
            raise ValueError("lr_schedule='cosine' needs the phase's learning_rate and last_epoch")
        epochs = last_epoch - first_epoch
        # Keras's CosineDecay is a per-step schedule the optimizer owns; a callback keeps the rate a
        # variable (the warm-up ramp and the divergence advice set and read it) and resumes by epoch.
        def rate(epoch: int, current: float) -> float:
            # during the warm-up LinearWarmUp owns the rate; the decay starts after it
            if epoch - first_epoch < warmup_epochs:
                return float(current)
            return cosine_learning_rate(learning_rate, epoch - first_epoch, epochs, warmup_epochs)

        schedule = keras.callbacks.LearningRateScheduler(rate)
    elif lr_schedule == "plateau":
        schedule = keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5,
                                                     patience=max(1, patience // 3), min_lr=1e-7)
    else:
        raise ValueError(f"lr_schedule: expected 'plateau' or 'cosine', got {lr_schedule!r}")
    callbacks = [
        DivergenceGuard(phase, learning_rate_flag, learning_rate),
        PhaseTag(phase),
        schedule,
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema > 0 else []),
        AtomicModelCheckpoint(str(run_dir / BEST_CHECKPOINT), monitor=monitor, mode=mode,
                              save_best_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        AtomicCSVLogger(str(run_dir / HISTORY_FILE)),
        AtomicBackupAndRestore(str(backup_dir or run_dir / "backup")),
    ]
    if not tensorboard_available():
        logger.warning("the tensorboard package is not installed: no TensorBoard logs (pip install tensorboard)")
        return callbacks
    callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), histogram_freq=1,
                                                 write_graph=False))
    if sample_batch is not None:
        from keras_med.training.tensorboard_images import TrainingImagesSummary

        images, targets = (np.asarray(part) for part in sample_batch)
        callbacks.append(TrainingImagesSummary(str(run_dir / "logs"), images, _captions(targets, class_names)))
    return callbacks
