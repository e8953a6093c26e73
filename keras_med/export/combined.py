"""The model a SavedModel serves: K checkpoints averaged, flip test-time augmentation and the decision rule.

Whatever turned the scored predictions into their final form is here, inside the served graph, so
a served prediction equals the scored one: the mean of the members' probabilities over the
original and flipped images (as `keras_med.evaluation.external.predict_with_tta` averages them),
then the per-class logit adjustment (`keras_med.evaluation.decision_rule`).

The out-of-distribution guard is the **first member's**, computed from its own features and its
own probabilities on the original image, before averaging, flips or the decision rule: that is what
it was fitted on (`trust/` of its run), so its pass rate still holds. The conformal sets compare
those same probabilities, or the served answer when they were calibrated on it
(`ConformalSets.applies_to`; `keras_med.export.guards`). Grad-CAM (the `explain` signature) is also
the first member's.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from keras_med.evaluation.tta import TTA_MODES
from keras_med.models.features import features_and_predictions_model
from keras_med.run_directory import RunDirectory

# As in keras_med.evaluation.decision_rule: a probability that underflowed keeps a finite logit.
_FLOOR = 1e-12


class FlipImages(keras.layers.Layer):
    """The images mirrored along `axis` (2: left-right, 1: up-down) of `(B, H, W, C)`."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, images):
        return keras.ops.flip(images, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class AdjustLogits(keras.layers.Layer):
    """`softmax(log p + biases)`: `keras_med.evaluation.decision_rule.adjust_probabilities` in `keras.ops`.

    Args:
        biases: one bias per class.
    """

    def __init__(self, biases: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.biases = [float(b) for b in biases]

    def call(self, probabilities):
        logits = keras.ops.log(keras.ops.maximum(keras.ops.cast(probabilities, "float32"), _FLOOR))
        return keras.ops.softmax(logits + keras.ops.convert_to_tensor(np.asarray(self.biases, np.float32)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "biases": self.biases}


def check_members(members: Sequence[keras.Model]) -> list[keras.Model]:
    """The members as a list, refused unless they take the same images and answer the same width."""
    members = list(members)
    if not members:
        raise ValueError("an ensemble needs at least one model, got none")
    shape, width = tuple(members[0].inputs[0].shape[1:]), members[0].outputs[0].shape[-1]
    for index, member in enumerate(members[1:], start=2):
        if tuple(member.inputs[0].shape[1:]) != shape or member.outputs[0].shape[-1] != width:
            raise ValueError(f"ensemble member {index} takes {tuple(member.inputs[0].shape[1:])} and answers "
                             f"{member.outputs[0].shape[-1]} outputs; member 1 takes {shape} and answers {width}")
    return members


def is_plain(members: Sequence, tta: str = "none", logit_biases=None) -> bool:
    """Whether the served model is the single member itself (nothing to average or adjust)."""
    return len(members) == 1 and tta == "none" and logit_biases is None


def serving_model(members: Sequence[keras.Model], *, tta: str = "none", logit_biases=None,
                  guard_features: str | None = None) -> keras.Model:
    """One functional model computing the served answer of `members`.

    Args:
        members: Keras models to the contract (same input size and output width).
        tta: "none", or "flips": the mean over the original, left-right and up-down flipped images.
        logit_biases: multiclass only: per-class biases of the decision rule, or None.
        guard_features: None, or also answer the first member's own predictions and these features
            (`middle_block` or `pooled`: the ones the run's guard was fitted on), for the guards
            (see the module docstring).

    Returns:
        Without `guard_features`: a model answering the served probabilities `(B, C)` (the single
        member itself when there is nothing to combine). With it: one float32 tensor
        `[answer (C), first member's predictions (C), features (D)]`, so the serving graph keeps
        its single model call.

    Example:
    >>> served = serving_model([model_a, model_b], tta="flips")
    >>> probabilities = served.predict(images)
    """
    members = check_members(members)
    if tta not in TTA_MODES:
        raise ValueError(f"tta: expected one of {list(TTA_MODES)}, got {tta!r}")
    if logit_biases is not None and len(logit_biases) != members[0].outputs[0].shape[-1]:
        raise ValueError(f"logit_biases: expected one per class ({members[0].outputs[0].shape[-1]}), "
                         f"got {len(logit_biases)}")
    first = members[0]
    if is_plain(members, tta, logit_biases) and not guard_features:
        return first
    # Checkpoints of one recipe share a model name, which a functional model refuses twice: each
    # member is wrapped under a name of its own (same layers, same weights).
    renamed = [keras.Model(member.inputs[0], member.outputs[0], name=f"member{index}")
               for index, member in enumerate(members, start=1)]
    inputs = keras.Input(shape=tuple(first.inputs[0].shape[1:]), name="images")
    views = [inputs] + ([FlipImages(2, name="flip_left_right")(inputs), FlipImages(1, name="flip_up_down")(inputs)]
                        if tta == "flips" else [])
    guarded = features_and_predictions_model(first, guard_features) if guard_features else None
    answers, guard_outputs = [], []
    for index, member in enumerate(renamed):
        for view_index, view in enumerate(views):
            if guarded is not None and index == 0 and view_index == 0:
                predictions, features = guarded(view)
                guard_outputs = [keras.ops.cast(predictions, "float32"), keras.ops.cast(features, "float32")]
                answers.append(guard_outputs[0])
            else:
                answers.append(keras.ops.cast(member(view), "float32"))
    answer = answers[0] if len(answers) == 1 else keras.layers.Average(name="member_mean")(answers)
    if logit_biases is not None:
        answer = AdjustLogits(logit_biases, name="decision_rule")(answer)
    outputs = answer if guarded is None else keras.ops.concatenate([answer, *guard_outputs], axis=-1)
    return keras.Model(inputs, outputs, name=f"{first.name}_served")


def read_run_tta(model_path) -> str:
    """The run's `[evaluation] tta` (its config.toml beside the model or one level up), else "none"."""
    return RunDirectory.of_model(model_path).read_tta()
