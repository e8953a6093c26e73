"""Fault injection, disk and permissions: a full disk and a read-only folder at every kind of write.

A full disk is a 1-4 MiB tmpfs mounted for the test, which needs root (the project's test machines
run as root); without root those tests are skipped with that reason. The resume-state test runs in
a child process: HDF5's failure on a full disk is a segmentation fault, which would take pytest
down with it if the guard failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_med.atomic import TEMP_PREFIX, write_text_atomic
from keras_med.disk_space import DiskWriteError, as_disk_error, check_writable, ensure_free_space

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (root only: mount needs it)."""
    if not IS_ROOT:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    folder = tmp_path / "small"
    _mount_tmpfs(folder, "size=2m")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write: a read-only tmpfs as root (root ignores file modes), else mode 0o500."""
    folder = tmp_path / "read_only"
    if IS_ROOT:
        _mount_tmpfs(folder, "size=1m,ro")
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
    else:
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` up to `leave` free bytes."""
    import shutil

    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def _temporaries(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob(TEMP_PREFIX + "*")]


RESUME_STATE = textwrap.dedent("""
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import keras, numpy as np
    from keras_med.command_line import run_command
    from keras_med.training.checkpoints import AtomicBackupAndRestore

    def body(argv):
        backup, leave = argv[0], int(argv[1])
        # about 0.55 MB of weights: fits a 2 MiB disk once, not once the disk is filled
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2048), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        callback = AtomicBackupAndRestore(backup)
        callback.set_model(model)
        callback._current_epoch, callback._last_batch_seen = 1, 0
        callback._save_model()
        print("saved epoch 1", flush=True)
        import shutil
        free = shutil.disk_usage(backup).free
        with open(os.path.join(os.path.dirname(backup), "filler"), "wb") as handle:
            handle.write(b"\\0" * max(0, free - leave))
        callback._current_epoch = 2
        callback._save_model()
        print("saved epoch 2", flush=True)

    sys.exit(run_command("keras-med train", body, sys.argv[1:]))
""")


