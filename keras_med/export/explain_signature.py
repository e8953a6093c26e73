"""The `explain` signature: Grad-CAM computed inside the SavedModel, so TF Serving answers heat maps too.

The formula is tf-keras-vis's `Gradcam` as `keras_med.explain.gradcam.compute_gradcam` calls it
(the reference the tests hold this to): on the feature map the model names
(`keras_med.models.features.feature_map_layer_name`), the score is the explained class's *linear*
output (the `predictions` layer without its softmax/sigmoid, which is what tf-keras-vis's
`ReplaceToLinear` does; binary: the logit, negated for the negative class); the channel weights
are the spatial mean of the score's gradients; the map is the ReLU of the weighted sum of
channels, resized to the model size with corner-aligned bilinear interpolation
(tf-keras-vis uses `scipy.ndimage.zoom(order=1)`, which aligns corners), then scaled to 0..1 per
image as `(m - min) / (max - min + 1e-7)`.

The gradients are taken through the Keras model's own layers (not the guard-wrapped copy the
prediction signatures call), so the same variables serve both. TensorFlow graph code: it is traced
into the SavedModel, which is why it lives in keras_med/export.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps

from keras_med.models.features import feature_map_layer_name

EXPLAIN_SIGNATURE = "explain"
CLASS_INDEX_INPUT = "class_index"
# Outputs added to those of the prediction signatures (see `ServingFunctions`).
EXPLAIN_OUTPUT_KEYS = ("heatmap", "explained_class_index", "explained_class_name", "feature_layer",
                       "overlay_png_bytes")
# `keras_med.explain.overlay.blend_heatmap`'s weight of the heat map colours.
OVERLAY_ALPHA = 0.4
# tf-keras-vis normalises with keras.backend.epsilon().
_EPSILON = 1e-7


class InGraphGradcam:
    """Grad-CAM heat maps for a batch of model-size images, as graph code.

    Args:
        model: The Keras model to the contract (float32 0..255 in, a Dense `predictions` layer out).
        layer_name: The feature-map layer; None asks the model, as the project's Grad-CAM does.
    """

    def __init__(self, model, layer_name: str | None = None):
        self.layer_name = layer_name or feature_map_layer_name(model)
        self.output_layer = model.get_layer("predictions")
        if not isinstance(self.output_layer, keras.layers.Dense):
            raise ValueError(f"the explain signature needs a Dense 'predictions' layer; "
                             f"'{model.name}' has a {type(self.output_layer).__name__}")
        # One pass answering the feature map and the input of the output layer; the logits are
        # then the output layer's kernel and bias applied without its activation.
        self.feature_model = keras.Model(model.inputs, [model.get_layer(self.layer_name).output,
                                                        self.output_layer.input], name=f"{model.name}_gradcam")
        self.binary = self.output_layer.units == 1

    def logits_and_maps(self, images: tf.Tensor, class_index: tf.Tensor):
        """The linear outputs (B, units) and the 0..1 heat maps (B, S, S) for `class_index` (B,) int32.

        Args:
            images: float32 (B, S, S, 3) in 0..255.
            class_index: The class explained per row (binary: 0 negative, 1 positive), in range.
        """
        size = images.shape[1:3].as_list()
        with tf.GradientTape() as tape:
            # The gradient is taken with respect to this intermediate tensor (as tf-keras-vis does),
            # so it is used as the model answered it, before any cast.
            feature_map, penultimate = self.feature_model(images, training=False)
            kernel = tf.cast(self.output_layer.kernel, tf.float32)
            logits = tf.matmul(tf.cast(penultimate, tf.float32), kernel)
            if self.output_layer.use_bias:
                logits = logits + tf.cast(self.output_layer.bias, tf.float32)
            if self.binary:
                score = logits[:, 0] * tf.where(tf.equal(class_index, 1), 1.0, -1.0)
            else:
                score = tf.gather(logits, class_index, axis=1, batch_dims=1)
        gradients = tf.cast(tape.gradient(score, feature_map), tf.float32)
        feature_map = tf.cast(feature_map, tf.float32)
        weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(feature_map * weights, axis=-1))
        cam = tf.raw_ops.ResizeBilinear(images=cam[..., None], size=tf.constant(size, tf.int32),
                                        align_corners=True, half_pixel_centers=False)[..., 0]
        low = tf.reduce_min(cam, axis=[1, 2], keepdims=True)
        high = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        return logits, (cam - low) / (high - low + _EPSILON)


def explain_outputs(gradcam: InGraphGradcam, answer: dict, images: tf.Tensor, class_index: tf.Tensor,
                    class_names) -> dict:
    """The explain signature's outputs: the prediction outputs plus the heat map of the explained class.

    Args:
        gradcam: The model's `InGraphGradcam`.
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
