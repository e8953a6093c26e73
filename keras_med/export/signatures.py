"""The serving graph: decode, validate, resize, run the model, and answer with names and decisions.

Both serving signatures end in the same post-processing so that a JPEG sent to TF Serving and the
same pixels sent as an array get the same answer. Decoding and resizing are the training
pipeline's own functions (``keras_med.data.decode``: JPEG decoded at reduced scale when the size
allows, bilinear resize or pad, rounded to uint8), so served images are prepared exactly as the
training images were. Everything here is TensorFlow graph code (it is traced into the
SavedModel), which is why it lives in keras_med/export.
"""

from __future__ import annotations

import tensorflow as tf

from keras_med.data.decode import decode_image, resize_image
import keras_med.export.explain_signature as explain_signature
import keras_med.export.image_checks as image_checks
from keras_med.export.combined import check_members, serving_model
from keras_med.export.guards import ServingGuards
from keras_med.export.metadata import ServingMetadata

IMAGE_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_pixels"
METADATA_SIGNATURE = "metadata"
EXPLAIN_SIGNATURE = explain_signature.EXPLAIN_SIGNATURE
IMAGE_INPUT = "image_bytes"
PIXELS_INPUT = "pixels"
OUTPUT_KEYS = ("probabilities", "top_class_index", "top_class_name", "decisions", "valid", "reason", "class_names")


