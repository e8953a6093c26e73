"""Optimizer, loss and metrics for a task, and `compile_model` putting them together."""

from __future__ import annotations

import logging

import keras

from keras_med.config import TrainConfig
from keras_med.training.losses import LogitAdjustedCrossentropy, WeightedBinaryCrossentropy
from keras_med.tasks import TASKS
from keras_med.training.metrics import BalancedAccuracy
from keras_med.training.runtime import use_jit_compile

logger = logging.getLogger(__name__)


def _adamw(learning_rate, train_config, **kwargs):
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=train_config.weight_decay, **kwargs)


def _adam(learning_rate, train_config, **kwargs):
    return keras.optimizers.Adam(learning_rate=learning_rate, **kwargs)


def _sgd(learning_rate, train_config, **kwargs):
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True, **kwargs)


OPTIMIZERS = {"adamw": _adamw, "adam": _adam, "sgd": _sgd}


def build_optimizer(train_config: TrainConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    """The optimizer named by `train_config.optimizer`, with clipping and gradient accumulation.

    Args:
        train_config: Uses `optimizer`, `weight_decay`, `clipnorm`, `accumulate` and `ema`.
        learning_rate: Initial learning rate.
    """
    if train_config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {train_config.optimizer!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    if train_config.accumulate < 1:
        raise ValueError(f"accumulate: expected at least 1 step, got {train_config.accumulate!r}")
    kwargs = {}
    if train_config.clipnorm > 0:
        kwargs["clipnorm"] = train_config.clipnorm
    if train_config.accumulate > 1:
        kwargs["gradient_accumulation_steps"] = train_config.accumulate
    if not 0.0 <= train_config.ema < 1.0:
        raise ValueError(f"ema: expected 0 (off) or a momentum in (0, 1), got {train_config.ema!r}")
    if train_config.ema > 0:
        kwargs.update(use_ema=True, ema_momentum=train_config.ema)
    return OPTIMIZERS[train_config.optimizer](learning_rate, train_config, **kwargs)


def build_loss(task: str, label_smoothing: float = 0.0, focal: bool = False,
               label_weights: tuple | None = None, class_priors: tuple | None = None,
               logit_adjustment: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy (or focal) loss for the task; targets are one-hot / multi-hot / (B, 1).

    Args:
        task: "multiclass" (categorical) or "multilabel"/"binary" (binary cross-entropy).
        label_smoothing: Label smoothing in [0, 1).
        focal: Use the focal variant, which down-weights easy examples.
        label_weights: Multilabel only: `(positive_weights, negative_weights)`, one per label
            (`keras_med.data.balanced_label_weights`), for a per-label weighted cross-entropy.
        class_priors: Multiclass only: the training split's class frequencies, for the
            logit-adjusted cross-entropy (`LogitAdjustedCrossentropy`) when `logit_adjustment` > 0.
        logit_adjustment: Its tau; 0 (off) ignores `class_priors`.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing!r}")
    if label_weights is not None:
        if task != "multilabel":
            raise ValueError(f"label_weights: only for the multilabel task (got {task!r}); "
                             "single-label tasks take class weights in fit()")
        if focal:
            raise ValueError("label_weights and focal_loss: choose one (the weighted loss is not focal)")
        return WeightedBinaryCrossentropy(*label_weights, label_smoothing=label_smoothing)
    if logit_adjustment > 0:
        if task != "multiclass":
            raise ValueError(f"logit_adjustment: only for the multiclass task (got {task!r}); a sigmoid output "
                             "has no class prior to shift by")
        if focal:
            raise ValueError("logit_adjustment and focal_loss: choose one (the adjusted loss is not focal)")
        if class_priors is None:
            raise ValueError("logit_adjustment: needs the training split's class_priors")
        return LogitAdjustedCrossentropy(class_priors, tau=logit_adjustment, label_smoothing=label_smoothing)
    if task == "multiclass":
        loss = keras.losses.CategoricalFocalCrossentropy if focal else keras.losses.CategoricalCrossentropy
    else:
        loss = keras.losses.BinaryFocalCrossentropy if focal else keras.losses.BinaryCrossentropy
    return loss(label_smoothing=label_smoothing)


def build_metrics(task: str, num_outputs: int) -> list[keras.metrics.Metric]:
    """accuracy, auc and balanced_accuracy for the task.

    Args:
        task: "multiclass", "multilabel" or "binary".
        num_outputs: Units of the model's output layer.
    """
    accuracy = (keras.metrics.CategoricalAccuracy(name="accuracy") if task == "multiclass"
                else keras.metrics.BinaryAccuracy(name="accuracy"))
    return [accuracy,
            keras.metrics.AUC(name="auc", multi_label=task == "multilabel", num_labels=num_outputs
                              if task == "multilabel" else None),
            BalancedAccuracy(num_classes=num_outputs, task=task, name="balanced_accuracy")]


def compile_model(model: keras.Model, train_config: TrainConfig, task: str,
                  learning_rate: float | None = None, label_weights: tuple | None = None,
                  class_priors: tuple | None = None) -> keras.Model:
    """Compile `model` for `task` with the configured optimizer, loss and metrics.

    Call inside `runtime.scope()` of `setup_runtime` (fit plans recompile inside the scope the
    model was built in, `keras_med.training.runtime.model_scope`).

    Args:
        model: Model whose output layer matches the task (C units, or 1 for binary).
        train_config: Uses optimizer settings, `label_smoothing`, `focal_loss`, `jit_compile`.
        task: "multiclass", "multilabel" or "binary".
        learning_rate: Defaults to `train_config.learning_rate`.
        label_weights: Multilabel per-label `(positive, negative)` loss weights (see `build_loss`).
        class_priors: Multiclass class frequencies of the training split, for `train_config.logit_adjustment`.

    Returns:
        The same model, compiled.
    """
    learning_rate = train_config.learning_rate if learning_rate is None else learning_rate
    num_outputs = int(model.output_shape[-1])
    if task == "binary" and num_outputs != 1:
        raise ValueError(f"task: a binary model has 1 output unit, this model has {num_outputs}")
    model.compile(optimizer=build_optimizer(train_config, learning_rate),
                  loss=build_loss(task, train_config.label_smoothing, train_config.focal_loss, label_weights,
                                  class_priors, train_config.logit_adjustment),
                  metrics=build_metrics(task, num_outputs),
                  jit_compile=use_jit_compile(train_config))
    logger.info("compiled %s: %s lr=%g, %s", model.name, train_config.optimizer, learning_rate,
                type(model.loss).__name__)
    return model
