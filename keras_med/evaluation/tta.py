"""Test-time augmentation: a model's probabilities over a dataset, averaged over flipped views.

Kept apart from `external` so that reading a run's cached predictions (`run_predictions`) does
not import the external-evaluation command, which imports back into the decision rule.
"""

from __future__ import annotations

import numpy as np

TTA_MODES = ("none", "flips")


def _predict_batch(model, images: np.ndarray) -> np.ndarray:
    """One batch's probabilities; padded to a multiple of the devices a JAX distribution splits it
    over (it cannot split unequally), the padding's rows dropped again."""
    from keras_med.training.runtime import data_parallel_devices

    rows = len(images)
    padding = -rows % data_parallel_devices()
    if padding:
        images = np.concatenate([images, np.repeat(images[-1:], padding, axis=0)])
    return np.asarray(model.predict(images, batch_size=len(images), verbose=0))[:rows]


def predict_with_tta(model, dataset, tta: str = "none") -> np.ndarray:
    """Model probabilities over a `(images, targets)` dataset; "flips" averages the original,
    horizontally and vertically flipped images.

    Args:
        model: a Keras model taking float 0..255 images.
        dataset: a `tf.data.Dataset` of `(images (B, S, S, 3), targets)` batches.
        tta: "none" or "flips".
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta: expected one of {list(TTA_MODES)}, got {tta!r}")
    outputs = []
    for images, _ in dataset:
        images = np.asarray(images)
        views = [images] if tta == "none" else [images, images[:, :, ::-1], images[:, ::-1]]
        # predict, not predict_on_batch: under a tf.distribute strategy predict_on_batch returned
        # each replica's rows twice (32 rows for a batch of 16 on two replicas); predict gathers
        # the replicas' predictions in order, so figures that need every prediction see each once.
        outputs.append(np.mean([_predict_batch(model, view) for view in views], axis=0))
    return np.concatenate(outputs).astype(np.float64)
