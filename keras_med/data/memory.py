"""Decoded pixels in memory, shared with TensorFlow without a copy.

TensorFlow-specific (DLPack into `tf.Tensor`); used by the decode check pass and the in-memory pipeline.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# TensorFlow kernels need 64-byte aligned buffers (Eigen's EIGEN_MAX_ALIGN_BYTES).
TF_ALIGNMENT = 64


def aligned_empty(shape: tuple, dtype=np.uint8) -> np.ndarray:
    """`np.empty` whose data starts on a 64-byte boundary, so TensorFlow can share it (`pixels_tensor`)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + TF_ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % TF_ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def pixels_tensor(pixels: np.ndarray) -> tf.Tensor:
    """A tensor over the decoded pixels without TensorFlow's own copy.

    `tf.constant` and `tf.convert_to_tensor` copy the array, even an aligned one: 2.2-3.5 s for
    HAM10000's 492 MB at 128 px on the 2-core machine under load, longer than decoding the JPEGs.
    DLPack hands TensorFlow the numpy buffer itself; TensorFlow requires it 64-byte aligned, so
    an unaligned array (a split's fancy-indexed subset, say) is first copied by numpy into an
    aligned one (tens of milliseconds for the same size once the memory is mapped).
    """
    pixels = np.asarray(pixels)
    if not pixels.flags.c_contiguous or pixels.ctypes.data % TF_ALIGNMENT:
        aligned = aligned_empty(pixels.shape, pixels.dtype)
        np.copyto(aligned, pixels)
        pixels = aligned
    return tf.experimental.dlpack.from_dlpack(pixels.__dlpack__())
