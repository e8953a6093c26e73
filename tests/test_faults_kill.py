"""Fault injection, lost and poisoned runs: SIGKILL at several instants, torn resume state, divergence.

The kill test runs the real recipe in a subprocess and kills it with SIGKILL (no Python clean-up
runs) at four instants in one run directory, then checks that re-running the same command
finishes with a continuous history and only complete SavedModel versions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from keras_med.engine.command import main
from keras_med.engine.run import fit_arguments
from keras_med.errors import RunDivergedError
from keras_med.recipes import ham10000
from keras_med.training import fit_model, read_training_outcome
from keras_med.training.checkpoints import AtomicBackupAndRestore, AtomicModelCheckpoint

from helpers import tiny_flags

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 5
# 112 images (the demo's minimum) at 32 px: 5 training steps, about 2 s per epoch on 2 CPU cores.
TINY_DEMO = tiny_flags(demo_size=112, epochs=None, bootstrap=20)


# --- helpers ---------------------------------------------------------------------------------------
class PoisonWeights(keras.callbacks.Callback):
    """Makes every trainable weight NaN after the first batch of `epoch`: a run that diverges mid-training."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self._current = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch == 0:
            for weight in self.model.trainable_weights:
                weight.assign(np.full(weight.shape, np.nan, dtype="float32"))


def run_recipe_exit_code(argv) -> int:
    # The CLI turns RunDivergedError into exit status 3; run in-process, the error may come out raw.
    try:
        return main(ham10000.SPEC, argv)
    except RunDivergedError as error:
        return error.exit_code


# --- atomic checkpoints --------------------------------------------------------------------------
def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_and_backup_readable(tmp_path, monkeypatch,
                                                                                     toy_training):
    model = toy_training.model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    checkpoint = AtomicModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=False)
    backup = AtomicBackupAndRestore(str(tmp_path / "backup"))
    model.fit(toy_training.data(32).dataset, epochs=1, callbacks=[checkpoint, backup], verbose=0)
    before = [weight.copy() for weight in model.get_weights()]

    def torn_write(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"\x89HDF half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", torn_write)
    monkeypatch.setattr(keras.Model, "save_weights", torn_write)
    for callback in (checkpoint, backup):
        with pytest.raises(OSError, match="disk full"):
            callback.on_epoch_end(1, {"loss": 0.1})
    monkeypatch.undo()
    reloaded = keras.models.load_model(tmp_path / "best.keras")
    fresh = toy_training.model()
    fresh.load_weights(tmp_path / "backup" / "latest.weights.h5")
    for expected, a, b in zip(before, reloaded.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, expected)
        np.testing.assert_array_equal(b, expected)
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    leftovers = [path.name for path in tmp_path.rglob(".tmp-*")]
    assert leftovers == []


def test_non_finite_weights_are_never_checkpointed_or_backed_up(tmp_path, toy_training):
    model = toy_training.model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    kernel = model.trainable_weights[0]
    kernel.assign(np.full(kernel.shape, np.inf, dtype="float32"))
    checkpoint = AtomicModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=False)
    backup = AtomicBackupAndRestore(str(tmp_path / "backup"))
    checkpoint.set_model(model)
    backup.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 0.5})
    backup.on_epoch_end(0, {"loss": 0.5})
    assert not (tmp_path / "best.keras").exists()
    assert not (tmp_path / "backup" / "latest.weights.h5").exists()


def test_partial_exports_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    from keras_med.export.saved_model import remove_stale_partials

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(finished.stdout), os.getppid()
    for name in (f".partial-3-{dead_pid}", f".partial-4-{live_pid}", "2"):
        (tmp_path / name / "variables").mkdir(parents=True)
    removed = remove_stale_partials(tmp_path)
    assert [path.name for path in removed] == [f".partial-3-{dead_pid}"]
    assert sorted(os.listdir(tmp_path)) == [f".partial-4-{live_pid}", "2"]


# --- torn or missing resume state ----------------------------------------------------------------
def interrupted_run(tmp_path, monkeypatch, toy, kill_epoch, config):
    toy.extra_callbacks(monkeypatch, toy.KillAfterEpoch(kill_epoch))
    data = toy.data(32).dataset
    with pytest.raises(KeyboardInterrupt):
        fit_model(toy.model(), data, data, tmp_path, **fit_arguments(config))
    monkeypatch.undo()