class ServingFunctions:
    """The functions behind the SavedModel's signatures, for one model and its metadata.

    Outputs of both prediction functions, for a batch of ``B`` images and ``K`` class names:
    ``probabilities`` float32 (B, K) aligned with ``class_names`` (binary: [1 - p, p]);
    ``top_class_index`` int32 (B,) and ``top_class_name`` string (B,) (binary: the thresholded
    decision; otherwise the most probable class); ``decisions`` bool (B, K) (the class's
    probability reaches its threshold; multiclass without thresholds: the top class only);
    ``valid`` bool (B,) (false for an input that cannot be decoded, is smaller than
    ``metadata.min_image_size`` on its short side, or has pixels outside 0..255; its other
    outputs are then 0, -1, "" and false); ``reason`` string (B,) ("" when valid, else
    ``"<code>: <explanation>"``, codes in ``image_checks.REASON_CODES``); ``class_names`` string
    (B, K), repeated per row because TF Serving's row format needs a batch dimension. The trust
    outputs (``keras_med.export.guards``): ``in_distribution`` bool (B,) (false for a row out of
    distribution or invalid; its ``decisions`` are then all false), ``ood_score`` float32 (B,), and
    ``prediction_set`` bool (B, K), the conformal set (multi-label: the decisions).

    Args:
        model: Keras model to the contract in docs/contracts.md (float32 0..255 in, ``predictions`` out),
            or a list of them: an ensemble whose probabilities are averaged (``keras_med.export.combined``;
            the guard and Grad-CAM are the first member's; the set see ``guards``).
        metadata: Class names, task, image size, thresholds, resize mode and minimum image size.
        guards: The out-of-distribution guard and conformal sets; None answers every valid row as
            in distribution with score 0 and the decisions as its set.
        tta: "none", or "flips": the answer is the mean over the original and flipped images.
        logit_biases: multiclass: the decision rule's per-class biases, applied in the graph; or None.
    """

    def __init__(self, model, metadata: ServingMetadata, guards: ServingGuards | None = None, *,
                 tta: str = "none", logit_biases=None):
        members = check_members(model if isinstance(model, (list, tuple)) else [model])
        self.guards = guards or ServingGuards()
        guard = self.guards.guard
        self.model = serving_model(members, tta=tta, logit_biases=logit_biases,
                                   guard_features=guard.features if guard else None)
        if guard is not None and guard.dimension is not None:
            # [answer (C), first member's predictions (C), features (D)]: a guard fitted on other features
            # than it records would otherwise fail deep inside the traced graph.
            width = members[0].outputs[0].shape[-1]
            served = self.model.outputs[0].shape[-1] - 2 * width
            if served != guard.dimension:
                raise ValueError(f"ood_guard: fitted on {guard.dimension} features but the model's "
                                 f"'{guard.features}' features have {served}; fit it on "
                                 f"keras_med.models.features.features_and_predictions_model(model, '{guard.features}')")
        self.metadata = metadata
        self.gradcam = explain_signature.InGraphGradcam(members[0])
        # Every prediction signature calls the model through this one function, so the network is
        # traced once and stored once in the SavedModel instead of once per signature (three
        # times). With the signatures described without a reload, densenet121's export at 32 px
        # took 25 % less CPU (74.5 -> 55.8 s).
        size = metadata.image_size
        self._served_model = tf.function(lambda images: self.model(images, training=False), autograph=False,
                                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])

    # --- signatures -----------------------------------------------------------------------------
    def predict_image_bytes(self, image_bytes):
        """Predict from a batch of encoded images (tf.string, shape (B,)); a bad row is flagged, not fatal.

        The format is read from the bytes (JPEG, PNG, GIF, BMP or WebP, whatever the file was called);
        see ``image_checks`` for how a corrupt row is kept from failing the others.
        """
        return self._answer(*self._decode_rows(image_bytes))

    def explain_image_bytes(self, image_bytes, class_index):
        """The ``serving_default`` outputs plus the Grad-CAM heat map of one class per image.

        Args:
            image_bytes: tf.string (B,) encoded images.
            class_index: int32 (B,): the class to explain per row, -1 for the served top class.

        See ``keras_med.export.explain_signature.explain_outputs`` for the added outputs.
        """
        images, reasons = self._decode_rows(image_bytes)
        return explain_signature.explain_outputs(self.gradcam, self._answer(images, reasons), images, class_index,
                                                 self.metadata.class_names)

    def predict_pixels(self, pixels):
        """Predict from float32 pixels (B, H, W, 3) in 0..255 of any H, W; resized and rounded in the graph."""
        pixels = tf.convert_to_tensor(pixels, tf.float32)
        reasons = image_checks.pixel_reasons(pixels, self.metadata.min_image_size)
        images = self._resize(pixels)
        images = tf.where(tf.equal(reasons, "")[:, None, None, None], images, tf.zeros_like(images))
        return self._answer(images, reasons)

    def describe(self):
        """The metadata as constants, so a client of the SavedModel alone can read it."""
        meta = self.metadata
        return {
            "class_names": tf.constant(meta.class_names, tf.string),
            "task": tf.constant(meta.task, tf.string),
            "image_size": tf.constant(meta.image_size, tf.int32),
            "thresholds": tf.constant(meta.effective_thresholds(), tf.float32, shape=[len(meta.effective_thresholds())]),
            "resize": tf.constant(meta.resize, tf.string),
            "min_image_size": tf.constant(meta.min_image_size, tf.int32),
            **self.guards.describe(),
        }

    def input_signatures(self) -> dict:
        """Input TensorSpecs per signature name, in the order they are registered."""
        return {
            IMAGE_SIGNATURE: [tf.TensorSpec([None], tf.string, name=IMAGE_INPUT)],
            PIXELS_SIGNATURE: [tf.TensorSpec([None, None, None, 3], tf.float32, name=PIXELS_INPUT)],
            METADATA_SIGNATURE: [],
            EXPLAIN_SIGNATURE: [tf.TensorSpec([None], tf.string, name=IMAGE_INPUT),
                                tf.TensorSpec([None], tf.int32, name=explain_signature.CLASS_INDEX_INPUT)],
        }

    def functions(self) -> dict:
        """The Python functions per signature name (same keys as ``input_signatures``)."""
        return {IMAGE_SIGNATURE: self.predict_image_bytes, PIXELS_SIGNATURE: self.predict_pixels,
                METADATA_SIGNATURE: self.describe, EXPLAIN_SIGNATURE: self.explain_image_bytes}

    # --- pieces ---------------------------------------------------------------------------------
    def _decode_rows(self, image_bytes):
        """Model-size images (zeros for a bad row) and the reason per row (\"\" when valid)."""
        meta = self.metadata
        formats = image_checks.sniff_formats(image_bytes)
        images, dims, decoded = image_checks.decode_rows(image_bytes, formats, self._decode_and_resize,
                                                         meta.image_size, meta.min_image_size)
        return images, image_checks.byte_reasons(image_bytes, formats, dims, decoded, meta.min_image_size)

    def _decode_and_resize(self, data):
        image = decode_image(data, self.metadata.image_size, self.metadata.resize)
        return tf.ensure_shape(tf.cast(image, tf.float32), [self.metadata.image_size, self.metadata.image_size, 3])

    def _resize(self, images):
        size = self.metadata.image_size
        resized = tf.cast(resize_image(images, size, self.metadata.resize), tf.float32)
        return tf.ensure_shape(resized, [*images.shape[:-3], size, size, 3])

    def _answer(self, images, reasons):
        """The outputs of both prediction signatures: the one place that builds them (see the class doc)."""
        meta = self.metadata
        valid = tf.equal(reasons, "")
        names = tf.constant(meta.class_names, tf.string)
        # An empty batch skips the model: some CPU kernels mis-shape zero-row convolutions.
        width = self.model.outputs[0].shape[-1]
        raw = tf.cond(tf.shape(images)[0] > 0,
                      lambda: tf.cast(self._served_model(images), tf.float32),
                      lambda: tf.zeros([0, width], tf.float32))
        # With a guard the model also answers the first member's own predictions and its pooled
        # features, after the served answer (keras_med.export.combined.serving_model).
        outputs = meta.num_outputs
        raw, guard_raw, features = raw[:, :outputs], raw[:, outputs:2 * outputs], raw[:, 2 * outputs:]
        if self.guards.guard is None:
            guard_raw = raw
        if meta.task == "binary":
            positive = raw[:, 0]
            probabilities = tf.stack([1.0 - positive, positive], axis=-1)
            guard_probabilities = tf.stack([1.0 - guard_raw[:, 0], guard_raw[:, 0]], axis=-1)
            top = tf.cast(positive >= meta.effective_thresholds()[0], tf.int32)
            decisions = tf.stack([tf.equal(top, 0), tf.equal(top, 1)], axis=-1)
        else:
            probabilities, guard_probabilities = raw, guard_raw
            top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            thresholds = meta.effective_thresholds()
            if thresholds:
                decisions = probabilities >= tf.constant(thresholds, tf.float32)
            else:
                decisions = tf.cast(tf.one_hot(top, len(meta.class_names)), tf.bool)
        batch = tf.shape(probabilities)[0]
        decisions = tf.logical_and(decisions, valid[:, None])
        trust = self.guards.outputs(features, guard_probabilities, probabilities, decisions, valid, images)
        return {
            "probabilities": tf.where(valid[:, None], probabilities, 0.0),
            "top_class_index": tf.where(valid, top, -1),
            "top_class_name": tf.where(valid, tf.gather(names, top), ""),
            "decisions": tf.logical_and(decisions, trust["in_distribution"][:, None]),
            "valid": valid,
            "reason": reasons,
            "class_names": tf.tile(names[None, :], [batch, 1]),
            **trust,
        }

