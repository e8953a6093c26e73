"""Several machines (TensorFlow's MultiWorkerMirroredStrategy): who writes files, and two Keras 3.15
work-arounds that make `model.fit` run under that strategy at all.

TensorFlow-specific by design (`tf.distribute`). Every worker runs the same program and takes part in
every collective operation of training (steps, per-epoch validation), but only the chief may write
the run directory and the export: the others write the same training files into a private folder on
their own machine (`worker_directory`), as TensorFlow's multi-worker guide recommends, so that nothing
on shared storage is written twice or half-written by a second process. After training, a recipe's
other workers stop and the chief alone evaluates and exports (`keras_med.engine.run.run_recipe`).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import keras
import tensorflow as tf


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (one worker or several)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process writes the run files: the `chief` task, else worker 0 of a cluster without
    one (TensorFlow's convention), and any process not under a multi-worker strategy.

    Args:
        strategy: The `tf.distribute.Strategy` of the run (`Runtime.strategy`), or None.
    """
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def worker_directory(path: str | Path, strategy) -> Path:
    """Where this process writes what belongs at `path`: `path` itself on the chief, else a private
    folder under the machine's temporary directory (`TMPDIR`), the same on every restart of the
    worker so that its BackupAndRestore backup is found again.

    Args:
        path: The folder the run writes (run directory or export base directory).
        strategy: The run's `tf.distribute.Strategy`, or None.

    Returns:
        The folder to write into.
    """
    path = Path(path)
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "keras_med_workers" / f"{resolver.task_type}-{resolver.task_id}-{digest}"


def _steps_with_vector_logs(step):
    """`step` with its scalar logs as shape-(1,) vectors.

    Keras 3.15's `reduce_per_replica` averages a step's logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar ("Invalid reduction dimension 0
    for input with 0 dimensions", keras/src/backend/tensorflow/trainer.py, `_reduce`). Over vectors
    of one element the same call concatenates the workers' values and averages them into a scalar,
    which is what fit and evaluate report.
    """

    @functools.wraps(step)
    def vector_logs(data):
        logs = step(data)
        return {name: tf.reshape(value, [1]) if value.shape.rank == 0 else value for name, value in logs.items()}

    return vector_logs


def adapt_to_multi_worker(model: keras.Model) -> None:
    """Make a compiled `model` trainable by `fit` and `evaluate` under `MultiWorkerMirroredStrategy`.

    Two work-arounds for Keras 3.15 (keras/src/backend/tensorflow/trainer.py), without which two
    workers on 127.0.0.1 fail before their first step (docs/scale.md); check on a Keras upgrade
    whether they are still needed:
    - `fit` starts with `_maybe_symbolic_build`, which averages the first distributed batch with
      `strategy.reduce("MEAN", batch, axis=None)`; eager and multi-worker, that raises "Attempt to
      convert a value (PerReplica: ...) to a Tensor" before any step runs. The build it prepares is
      only needed for unbuilt models: here the model is built, its optimizer is built below, and its
      compiled loss and metrics build when the training step is traced, so the call is skipped.
    - the logs of each step are reduced across workers with an axis that a scalar does not have
      (`_steps_with_vector_logs`).
    Call inside the strategy's scope after every `compile` (`keras_med.training.runtime.prepare_train_step`
    does), when `model.train_step` is not yet wrapped. Nothing changes under other strategies.

    Args:
        model: A built, compiled model whose `distribute_strategy` is a `MultiWorkerMirroredStrategy`.
    """
    if not is_multi_worker(getattr(model, "distribute_strategy", None)):
        return
    if not model.built:
        raise ValueError("model: build it before training on several workers (call it on a batch)")
    model.optimizer.build(model.trainable_variables)
    # Instance attributes, so only this model changes; train_step/test_step are Keras's documented
    # override points, _maybe_symbolic_build is private (checked against Keras 3.15).
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model.train_step = _steps_with_vector_logs(model.train_step)
    model.test_step = _steps_with_vector_logs(type(model).test_step.__get__(model))
