"""The kinds of task a model solves, which way a monitored metric improves, and a model's task.

The one definition of these three things (MONAI keeps its constants in `utils/enums.py` the same
way). `Task` is a `str`-valued enum, so `task == "multiclass"`, JSON files and TOML values keep
working with plain strings. Imports no Keras: `--help` and configuration checks use it too.
"""

from __future__ import annotations

import enum

from keras_med.errors import UserError


class Task(str, enum.Enum):
    """What a model's outputs mean (docs/contracts.md, "Conventions").

    - `MULTICLASS`: one softmax over C classes, exactly one class per image.
    - `BINARY`: one sigmoid, P(positive); class names are `[negative, positive]`.
    - `MULTILABEL`: C sigmoids, any number of labels per image (ChestX-ray14).

    Example:
        >>> Task("binary") == "binary"
        True
        >>> [task.value for task in Task]
        ['multiclass', 'binary', 'multilabel']
    """

    MULTICLASS = "multiclass"
    BINARY = "binary"
    MULTILABEL = "multilabel"

    def __str__(self) -> str:
        return self.value


# The task names in their canonical order, for `choices=` and messages.
TASKS = tuple(task.value for task in Task)


class ModelTaskError(UserError, ValueError):
    """A model whose task cannot be read from its `predictions` layer (see docs/contracts.md)."""


def check_task(task: str) -> Task:
    """`task` as a `Task`, or a ValueError naming the choices.

    Args:
        task: "multiclass", "binary" or "multilabel" (or a `Task`).

    Returns:
        The `Task`.

    Example:
        >>> check_task("multilabel") is Task.MULTILABEL
        True
    """
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}") from None


def monitor_mode(monitor: str) -> str:
    """'min' for losses (any name containing 'loss'), 'max' for every other metric.

    The direction Keras callbacks (`ModelCheckpoint`, `EarlyStopping`, `ReduceLROnPlateau`) and
    the history readers use for the same metric.

    Args:
        monitor: A history key, e.g. "val_balanced_accuracy" or "val_loss".

    Returns:
        "min" or "max".

    Example:
        >>> monitor_mode("val_loss"), monitor_mode("val_auc")
        ('min', 'max')
    """
    if not monitor:
        raise ValueError("monitor: expected a metric name such as 'val_balanced_accuracy', got ''")
    return "min" if "loss" in monitor else "max"


def infer_task(model) -> Task:
    """The task of a Keras model built to the contract, read from its `predictions` layer.

    One output unit is binary; several are multiclass under softmax and multilabel under sigmoid.

    Args:
        model: A Keras model whose output layer is named `predictions`.

    Returns:
        The `Task`.

    Raises:
        ModelTaskError: no `predictions` layer, or an activation that says no task.
    """
    try:
        layer = model.get_layer("predictions")
    except ValueError as error:
        raise ModelTaskError("the model has no layer named 'predictions' (see docs/contracts.md)") from error
    if model.outputs[0].shape[-1] == 1:
        return Task.BINARY
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if activation == "softmax":
        return Task.MULTICLASS
    if activation == "sigmoid":
        return Task.MULTILABEL
    raise ModelTaskError(f"cannot tell the task from the 'predictions' layer's activation {activation!r}; "
                         "pass task= explicitly")
