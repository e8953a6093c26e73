"""keras_med: medical image classification with Keras 3, from files on disk to TF Serving."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, oneDNN notices) buries the
# recipe's own progress lines; keep warnings and errors. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
