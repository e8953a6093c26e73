"""Runtime set-up: seed, mixed precision, XLA and the distribution over devices and machines.

On TensorFlow the distribution is a `tf.distribute` strategy; on JAX it is Keras's distribution
API (`keras.distribution.DataParallel` over every local device). `setup_runtime` hides the
difference behind a `Runtime` whose `scope()` is where models are built and compiled.
Backend-specific on purpose: device discovery and distribution have no backend-agnostic Keras API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from pathlib import Path

import keras

from keras_med.config import DataConfig, TrainConfig
from keras_med.errors import ConfigError

logger = logging.getLogger(__name__)

_SWITCHES = ("auto", "on", "off")
STRATEGY_NAMES = ("default", "mirrored", "multiworker", "tpu")


def gpu_available() -> bool:
    """Whether the running Keras backend sees at least one GPU."""
    if keras.backend.backend() == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    import tensorflow as tf

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

    JAX always compiles the step with XLA (`jit_compile` is ignored there).

    Args:
        train_config: The training configuration.
    """
    return _resolve_switch(train_config.jit_compile, "jit_compile")


@dataclasses.dataclass
class Runtime:
    """Where models are built and trained: the distribution and how many replicas it has.

    Args:
        name: The strategy name of the configuration (`default`, `mirrored`, `multiworker`, `tpu`).
        num_replicas_in_sync: Devices (all workers together) that each take a share of a batch.
        strategy: The `tf.distribute.Strategy` (TensorFlow), else None.
        distribution: The `keras.distribution.Distribution` (JAX), else None.
    """

    name: str
    num_replicas_in_sync: int = 1
    strategy: object = None
    distribution: object = None

    def scope(self):
        """Context to build and compile models in (the strategy's scope; a no-op on JAX, where the
        distribution is set globally by `setup_runtime`)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def is_multi_worker(self) -> bool:
        """Whether this process is one worker of `--strategy multiworker` (TensorFlow's
        `MultiWorkerMirroredStrategy`)."""
        if self.strategy is None:
            return False
        from keras_med.training.multiworker import is_multi_worker

        return is_multi_worker(self.strategy)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory and the export (always, but on the
        non-chief workers of `--strategy multiworker`)."""
        if self.strategy is None:
            return True
        from keras_med.training.multiworker import is_chief

        return is_chief(self.strategy)

    def output_directory(self, path) -> Path:
        """Where this process writes what belongs at `path`: `path` on the chief, a private folder
        of its own on the other workers (`keras_med.training.multiworker.worker_directory`)."""
        if self.is_chief:
            return Path(path)
        from keras_med.training.multiworker import worker_directory

        return worker_directory(path, self.strategy)


def augment_on_device(data_config: DataConfig) -> bool:
    """Resolve `data_config.augment_on`: whether augmentation and MixUp/CutMix run in the training step.

    'auto' is the device when a GPU is present: a GPU trains faster than two to eight CPU cores can
    augment (the host pipeline with augmentation ran at 0.35x the decode-only rate on a 2-core CPU),
    while on a CPU-only machine both places share the same cores. The device path wraps Keras's
    TensorFlow training step, so it needs the TensorFlow backend ('auto' is the host on JAX).

    Args:
        data_config: Uses `augment_on`.
    """
    place = data_config.augment_on
    if place not in ("auto", "host", "device"):
        raise ValueError(f"augment_on: expected one of ['auto', 'host', 'device'], got {place!r}")
    tensorflow = keras.backend.backend() == "tensorflow"
    if place == "device" and not tensorflow:
        raise ConfigError(f"--augment-on device: needs the TensorFlow backend, not {keras.backend.backend()}; "
                          "use --augment-on host")
    return tensorflow and (place == "device" or (place == "auto" and gpu_available()))


def prepare_train_step(model: keras.Model, augmentation=None) -> None:
    """Set the training step of a compiled `model`; call after each `compile`, in the model's scope.

    - `augmentation` (`keras_med.data.pipeline.batch_augmentation`'s function) transforms each batch
      inside the step, on the accelerator (`--augment-on device`): the model itself never holds an
      augmentation layer, so its checkpoints and exports are those of the host path;
    - under `MultiWorkerMirroredStrategy`, the Keras 3.15 work-arounds of
      `keras_med.training.multiworker`.
    The step is rebuilt from the model class's own each time, so a second compile (the next fit
    phase) does not stack wrappers.

    Args:
        model: A compiled model.
        augmentation: `(images, targets) -> (images, targets)`, or None (host augmentation).
    """
    if keras.backend.backend() != "tensorflow":
        if augmentation is not None:
            raise ConfigError("augmentation in the training step needs the TensorFlow backend")
        return
    from keras_med.training.multiworker import adapt_to_multi_worker

    step = type(model).train_step.__get__(model)
    if augmentation is not None:
        step = _augmented_step(step, augmentation)
    model.train_step = step
    adapt_to_multi_worker(model)
    # A step function traced before this call would keep the old step.
    model.train_function = model.test_function = None


def _augmented_step(step, augmentation):
    def augmented(data):
        images, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images, targets = augmentation(images, targets)
        return step(keras.utils.pack_x_y_sample_weight(images, targets, sample_weight))

    return augmented