def test_torn_resume_state_falls_back_to_the_previous_backup_and_says_so(tmp_path, monkeypatch, caplog, toy_training):
    data = toy_training.data(32).dataset
    config = toy_training.config(epochs=4)
    interrupted_run(tmp_path, monkeypatch, toy_training, 1, config)  # epochs 0 and 1 finished and backed up
    backup = tmp_path / "backup" / "phase1"
    (backup / "latest.weights.h5").write_bytes(b"garbage, as a kill during a non-atomic write leaves")
    # and a torn last line, as Keras's appending CSVLogger leaves
    with open(tmp_path / "history.csv", "a", encoding="utf-8") as handle:
        handle.write("2,0.51,0.4")
    counter = toy_training.EpochCounter()
    toy_training.extra_callbacks(monkeypatch, counter)
    with caplog.at_level(logging.WARNING):
        history = fit_model(toy_training.model(), data, data, tmp_path, **fit_arguments(config))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("latest.weights.h5" in message and "previous backup" in message and "after epoch 1" in message
               for message in warnings), warnings
    assert any("torn last line" in message for message in warnings), warnings
    assert counter.epochs == [1, 2, 3]  # epoch 1 again: its newest backup was unreadable
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert read_training_outcome(tmp_path).best_checkpoint


def test_with_no_readable_resume_state_the_phase_starts_again_and_says_so(tmp_path, monkeypatch, caplog, toy_training):
    data = toy_training.data(32).dataset
    config = toy_training.config(epochs=3)
    interrupted_run(tmp_path, monkeypatch, toy_training, 1, config)
    backup = tmp_path / "backup" / "phase1"
    for name in ("latest.weights.h5", "previous.weights.h5"):
        (backup / name).write_bytes(b"garbage")
    counter = toy_training.EpochCounter()
    toy_training.extra_callbacks(monkeypatch, counter)
    with caplog.at_level(logging.WARNING):
        history = fit_model(toy_training.model(), data, data, tmp_path, **fit_arguments(config))
    assert any("no readable resume state" in record.getMessage() for record in caplog.records)
    assert counter.epochs == [0, 1, 2]
    assert list(history["epoch"]) == [0, 1, 2]


def test_a_finished_training_is_not_repeated_and_refuses_other_settings(tmp_path, monkeypatch, toy_training):
    data = toy_training.data(32).dataset
    config = toy_training.config(epochs=2)
    fit_model(toy_training.model(), data, data, tmp_path, **fit_arguments(config))
    assert not (tmp_path / "backup").exists()
    best = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    counter = toy_training.EpochCounter()
    toy_training.extra_callbacks(monkeypatch, counter)
    model = toy_training.model()
    history = fit_model(model, data, data, tmp_path, **fit_arguments(config))
    assert counter.epochs == [] and list(history["epoch"]) == [0, 1]
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(Exception, match=r"train.epochs \(2 -> 5\).*new --run-dir") as error:
        fit_model(toy_training.model(), data, data, tmp_path, **fit_arguments(toy_training.config(epochs=5)))
    assert getattr(error.value, "exit_code", None) == 2


# --- divergence ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_with_no_good_epoch_writes_no_model_and_exports_nothing(tmp_path, caplog, capsys):
    run_dir, saved = tmp_path / "run", tmp_path / "saved_models"
    argv = TINY_DEMO + ["--epochs", "3", "--learning-rate", "1e6", "--output-dir", str(tmp_path),
                        "--run-dir", str(run_dir), "--saved-models", str(saved)]
    with caplog.at_level(logging.WARNING):
        assert main(ham10000.SPEC, argv) == RunDivergedError.exit_code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in errors[0]
    assert re.search(r"epoch 1 \(loss nan\) before any good epoch: no model written, nothing exported; "
                     r"try a lower --learning-rate", errors[0])
    assert any("training diverged at epoch 1" in record.getMessage() for record in caplog.records)
    assert not (run_dir / "checkpoints" / "best.keras").exists()
    assert not (run_dir / "metrics.json").exists() and not saved.exists()
    assert not list(run_dir.rglob("*.h5")), "no resume state made of NaN either"
    assert RunDivergedError.exit_code == 3


@pytest.mark.slow
def test_divergence_after_good_epochs_keeps_and_evaluates_the_best_and_exits_non_zero(tmp_path, monkeypatch,
                                                                                      toy_training):
    run_dir, saved = tmp_path / "run", tmp_path / "saved_models"
    toy_training.extra_callbacks(monkeypatch, PoisonWeights(epoch=1))
    argv = TINY_DEMO + ["--epochs", "3", "--output-dir", str(tmp_path), "--run-dir", str(run_dir),
                        "--saved-models", str(saved)]
    assert run_recipe_exit_code(argv) == 3
    best = keras.models.load_model(run_dir / "checkpoints" / "best.keras")
    assert all(np.isfinite(weight).all() for weight in best.get_weights())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["diverged"]["epoch"] == 2 and metrics["diverged"]["loss"] == "nan"
    assert "kept and evaluated the best checkpoint" in metrics["diverged"]["message"]
    assert np.isfinite(metrics["balanced_accuracy"]["value"])
    assert "## Training diverged" in (run_dir / "report.md").read_text()
    assert not saved.exists(), "a diverged run is not exported"
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == [0, 1]  # the diverged epoch's row kept


