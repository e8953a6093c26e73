"""Several devices: one vs two replicas on TensorFlow (MirroredStrategy over two logical CPU
devices) and on JAX (keras.distribution.DataParallel over two host devices).

Each backend runs `tests/scripts/two_replicas.py` in a subprocess (devices must be configured
before the backend starts); the script writes what it measured into `result.json`. Several
machines: two processes of the demo recipe (`tests/scripts/two_workers.py`) form a
MultiWorkerMirroredStrategy cluster on 127.0.0.1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keras_med.evaluation.metrics import compute_metrics
from keras_med.evaluation.run_predictions import load_run_predictions

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "scripts" / "two_replicas.py"
# Two host devices for JAX. XLA's CPU collectives abort when one device's thread has not reached an
# all-reduce within 40 s, which happened on this 2-core machine under load (the full suite beside
# other jobs); a longer limit keeps a slow machine from failing the test.
XLA_FLAGS = ("--xla_force_host_platform_device_count=2 --xla_cpu_collective_timeout_seconds=600 "
             "--xla_cpu_collective_call_terminate_timeout_seconds=600")


def _run_two_replicas(tmp_path: Path, backend: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "JAX_PLATFORMS": "cpu", "XLA_FLAGS": XLA_FLAGS}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


def _check_one_equals_two(result: dict, backend: str) -> None:
    assert result["backend"] == backend and result["replicas"] == 2
    # Same global batch, split in two halves whose gradients are summed: the same arithmetic up to
    # float32 rounding (measured: weights within 3e-8 on TensorFlow, 2e-7 on JAX).
    assert result["loss_one"] == pytest.approx(result["loss_two"], rel=1e-5)
    assert result["loss_one"][-1] < result["loss_one"][0], "the small model did not learn"
    assert result["max_weight_difference"] < 1e-5
    # Predictions are gathered from the replicas (21 rows, none repeated or averaged), so every
    # figure computed from them is that of one device.
    assert result["predicted_rows"] == 21
    assert result["metrics_one"] == result["metrics_two"]


def test_scale_to_replicas_keeps_the_batch_per_replica_and_scales_learning_rates():
    from keras_med.config import RecipeConfig
    from keras_med.engine.run import scale_to_replicas

    config = RecipeConfig.from_dict({"data": {"batch_size": 32},
                                     "train": {"learning_rate": 1e-3, "finetune_learning_rate": 1e-4}})
    assert scale_to_replicas(config, 4) == config, "off by default: the batch is the global batch"
    scaled = scale_to_replicas(RecipeConfig.from_dict({"train": {"scale_to_replicas": True}}, base=config), 4)
    assert scaled.data.batch_size == 128
    assert scaled.train.learning_rate == pytest.approx(4e-3)
    assert scaled.train.finetune_learning_rate == pytest.approx(4e-4)


@pytest.mark.system
@pytest.mark.slow
def test_two_mirrored_replicas_train_like_one_and_resume(tmp_path):
    result = _run_two_replicas(tmp_path, "tensorflow", "--recipe")
    _check_one_equals_two(result, "tensorflow")
    # The demo recipe on two replicas, interrupted after its first epoch and run again: the
    # backup of epoch 1 existed, the second run went on from it (one row per epoch, none
    # repeated), kept a best checkpoint and removed the backup once training was recorded.
    assert result["backup_after_kill"] == ["resumed/backup/phase1/latest.weights.h5"]
    assert result["history_resumed"]["epoch"] == [0, 1]
    assert result["history_two"]["epoch"] == [0, 1]
    assert result["best_checkpoint"] and not result["backup_left_at_end"]


@pytest.mark.system
@pytest.mark.slow
def test_two_jax_devices_train_like_one(tmp_path):
    _check_one_equals_two(_run_two_replicas(tmp_path, "jax"), "jax")


WORKERS_SCRIPT = REPO / "tests" / "scripts" / "two_workers.py"
# Each process has this long at most: a worker whose peer died waits in a collective for ever.
WORKER_TIMEOUT = 420
# The demo recipe at its smallest: 85 training images of which 3 global batches of 16 per epoch
# (a step on two workers on 127.0.0.1 took ~6 s under load), 17 validation and 18 test images.
RECIPE = ["--demo", "--demo-size", "120", "--image-size", "32", "--epochs", "2", "--batch-size", "16",
          "--steps-per-epoch", "3", "--bootstrap", "0", "--explain", "0", "--ood", "none", "--seed", "3"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start(env: dict, root: Path, result: Path, *args: str, tf_config: dict | None = None) -> subprocess.Popen:
    """One process of the recipe writing under `root` (runs/, saved_models/), what it saw into `result`."""
    env = {**env, "TF_CONFIG": json.dumps(tf_config)} if tf_config else env
    recipe = RECIPE + ["--output-dir", str(root / "runs"), "--run-dir", str(root / "runs" / "run"),
                       "--saved-models", str(root / "saved_models")]
    # The one-process run is only compared by its figures: it exports nothing.
    recipe += ["--strategy", "multiworker"] if tf_config else ["--strategy", "default", "--no-export"]
    log = open(result.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, str(WORKERS_SCRIPT), str(result), *args, "--", *recipe], env=env,
                            cwd=result.parent, stdout=log, stderr=subprocess.STDOUT)


def _start_workers(env: dict, root: Path, results: Path, name: str, kill_worker_1: bool = False) -> list:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    return [_start(env, root, results / f"{name}_{index}.json",
                   *(["--kill-in-second-epoch"] if kill_worker_1 and index == 1 else []),
                   tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in (0, 1)]


def _finish(process: subprocess.Popen, path: Path) -> dict:
    try:
        code = process.wait(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{path.name} still running after {WORKER_TIMEOUT} s:\n"
                             + path.with_suffix(".log").read_text()[-3000:])
    assert code == 0, path.with_suffix(".log").read_text()[-3000:]
    return json.loads(path.read_text())


@pytest.mark.system
@pytest.mark.slow
def test_two_workers_run_the_recipe_resume_and_only_the_chief_writes(tmp_path):
    """The demo recipe under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 with
    TF_CONFIG, one killed in the second epoch and both restarted, against one process on the same
    global batch and seed."""
    (tmp_path / "tmp").mkdir()
    # One TensorFlow thread per pool in each process: three processes share the CI machine's cores,
    # and with TensorFlow's default pools (one thread per core each) they oversubscribe them.
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "TMPDIR": str(tmp_path / "tmp"), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    env.pop("TF_CONFIG", None)
    cluster, single = tmp_path / "cluster", tmp_path / "single"
    processes = []
    try:
        processes.append(alone := _start(env, single, tmp_path / "single.json"))
        processes += (first := _start_workers(env, cluster, tmp_path, "first", kill_worker_1=True))
        # Worker 1 SIGKILLs itself after the first step of the second epoch; the chief then waits in
        # the next all-reduce for ever, so it is killed too, and both are started again.
        assert first[1].wait(timeout=WORKER_TIMEOUT) == -signal.SIGKILL
        first[0].kill()
        first[0].wait()
        processes += (second := _start_workers(env, cluster, tmp_path, "second"))
        chief, worker = (_finish(process, tmp_path / f"second_{index}.json") for index, process in enumerate(second))
        _finish(alone, tmp_path / "single.json")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    before_kill = [json.loads((tmp_path / f"first_{index}.json").read_text()) for index in (0, 1)]
    # Both workers trained the first epoch's 3 steps, were killed, and after the restart resumed
    # from the backup of that epoch: each trained only the second epoch, as many steps as the other.
    assert [result["steps"] for result in before_kill] == [{"0": 3}] * 2
    assert chief["steps"] == worker["steps"] == {"1": 3}
    run_dir = cluster / "runs" / "run"
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    # Only the chief evaluated and exported, into the shared folders; worker 1 stopped after
    # training and wrote its run files and demo data into folders of its own under TMPDIR.
    assert sorted(path.name for path in cluster.iterdir()) == ["runs", "saved_models"]
    assert sorted(path.name for path in (cluster / "runs").iterdir()) == ["ham10000", "run"]
    for name in ("metrics.json", "report.html", "training_done.json", "checkpoints/best.keras", "predictions.npz"):
        assert (run_dir / name).exists(), name
    assert (cluster / "saved_models" / "ham10000" / "1" / "saved_model.pb").is_file()
    private = list((tmp_path / "tmp" / "keras_med_workers").iterdir())
    assert all(path.name.startswith("worker-1-") for path in private)
    worker_run = next(path for path in private if (path / "history.csv").is_file())
    assert (worker_run / "training_done.json").is_file() and not (worker_run / "metrics.json").exists()
    assert not list(tmp_path.joinpath("tmp").rglob("saved_model.pb"))
    # The cluster's evaluation is that of one device: the chief predicted every test image once, in the
    # split's order (the targets equal those of the one-process run), and the figures in its metrics.json
    # are those of these gathered predictions, not an average of per-worker figures.
    two, one = load_run_predictions(run_dir), load_run_predictions(single / "runs" / "run")
    assert len(two["y_test"]) == 18 and two["y_test"].tolist() == one["y_test"].tolist()
    assert two["p_test_none"].shape == one["p_test_none"].shape and np.isfinite(two["p_test_none"]).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recomputed = compute_metrics("multiclass", two["y_test"], two["p_test_none"], metrics["class_names"], n_bootstrap=0)
    for key in ("balanced_accuracy", "accuracy", "macro_auc"):
        assert metrics[key]["value"] == pytest.approx(recomputed[key]["value"], abs=1e-9), key
    # Training against one process on the same global batches, seed and initial weights, in the
    # epoch before the kill. Not equal: BatchNorm normalises each worker's half of a batch on its own.
    # Measured first-epoch training loss, cluster vs one process, over five runs: 2.13 vs 1.88, 2.05 vs
    # 1.91, 1.92 vs 1.81, 2.02 vs 1.76, 1.92 vs 2.02 (the one-process figure itself moves by 0.26 from
    # run to run on 2 threads); chance is ln 7 = 1.95. A fresh-clone suite of session 11 measured 2.29 vs
    # 1.79, so the difference of two such noisy figures needs more than 0.5; 0.75 still catches a loss
    # reduced over the wrong number of replicas (about twice chance, 3.9). The exact equivalence of the
    # arithmetic (weights within 1e-5) is checked by the two-replica tests above.
    # The test figures are not compared: after 6 steps both models are at chance, and their balanced
    # accuracies on 18 test images differed by up to 0.07 between runs (CI, session 5) - noise, not a check.
    first_epoch_loss = [pd.read_csv(path / "history.csv")["loss"].iloc[0] for path in (run_dir, single / "runs" / "run")]
    assert np.isfinite(first_epoch_loss).all()
    assert first_epoch_loss[0] == pytest.approx(first_epoch_loss[1], abs=0.75)
