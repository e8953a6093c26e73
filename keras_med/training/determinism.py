"""Op-level determinism: the same inputs give the same outputs from every TensorFlow kernel.

The input pipeline is reproducible on its own (`keras_med.data.batch_seeds`); what is left is the
kernels. TensorFlow's `enable_op_determinism` picks deterministic kernels (on a GPU: no atomic
adds in reductions and convolution back-propagation, at a cost that could not be measured on the
CPU-only machine this was written on) and raises on an op that has none.
"""

from __future__ import annotations

import logging

import keras

logger = logging.getLogger(__name__)


def enable_determinism(enabled: bool = True) -> bool:
    """Turn TensorFlow's op determinism on when `enabled`; returns whether it was asked for.

    Call before the model and the datasets are built; TensorFlow cannot turn it off again in the
    same process. On the JAX backend it still covers the tf.data pipeline; JAX's own GPU kernels
    need XLA_FLAGS=--xla_gpu_deterministic_ops=true.
    """
    import tensorflow as tf

    if enabled:
        tf.config.experimental.enable_op_determinism()
    logger.info("op determinism %s (backend %s)", "on" if enabled else "off", keras.backend.backend())
    return enabled