# --- SIGKILL at several instants -----------------------------------------------------------------
class Attempt:
    """One run of the recipe in a subprocess, its output in a log file."""

    def __init__(self, command, log_path: Path):
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill_when(self, condition, what: str, delay: float = 0.0, timeout: float = 240) -> None:
        """SIGKILL the run `delay` seconds after `condition()` holds (polled every 2 ms)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the run ended (rc {self.process.returncode}) before {what}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no {what} within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.002)
        time.sleep(delay)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def finish(self, timeout: float = 240) -> int:
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def first_epoch(self) -> int | None:
        """The first epoch (0-based) this attempt trained, from Keras's 'Epoch k/N' lines."""
        found = re.search(r"^Epoch (\d+)/\d+", self.log(), re.MULTILINE)
        return None if found is None else int(found.group(1)) - 1


def history_rows(run_dir: Path) -> int:
    """Rows in history.csv, counted without pandas: polled every 2 ms beside a training process."""
    path = run_dir / "history.csv"
    return max(0, path.read_bytes().count(b"\n") - 1) if path.is_file() else 0


def history_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "history.csv"
    return list(pd.read_csv(path)["epoch"]) if path.is_file() else []


@pytest.mark.system
@pytest.mark.slow
def test_sigkill_at_any_instant_loses_at_most_the_epoch_in_progress(tmp_path):
    run_dir, saved = tmp_path / "run", tmp_path / "saved_models"
    command = [sys.executable, "-m", "keras_med.recipes.ham10000", *TINY_DEMO, "--epochs", str(EPOCHS),
               "--patience", "20", "--output-dir", str(tmp_path), "--run-dir", str(run_dir),
               "--saved-models", str(saved)]
    history_at_kill, resumed_at = [], []

    def run_and_kill(condition, what, delay=0.0):
        attempt = Attempt(command, tmp_path / f"attempt{len(history_at_kill) + 1}.log")
        attempt.kill_when(condition, what, delay)
        resumed_at.append(attempt.first_epoch())
        history_at_kill.append(history_epochs(run_dir))

    def temporary_checkpoints() -> set[str]:
        folders = [run_dir / "checkpoints", run_dir / "backup" / "phase1"]
        return {name for folder in folders if folder.is_dir()
                for name in os.listdir(folder) if name.startswith(".tmp-")}

    def partial_export():
        folder = saved / "ham10000"
        return folder.is_dir() and any(name.startswith(".partial-") for name in os.listdir(folder))

    # 1. right after an epoch's history row appears (before or while its backup is written)
    run_and_kill(lambda: history_rows(run_dir) >= 1, "a history row")
    # 2. while best.keras or the resume state is being written (temporary file present)
    left_by_kill = temporary_checkpoints()  # the re-run removes these first
    run_and_kill(lambda: bool(temporary_checkpoints() - left_by_kill), "a temporary checkpoint file")
    # 3. in the middle of an epoch: 0.6 s after the next row, about a third into the epoch after it
    rows = history_rows(run_dir)
    run_and_kill(lambda: history_rows(run_dir) > rows, "a new epoch", delay=0.6)
    # 4. during the export, after training and evaluation finished
    run_and_kill(partial_export, "a partial export")
    final = Attempt(command, tmp_path / "final.log")
    assert final.finish() == 0, final.log()[-3000:]

    # Every re-run started right after the last epoch in history, or repeated that one (killed
    # after its row, before its backup): never further back, never skipping an epoch.
    assert resumed_at[0] == 0
    for kills, history in enumerate(history_at_kill, start=1):
        assert set(history) == set(range(max(history) + 1)), history_at_kill  # no gap
        assert len(history) - len(set(history)) <= kills, history_at_kill  # one repeat per kill at most
    for history, resumed in zip(history_at_kill[:3], resumed_at[1:4]):
        assert resumed in (max(history), max(history) + 1), (history_at_kill, resumed_at)
    # Killed during export: the re-run does not train again and exports the same model.
    assert history_at_kill[3][-1] == EPOCHS - 1
    assert "not training again" in final.log() and final.first_epoch() is None
    assert history_epochs(run_dir) == list(range(EPOCHS))
    model_dir = saved / "ham10000"
    assert sorted(os.listdir(model_dir)) == ["1"], "only complete versions, no partial export left"
    assert (model_dir / "1" / "saved_model.pb").is_file()
    assert '"ham10000"' in (saved / "models.config").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["diverged"] is None
    assert not list(run_dir.rglob(".tmp-*")), "temporary files of killed writers are cleaned up"
