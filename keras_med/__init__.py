"""keras_med: medical image classification with Keras 3, from files on disk to TF Serving."""

__version__ = "0.1.0"
