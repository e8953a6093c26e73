"""Run by tests/test_distributed.py in a subprocess: training on one and on two replicas.

Logical devices must be configured before the backend initialises, hence a process of its own.
TensorFlow: two logical CPU devices and `MirroredStrategy`; JAX (KERAS_BACKEND=jax with
XLA_FLAGS=--xla_force_host_platform_device_count=2): `keras.distribution.DataParallel`.
Writes `result.json` into the folder given as the first argument; with `--recipe` also runs the
demo recipe on two replicas, interrupted and resumed (TensorFlow only: on JAX with two host
devices the recipe's second epoch stalled in an all-reduce rendezvous on this 2-core machine).
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np

ROOT = Path(sys.argv[1])
BACKEND = keras.backend.backend()
import tensorflow as tf  # noqa: E402  (tf.data feeds every backend)

if BACKEND == "tensorflow":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from keras_med.config import RecipeConfig, TrainConfig  # noqa: E402
from keras_med.evaluation import predict_with_tta  # noqa: E402
from keras_med.evaluation.metrics import compute_metrics  # noqa: E402
from keras_med.recipes import ham10000  # noqa: E402
from keras_med.engine.command import main  # noqa: E402
from keras_med.engine.run import fit_arguments  # noqa: E402
from keras_med.training import fit as fit_module  # noqa: E402
from keras_med.training import fit_model, setup_runtime  # noqa: E402
from toy_problem import toy_dataset, toy_model  # noqa: E402  (tests/scripts/toy_problem.py)

TINY = ["--demo", "--demo-size", "112", "--image-size", "32", "--batch-size", "16", "--epochs", "2",
        "--bootstrap", "20", "--explain", "0", "--no-export", "--seed", "5", "--output-dir", str(ROOT / "runs")]


def fit_small(strategy: str) -> tuple[list[float], list[np.ndarray]]:
    """fit_model on a model without BatchNorm or Dropout and data without augmentation: one and two
    replicas then do the same arithmetic on the same global batch (split in two halves)."""
    config = RecipeConfig.from_dict({
        "data": {"batch_size": 16},
        "train": {"strategy": strategy, "plan": "scratch", "epochs": 3, "optimizer": "sgd", "learning_rate": 0.5,
                  "seed": 1, "monitor": "val_loss", "ema": 0.0, "patience": 5}})
    runtime = setup_runtime(config.train)
    dataset = toy_dataset()
    with runtime.scope():
        model = toy_model()
    history = fit_model(model, dataset, dataset, ROOT / f"fit_{strategy}", **fit_arguments(config))
    return history["loss"].tolist(), [np.asarray(weight) for weight in model.get_weights()]


class Interrupted(Exception):
    """Stands for a killed process: raised at the start of the second epoch."""


class InterruptSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise Interrupted()


def run_recipe(name: str, strategy: str, interrupt: bool = False) -> Path:
    run_dir = ROOT / name
    original = fit_module.build_callbacks
    if interrupt:
        # After BackupAndRestore, which has saved the first epoch by then.
        fit_module.build_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [InterruptSecondEpoch()]
    try:
        main(ham10000.SPEC, TINY + ["--strategy", strategy, "--run-dir", str(run_dir)])
    finally:
        fit_module.build_callbacks = original
    return run_dir


def history(run_dir: Path) -> dict:
    import pandas as pd

    return pd.read_csv(run_dir / "history.csv").to_dict(orient="list")


def gathered_predictions(run_dir: Path) -> tuple[dict, dict, int]:
    """Metrics of the same model's predictions on one and on two replicas (21 images, batches of 8:
    the last batch does not split evenly)."""
    images = np.random.default_rng(1).uniform(0, 255, (21, 16, 16, 3)).astype("float32")
    y_true = np.eye(3, dtype="float32")[np.arange(21) % 3]
    dataset = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(8)
    probabilities = {}
    for strategy in ("default", "mirrored"):
        runtime = setup_runtime(TrainConfig(strategy=strategy))
        with runtime.scope():
            model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)
        probabilities[strategy] = predict_with_tta(model, dataset)
    names = ["a", "b", "c"]
    one, two = (compute_metrics("multiclass", y_true, probabilities[key], names, n_bootstrap=50, seed=0)
                for key in ("default", "mirrored"))
    return one, two, len(probabilities["mirrored"])


loss_one, weights_one = fit_small("default")
loss_two, weights_two = fit_small("mirrored")
replicas = setup_runtime(TrainConfig(strategy="mirrored")).num_replicas_in_sync
result = {"backend": BACKEND, "replicas": replicas, "loss_one": loss_one, "loss_two": loss_two,
          "max_weight_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(weights_one, weights_two))}
if "--recipe" in sys.argv:
    two = run_recipe("two", "mirrored")
    try:
        run_recipe("resumed", "mirrored", interrupt=True)
        raise SystemExit("the interrupting callback did not fire")
    except Interrupted:
        pass
    backup_after_kill = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "resumed" / "backup").rglob("*.h5"))
    resumed = run_recipe("resumed", "mirrored")
    result.update(history_two=history(two), history_resumed=history(resumed), backup_after_kill=backup_after_kill,
                  backup_left_at_end=(resumed / "backup").exists(),
                  best_checkpoint=(resumed / "checkpoints" / "best.keras").is_file())
metrics_one, metrics_two, predicted_rows = gathered_predictions(ROOT / "fit_mirrored")
result.update(predicted_rows=predicted_rows, metrics_one=metrics_one, metrics_two=metrics_two)
(ROOT / "result.json").write_text(json.dumps(
    result, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value)))

