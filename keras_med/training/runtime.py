"""Runtime set-up: seed, mixed precision, XLA and the `tf.distribute` strategy.

TensorFlow-specific on purpose: this is the one training module that talks to TF directly
(device discovery and distribution strategies have no backend-agnostic Keras API).
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from keras_med.config import TrainConfig

logger = logging.getLogger(__name__)

_SWITCHES = ("auto", "on", "off")


def gpu_available() -> bool:
    """Whether TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def _resolve_switch(value: str, argument: str) -> bool:
    if value not in _SWITCHES:
        raise ValueError(f"{argument}: expected one of {list(_SWITCHES)}, got {value!r}")
    # Both pay off only on a GPU: on a CPU float16 is emulated (slower) and XLA gains little
    # for convolution-heavy models while adding compile time.
    return gpu_available() if value == "auto" else value == "on"


def use_mixed_precision(train_config: TrainConfig) -> bool:
    """Resolve `train_config.mixed_precision` ('auto' = on when a GPU is present).

    Args:
        train_config: The training configuration.
    """
    return _resolve_switch(train_config.mixed_precision, "mixed_precision")


def use_jit_compile(train_config: TrainConfig) -> bool:
    """Resolve `train_config.jit_compile` ('auto' = on when a GPU is present).

    Args:
        train_config: The training configuration.
    """
    return _resolve_switch(train_config.jit_compile, "jit_compile")


def _tpu_strategy() -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


STRATEGIES = {
    "default": tf.distribute.get_strategy,
    "mirrored": tf.distribute.MirroredStrategy,
    # Reads the cluster from the TF_CONFIG environment variable.
    "multiworker": tf.distribute.MultiWorkerMirroredStrategy,
    "tpu": _tpu_strategy,
}


def setup_runtime(train_config: TrainConfig) -> tf.distribute.Strategy:
    """Seed everything, set the dtype policy and return the distribution strategy.

    Build and compile the model inside `with strategy.scope():`. Call once, before any model
    is built (the dtype policy applies to layers created afterwards).

    Args:
        train_config: Uses `seed`, `mixed_precision` and `strategy`.

    Returns:
        The `tf.distribute.Strategy` named by `train_config.strategy`.
    """
    if train_config.strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {sorted(STRATEGIES)}, got {train_config.strategy!r}")
    keras.utils.set_random_seed(train_config.seed)
    policy = "mixed_float16" if use_mixed_precision(train_config) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    strategy = STRATEGIES[train_config.strategy]()
    logger.info("runtime: seed %d, dtype policy %s, XLA %s, strategy %s (%d replicas), GPU %s",
                train_config.seed, policy, use_jit_compile(train_config), type(strategy).__name__,
                strategy.num_replicas_in_sync, gpu_available())
    return strategy
