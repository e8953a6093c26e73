"""Learning-rate finder: an exponential sweep of the learning rate over a few hundred steps.

The sweep runs on a clone of the model with a fresh copy of its optimizer, so the model's
weights and optimizer state are exactly as before when it returns.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_med.training.runtime import model_scope

logger = logging.getLogger(__name__)


class LearningRateSweep(keras.callbacks.Callback):
    """Raise the learning rate exponentially each batch and record the smoothed batch loss.

    Keras's LearningRateScheduler changes the rate per epoch, not per batch, hence this callback.
    Keras reports the running mean of the epoch's loss; the batch loss is recovered from two
    consecutive means. Training stops once the smoothed loss exceeds `diverge_factor` times its
    minimum, or is not finite.

    Args:
        min_lr: First learning rate.
        max_lr: Last learning rate.
        steps: Number of batches of the sweep.
        smoothing: Exponential smoothing factor of the loss (0: none).
        diverge_factor: Stop when the smoothed loss exceeds this multiple of its minimum.
    """

    def __init__(self, min_lr: float, max_lr: float, steps: int, smoothing: float = 0.98,
                 diverge_factor: float = 4.0):
        super().__init__()
        self.min_lr, self.max_lr, self.steps = min_lr, max_lr, steps
        self.smoothing, self.diverge_factor = smoothing, diverge_factor
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed_losses: list[float] = []
        self._previous_mean = 0.0
        self._average = 0.0

    def learning_rate_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(1, self.steps - 1))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate_at(batch)

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        loss = (batch + 1) * mean - batch * self._previous_mean
        self._previous_mean = mean
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** (batch + 1))
        self.lrs.append(self.learning_rate_at(batch))
        self.losses.append(loss)
        self.smoothed_losses.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.diverge_factor * min(self.smoothed_losses):
            self.model.stop_training = True

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps, "smoothing": self.smoothing,
                "diverge_factor": self.diverge_factor}


@dataclass
class LearningRateFinderResult:
    """The sweep's outcome.

    Attributes:
        lrs: Learning rate of each step.
        losses: Batch loss of each step.
        smoothed_losses: Exponentially smoothed loss of each step.
        suggested_lr: Rate of steepest descent of the smoothed loss (or the minimum's rate / 10).
        plot_path: Where the plot was saved, or None.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggested_lr: float
    plot_path: Path | None


def suggest_learning_rate(lrs, smoothed_losses, skip_start: int = 10, skip_end: int = 5) -> float:
    """Rate where the smoothed loss falls fastest against log(lr); the minimum's rate / 10 when
    the sweep is too short for a slope.

    Args:
        lrs: Learning rates of the sweep.
        smoothed_losses: Smoothed losses at those rates.
        skip_start: Steps left out at the start (the smoothing's warm-up).
        skip_end: Steps left out at the end (the divergence).
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(smoothed_losses, dtype=float)
    if len(lrs) == 0:
        raise ValueError("lrs: the sweep recorded no step")
    window = slice(skip_start, max(skip_start, len(lrs) - skip_end))
    if len(lrs[window]) >= 3 and np.all(np.isfinite(losses[window])):
        slopes = np.gradient(losses[window], np.log10(lrs[window]))
        return float(lrs[window][int(np.argmin(slopes))])
    finite = np.where(np.isfinite(losses), losses, np.inf)
    return float(lrs[int(np.argmin(finite))] / 10)


def plot_learning_rate_sweep(result: LearningRateFinderResult, path: str | Path) -> Path:
    """Save loss against learning rate (log x) with the suggestion marked.

    Args:
        result: The sweep's result.
        path: Image file to write (e.g. lr_find.png).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(result.lrs, result.losses, alpha=0.3, label="batch loss")
    axis.plot(result.lrs, result.smoothed_losses, label="smoothed loss")
    axis.axvline(result.suggested_lr, color="red", linestyle="--", label=f"suggested {result.suggested_lr:.2e}")
    axis.set_xscale("log")
    finite = result.smoothed_losses[np.isfinite(result.smoothed_losses)]
    if finite.size:
        axis.set_ylim(finite.min() * 0.9, min(finite.max(), 4 * finite.min()) * 1.1)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("loss")
    axis.set_title("Learning-rate finder")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def find_learning_rate(model: keras.Model, dataset, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 200,
                       *, smoothing: float = 0.98, diverge_factor: float = 4.0,
                       plot_path: str | Path | None = None) -> LearningRateFinderResult:
    """Sweep the learning rate from `min_lr` to `max_lr` and suggest one.

    Args:
        model: A compiled model (e.g. by `compile_model`); it is left unchanged.
        dataset: `tf.data.Dataset` of training `(images, targets)` batches; repeated as needed.
        min_lr: First learning rate.
        max_lr: Last learning rate.
        steps: Batches in the sweep.
        smoothing: Exponential smoothing of the loss.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum.
        plot_path: Where to save the plot (None: no plot).

    Returns:
        A `LearningRateFinderResult`.

    Example:
        >>> result = find_learning_rate(model, train_ds, steps=100, plot_path="lr_find.png")
        >>> result.suggested_lr
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"min_lr, max_lr: expected 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps: expected an integer of at least 2, got {steps!r}")
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError("model: compile it first (compile_model) so the sweep uses its optimizer and loss")
    with model_scope(model):
        probe = keras.models.clone_model(model)
        probe.set_weights(model.get_weights())
        optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(model.optimizer))
        probe.compile(optimizer=optimizer, loss=model.loss, jit_compile=model.jit_compile)
    sweep = LearningRateSweep(min_lr, max_lr, steps, smoothing, diverge_factor)
    probe.fit(dataset.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[sweep], shuffle=False, verbose=0)
    lrs, smoothed = np.asarray(sweep.lrs), np.asarray(sweep.smoothed_losses)
    result = LearningRateFinderResult(lrs=lrs, losses=np.asarray(sweep.losses), smoothed_losses=smoothed,
                                      suggested_lr=suggest_learning_rate(lrs, smoothed), plot_path=None)
    if plot_path is not None:
        result.plot_path = plot_learning_rate_sweep(result, plot_path)
    logger.info("learning-rate sweep: %d steps up to %.2e, suggested %.2e", len(lrs), lrs[-1], result.suggested_lr)
    return result
