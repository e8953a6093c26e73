"""Balanced accuracy as a streaming Keras metric, so `val_balanced_accuracy` can be monitored.

Keras has no balanced accuracy (mean per-class recall), and it is the number that exposes a
model collapsing onto the majority class, which plain accuracy hides. Backend-agnostic:
`keras.ops` only.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_med.tasks import TASKS


@keras.saving.register_keras_serializable(package="keras_med")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean recall over classes (multiclass) or mean of sensitivity and specificity (binary, per
    label and averaged for multilabel), accumulated as confusion matrices across batches.

    Classes absent from the targets seen so far are left out of the mean, as scikit-learn's
    `balanced_accuracy_score` does. Soft targets (label smoothing, MixUp) count as their argmax
    (multiclass) or as positive at >= 0.5 (binary, multilabel).

    Args:
        num_classes: Outputs of the model: C for multiclass/multilabel, 1 for binary.
        task: "multiclass", "multilabel" or "binary".
        threshold: Probability at or above which a sigmoid output counts as positive.
        name: Metric name (the history column is `val_<name>` on validation data).
        dtype: Dtype of the accumulated counts.

    Example:
        >>> metric = BalancedAccuracy(num_classes=3)
        >>> metric.update_state([[1, 0, 0], [0, 1, 0]], [[0.9, 0.1, 0], [0.8, 0.1, 0.1]])
        >>> float(metric.result())
        0.5
    """

    def __init__(self, num_classes: int, task: str = "multiclass", threshold: float = 0.5,
                 name: str = "balanced_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if task not in TASKS:
            raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
        if not isinstance(num_classes, int) or num_classes < 1 or (task == "multiclass" and num_classes < 2):
            raise ValueError(f"num_classes: expected a positive integer (>= 2 for multiclass), got {num_classes!r}")
        self.num_classes = num_classes
        self.task = task
        self.threshold = threshold
        # One K x K confusion matrix per output group: a single C x C matrix for multiclass,
        # one 2 x 2 (negative, positive) matrix per sigmoid output otherwise.
        groups, size = (1, num_classes) if task == "multiclass" else (num_classes, 2)
        self.confusion = self.add_variable(shape=(groups, size, size), initializer="zeros",
                                           dtype=self.dtype, name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.reshape(ops.cast(y_true, self.dtype), (-1, self.num_classes))
        y_pred = ops.reshape(ops.cast(y_pred, self.dtype), (-1, self.num_classes))
        if self.task == "multiclass":
            true_onehot = ops.one_hot(ops.argmax(y_true, axis=-1), self.num_classes, dtype=self.dtype)[:, None, :]
            pred_onehot = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype=self.dtype)[:, None, :]
        else:
            true_positive = ops.cast(y_true >= 0.5, "int32")
            pred_positive = ops.cast(y_pred >= self.threshold, "int32")
            true_onehot = ops.one_hot(true_positive, 2, dtype=self.dtype)
            pred_onehot = ops.one_hot(pred_positive, 2, dtype=self.dtype)
        # true_onehot, pred_onehot: (batch, groups, K)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1, 1))
            true_onehot = true_onehot * weight
        counts = ops.einsum("bgi,bgj->gij", true_onehot, pred_onehot)
        self.confusion.assign(self.confusion + counts)

    def result(self):
        support = ops.sum(self.confusion, axis=-1)
        correct = ops.diagonal(self.confusion, axis1=-2, axis2=-1)
        present = ops.cast(support > 0, self.dtype)
        recall = ops.divide_no_nan(correct, support)
        per_group = ops.divide_no_nan(ops.sum(recall * present, axis=-1), ops.sum(present, axis=-1))
        return ops.mean(per_group)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, dtype=self.confusion.dtype))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes, "task": self.task,
                "threshold": self.threshold}