def model_scope(model: keras.Model):
    """The scope `model` was built in: its `tf.distribute` strategy's, or none on other backends."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def data_parallel_devices(model: keras.Model | None = None) -> int:
    """How many devices a batch is split over that each need a share of it: the devices of a JAX
    distribution, or the replicas of the `MultiWorkerMirroredStrategy` `model` was built under;
    else 1.

    JAX shards a batch evenly or not at all ("IndivisibleError" on a last batch of 5 over 2
    devices). Under several workers tf.distribute gives a last batch of up to half the global
    batch to the first worker whole and an empty batch to the second, and TensorFlow's CPU
    convolution answers an empty batch with a wrongly shaped tensor (the custom CNN's first
    BatchNorm then fails with "Incompatible shapes: [32] vs. [0,32,32,3]", seen on two workers of
    the demo recipe); a batch cut to a multiple of the replicas (`trim_to_devices`) is split
    evenly instead, no worker's share empty. (A multi-worker recipe predicts on the chief alone,
    with a model outside the strategy: `keras_med.engine.run.run_recipe`.)

    Args:
        model: The model the batches are for (its `distribute_strategy`), or None.
    """
    if keras.backend.backend() == "tensorflow" and model is not None:
        from keras_med.training.multiworker import is_multi_worker

        strategy = getattr(model, "distribute_strategy", None)
        return int(strategy.num_replicas_in_sync) if is_multi_worker(strategy) else 1
    if keras.backend.backend() != "jax" or keras.distribution.distribution() is None:
        return 1
    return int(keras.distribution.distribution().device_mesh.devices.size)


def trim_to_devices(dataset, devices: int):
    """`dataset`'s batches cut to a multiple of `devices` rows (empty ones dropped), for JAX
    data parallelism and several workers (`data_parallel_devices`); unchanged when `devices` is 1.

    Under several workers the cut also hides the dataset's static batch size from tf.distribute,
    which then splits every batch into equal shares (checked on the rebatch and shard steps it
    applies, in tf.data alone: 21 images in batches of 16 gave worker 0 batches of 8 and 5 and
    worker 1 one of 8 before the cut, each worker 8 and 2 after it).

    Training then skips at most `devices - 1` images of an epoch's last batch (another each epoch,
    as the order is shuffled), and validation during training as many; the final evaluation pads
    instead (`keras_med.evaluation.predict_with_tta`) and sees every image.
    """
    if devices == 1:
        return dataset
    import tensorflow as tf

    def trim(images, *rest):
        rows = tf.shape(images)[0] // devices * devices
        return (images[:rows], *(part[:rows] for part in rest))

    return dataset.map(trim).filter(lambda images, *rest: tf.shape(images)[0] > 0)


@functools.cache
def _tensorflow_strategy(name: str):
    """One strategy per name and process: two MirroredStrategy objects in one process draw
    colliding collective-op keys (seen: "Shape mismatch in the collective instance" when a second
    model trained), and MultiWorkerMirroredStrategy can only be created once."""
    import tensorflow as tf

    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif name == "mirrored":
        # Every local GPU, or the logical CPU devices when there is none (how the tests get two).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    elif name == "multiworker":
        # Reads the cluster from the TF_CONFIG environment variable (docs/scale.md).
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    return strategy


def _tensorflow_runtime(name: str) -> Runtime:
    strategy = _tensorflow_strategy(name)
    return Runtime(name, strategy.num_replicas_in_sync, strategy=strategy)


def _jax_runtime(name: str) -> Runtime:
    if name == "multiworker":
        raise ConfigError("--strategy multiworker: needs the TensorFlow backend (TF_CONFIG and "
                          "MultiWorkerMirroredStrategy); on JAX run one process per host with "
                          "jax.distributed.initialize (docs/scale.md)")
    if name == "default":
        # The distribution is process-global on JAX: an earlier setup_runtime's must not linger.
        keras.distribution.set_distribution(None)
        return Runtime(name)
    devices = keras.distribution.list_devices()
    # Data parallel over every local device (GPUs, TPU cores, or the host devices of
    # XLA_FLAGS=--xla_force_host_platform_device_count=N): the global batch is split along its
    # first axis and the weights are replicated.
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return Runtime(name, len(devices), distribution=distribution)


def setup_runtime(train_config: TrainConfig) -> Runtime:
    """Seed everything, set the dtype policy and set up the distribution.

    Build and compile the model inside `with runtime.scope():`. Call once, before any model
    is built (the dtype policy applies to layers created afterwards).

    Args:
        train_config: Uses `seed`, `deterministic`, `mixed_precision` and `strategy`.

    Returns:
        The `Runtime`: on TensorFlow it holds the `tf.distribute.Strategy` named by
        `train_config.strategy`, on JAX the `keras.distribution.DataParallel` it set.
    """
    if train_config.strategy not in STRATEGY_NAMES:
        raise ValueError(f"strategy: expected one of {list(STRATEGY_NAMES)}, got {train_config.strategy!r}")
    if train_config.deterministic:
        from keras_med.training.determinism import enable_determinism

        enable_determinism()
    keras.utils.set_random_seed(train_config.seed)
    policy = "mixed_float16" if use_mixed_precision(train_config) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        runtime = _tensorflow_runtime(train_config.strategy)
    elif backend == "jax":
        runtime = _jax_runtime(train_config.strategy)
    elif train_config.strategy == "default":
        runtime = Runtime("default")
    else:
        raise ConfigError(f"--strategy {train_config.strategy}: needs the tensorflow or jax backend, "
                          f"not {backend}")
    logger.info("runtime: backend %s, seed %d, dtype policy %s, XLA %s, strategy %s (%d replicas), GPU %s",
                backend, train_config.seed, policy, backend == "jax" or use_jit_compile(train_config),
                runtime.name, runtime.num_replicas_in_sync, gpu_available())
    return runtime