def test_full_disk_while_the_resume_state_is_written_is_one_line_and_keeps_the_last_state(small_disk):
    backup = small_disk / "backup"
    child = subprocess.run([sys.executable, "-c", RESUME_STATE, str(backup), str(64 * 1024)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert child.returncode == 2, child.stderr[-2000:]  # not 139 (segmentation fault)
    assert child.stdout.split("\n")[:2] == ["saved epoch 1", ""]
    last = child.stderr.strip().splitlines()[-1]
    assert last.startswith("keras-med train: error: cannot write the resume state to ")
    assert "no space left on the device (needs about" in last and "free" in last and "Traceback" not in child.stderr
    # Nothing finished lost: epoch 1's state is whole and readable; no temporary file left.
    import json

    import h5py

    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    with h5py.File(backup / "latest.weights.h5", "r"):
        pass
    assert _temporaries(small_disk) == []


def test_full_disk_at_an_atomic_write_keeps_the_old_file_and_no_temporary(small_disk):
    target = small_disk / "history.csv"
    write_text_atomic(target, "epoch,loss\n0,1.0\n")
    _fill(small_disk, 4096)
    with pytest.raises(DiskWriteError, match=r"cannot write history.csv to .*: no space left on the device, "
                                              r"0.0 MB free"):
        write_text_atomic(target, "x" * (256 * 1024))
    assert target.read_text() == "epoch,loss\n0,1.0\n"
    assert _temporaries(small_disk) == []


def test_full_disk_at_a_checkpoint_and_an_export_is_refused_before_writing(small_disk):
    import keras

    from keras_med.export import export_for_serving
    from keras_med.training.checkpoints import AtomicModelCheckpoint

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(300000 // 192),
                              keras.layers.Dense(2, activation="softmax", name="predictions")])
    model.compile("adam", "categorical_crossentropy")
    _fill(small_disk, 256 * 1024)
    checkpoint = AtomicModelCheckpoint(str(small_disk / "checkpoints" / "best.keras"))
    checkpoint.set_model(model)
    with pytest.raises(DiskWriteError, match=r"cannot write the checkpoint best.keras to .*needs about"):
        checkpoint._save_model(epoch=0, batch=None, logs={})
    with pytest.raises(DiskWriteError, match=r"cannot write the SavedModel ham to .*ham: no space left"):
        export_for_serving(model, name="ham", base_dir=small_disk / "saved_models", class_names=["a", "b"])
    assert not (small_disk / "checkpoints" / "best.keras").exists()
    assert list((small_disk / "saved_models" / "ham").iterdir()) == []
    assert _temporaries(small_disk) == []


def test_read_only_folders_are_refused_before_any_work(read_only_dir):
    with pytest.raises(DiskWriteError, match=r"--saved-models: cannot write to .*read_only/ham \((read-only file "
                                             r"system|permission denied)\)"):
        check_writable(read_only_dir / "ham", "--saved-models")
    with pytest.raises(DiskWriteError, match=r"--saved-models: cannot write to .*read_only/ham/x"):
        check_writable(read_only_dir / "ham" / "x", "--saved-models", create=False)
    with pytest.raises(DiskWriteError, match=r"--run-dir: cannot write to .*read_only \((read-only file system|"
                                             r"permission denied)\)"):
        check_writable(read_only_dir, "--run-dir")
    with pytest.raises(DiskWriteError, match=r"cannot write metrics.json to .*read_only"):
        write_text_atomic(read_only_dir / "metrics.json", "{}")


def test_writable_folder_is_created(tmp_path):
    assert check_writable(tmp_path / "a" / "b", "--output-dir") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    # create=False checks the nearest existing folder and leaves no folder behind
    assert check_writable(tmp_path / "c" / "d", "--saved-models", create=False) == tmp_path / "c" / "d"
    assert not (tmp_path / "c").exists()


def test_tensorflow_and_os_errors_that_mean_a_full_disk_become_one_line(tmp_path):
    import errno

    import tensorflow as tf

    error = tf.errors.ResourceExhaustedError(None, None, "saved_model/variables; No space left on device")
    translated = as_disk_error(error, "the SavedModel ham", tmp_path)
    assert isinstance(translated, DiskWriteError) and "no space left on the device" in str(translated)
    assert as_disk_error(OSError(errno.EROFS, "Read-only file system"), "x", tmp_path) is not None
    # Running out of memory, or any other error, is not a disk problem and keeps its own type.
    assert as_disk_error(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating memory"), "x",
                         tmp_path) is None
    assert as_disk_error(ValueError("bad"), "x", tmp_path) is None
    with pytest.raises(DiskWriteError, match=r"cannot write a huge file to .*needs about 1048576.0 MB, [\d.]+ MB free"):
        ensure_free_space(tmp_path, 1 << 40, "a huge file")


def test_run_guard_refuses_an_unwritable_export_target_before_training(read_only_dir, tmp_path):
    from keras_med.run_lock import LOCK_FILE, guarded_run_directory

    run_dir = tmp_path / "run"
    with pytest.raises(DiskWriteError, match=r"--saved-models: cannot write to .*read_only/ham"):
        with guarded_run_directory(run_dir, saved_models=read_only_dir / "ham", cache=str(tmp_path / "c" / "x")):
            raise AssertionError("the run body must not start")
    assert (run_dir / LOCK_FILE).read_text() == ""  # released on the way out
    with guarded_run_directory(run_dir, saved_models=tmp_path / "sm" / "ham", cache=str(tmp_path / "c" / "x")):
        assert (run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
        # the cache folder is made now; the export folder only by the export (a diverged run leaves none)
        assert (tmp_path / "c").is_dir() and not (tmp_path / "sm").exists()
    with pytest.raises(DiskWriteError, match=r"--run-dir: cannot write to .*read_only/run"):
        with guarded_run_directory(read_only_dir / "run"):
            pass
