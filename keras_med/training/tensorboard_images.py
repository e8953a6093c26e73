"""A callback writing a few training images with their labels to TensorBoard.

TensorFlow-specific (`tf.summary`), kept in its own module so the rest of training stays
backend-agnostic. Keras's TensorBoard callback logs weights as images but not input samples,
which is what shows whether augmentation and labels look right.
"""

from __future__ import annotations

import numpy as np
import keras
import tensorflow as tf


class TrainingImagesSummary(keras.callbacks.Callback):
    """Write `images` (0..255) to TensorBoard once, when training begins.

    Args:
        log_dir: TensorBoard log directory (images go to `<log_dir>/train_images`).
        images: Array (N, H, W, 3) in 0..255.
        captions: One text per image (e.g. its label), written as a text summary.
        max_images: How many images to write.
    """

    def __init__(self, log_dir: str, images, captions: list[str], max_images: int = 8):
        super().__init__()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images: expected an array (N, H, W, 1 or 3), got shape {images.shape}")
        if len(captions) != len(images):
            raise ValueError(f"captions: expected {len(images)} captions, got {len(captions)}")
        self.log_dir = str(log_dir)
        self.images = images[:max_images]
        self.captions = list(captions)[:max_images]
        self.max_images = max_images

    def on_train_begin(self, logs=None):
        step = int(getattr(self.model, "_initial_epoch", 0) or 0)
        writer = tf.summary.create_file_writer(f"{self.log_dir}/train_images")
        with writer.as_default():
            tf.summary.image("training_images", np.clip(self.images / 255.0, 0.0, 1.0).astype("float32"),
                             step=step, max_outputs=self.max_images,
                             description="Training images after augmentation, in order: "
                             + "; ".join(self.captions))
            tf.summary.text("training_labels",
                            "\n".join(f"{index}: {caption}" for index, caption in enumerate(self.captions)),
                            step=step)
        writer.close()

    def get_config(self):
        return {"log_dir": self.log_dir, "max_images": self.max_images}
