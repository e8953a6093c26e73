"""The `explain` signature: Grad-CAM computed inside the SavedModel, so TF Serving answers heat maps too.

The map is the project's one Grad-CAM, `keras_med.explain.cam.GradcamModel` (written in
`keras.ops`, its gradient taken with `tf.GradientTape` while the signature is traced), the very
function `keras-med explain`, the report and the JAX backend call; so the served heat map is the
report's. Its gradients are taken through the Keras model's own layers (not the guard-wrapped copy
the prediction signatures call), so the same variables serve both. TensorFlow graph code around it
(class checks, the PNG overlay) is traced into the SavedModel, which is why it lives in
keras_med/export.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from matplotlib import colormaps

from keras_med.explain.cam import GradcamModel

EXPLAIN_SIGNATURE = "explain"
CLASS_INDEX_INPUT = "class_index"
# Outputs added to those of the prediction signatures (see `ServingFunctions`).
EXPLAIN_OUTPUT_KEYS = ("heatmap", "explained_class_index", "explained_class_name", "feature_layer",
                       "overlay_png_bytes")
# `keras_med.explain.overlay.blend_heatmap`'s weight of the heat map colours.
OVERLAY_ALPHA = 0.4
# The serving graph's name for the shared Grad-CAM (`ServingFunctions.gradcam`).
InGraphGradcam = GradcamModel


def explain_outputs(gradcam: GradcamModel, answer: dict, images: tf.Tensor, class_index: tf.Tensor,
                    class_names) -> dict:
    """The explain signature's outputs: the prediction outputs plus the heat map of the explained class.

    Args:
        gradcam: The first model's `GradcamModel`.
        answer: The prediction outputs for `images` (`ServingFunctions._answer`).
        images: float32 (B, S, S, 3), zeros for invalid rows.
        class_index: int32 (B,): the class to explain per row, -1 for the served top class.
        class_names: The metadata's class names.

    Returns:
        `answer` with `heatmap` float32 (B, S, S) in 0..1 (zeros for an invalid row),
        `explained_class_index` int32 (B,) (-1 for an invalid row), `explained_class_name` string
        (B,), `feature_layer` string (B,); a row whose `class_index` is out of range is invalid
        with reason `bad_class_index`.
    """
    count = len(class_names)
    class_index = tf.broadcast_to(tf.cast(class_index, tf.int32), tf.shape(answer["valid"]))
    in_range = (class_index >= -1) & (class_index < count)
    bad = tf.strings.join(["bad_class_index: ", tf.strings.as_string(class_index),
                           f"; expected -1 (the top class) or 0..{count - 1}"])
    reason = tf.where(answer["valid"] & ~in_range, bad, answer["reason"])
    valid = tf.equal(reason, "")
    explained = tf.where(class_index >= 0, class_index, answer["top_class_index"])
    explained = tf.where(valid, explained, 0)
    size = images.shape[1]
    heatmaps = tf.cond(tf.shape(images)[0] > 0,
                       lambda: gradcam.logits_and_maps(images, explained)[1],
                       lambda: tf.zeros([0, size, size], tf.float32))
    names = tf.constant(list(class_names), tf.string)
    outputs = dict(answer)
    outputs.update({
        "valid": valid,
        "reason": reason,
        "heatmap": tf.where(valid[:, None, None], heatmaps, 0.0),
        "explained_class_index": tf.where(valid, explained, -1),
        "explained_class_name": tf.where(valid, tf.gather(names, explained), ""),
        "feature_layer": tf.fill(tf.shape(valid), gradcam.layer_name),
        "overlay_png_bytes": tf.where(valid, overlay_pngs(images, heatmaps), ""),
    })
    return outputs


def overlay_pngs(images: tf.Tensor, heatmaps: tf.Tensor) -> tf.Tensor:
    """PNG bytes (B,) of each heat map in the 'jet' colours blended over its image.

    A client (the web page, `keras-med explain --server`) then needs neither the preprocessing nor
    matplotlib to show the map where the model looked, and the answer is a few kB instead of the
    S x S floats of `heatmap` as JSON.

    Args:
        images: float32 (B, S, S, 3) in 0..255, as the model saw them.
        heatmaps: float32 (B, S, S) in 0..1.
    """
    # The 256-colour table `blend_heatmap` samples from (matplotlib's jet), as a graph constant,
    # indexed as matplotlib does a float in 0..1: floor(x * 256), 1.0 onto the last entry.
    table = tf.constant(colormaps["jet"](np.arange(256))[:, :3] * 255.0, tf.float32)
    levels = tf.minimum(tf.cast(tf.floor(tf.clip_by_value(heatmaps, 0.0, 1.0) * 256.0), tf.int32), 255)
    blended = (1.0 - OVERLAY_ALPHA) * images + OVERLAY_ALPHA * tf.gather(table, levels)
    pixels = tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)
    return tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.string)
