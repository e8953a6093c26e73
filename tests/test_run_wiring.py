"""A recipe run wires in its guards and records: the run-directory lock, per-split cache files,
environment.json, the HParams session and op determinism (`keras_med.engine.run.run_recipe`)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LOCK_HOLDER_SCRIPT, REPO, tiny_flags

from keras_med.run_lock import LOCK_FILE

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HOLDER = LOCK_HOLDER_SCRIPT


def test_a_recipe_run_on_a_locked_run_directory_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "runs" / "ham"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-m", "keras_med.recipes.ham10000", *tiny_flags(), "--no-export",
             "--output-dir", str(tmp_path / "runs"), "--run-dir", str(run_dir)],
            capture_output=True, text=True, env=ENV, timeout=300)
    finally:
        holder.communicate("\n", timeout=60)
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if "in use by" in line]
    assert len(errors) == 1 and f"process {holder.pid}" in errors[0], second.stderr
    assert "Traceback" not in second.stderr
    assert not (run_dir / "config.toml").exists()  # refused before anything was written


@pytest.mark.slow
def test_a_tiny_run_records_its_environment_hparams_and_per_split_cache(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from keras_med.engine.command import main
    from keras_med.recipes import ham10000
    from keras_med.training.environment import read_environment

    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cache.mkdir()  # an existing folder: the cache files go inside it
    caplog.set_level(logging.INFO, logger="keras_med")
    code = main(ham10000.SPEC, [*tiny_flags(), "--no-export", "--deterministic", "--cache", str(cache),
                                "--output-dir", str(tmp_path / "runs"), "--run-dir", str(run_dir)])
    assert code == 0
    environment = read_environment(run_dir)
    assert environment["deterministic"] is True and len(environment["split_sha256"]) == 64
    split_rows = len((run_dir / "split.csv").read_text().strip().splitlines()) - 1
    assert environment["images"]["count"] == split_rows
    # The model card shows what the run ran on.
    assert environment["cpu"] in (run_dir / "report.md").read_text()
    # One HParams session with the test figures.
    tags = set()
    for events in (run_dir / "logs").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["tensors"])
    assert "_hparams_/session_start_info" in tags and any(tag.startswith("test/") for tag in tags), tags
    # One cache file per split, never shared.
    names = {path.name.split(".")[0] for path in cache.iterdir() if path.name.endswith(".index")}
    assert len(names) == 3 and all(any(split in name for name in names) for split in ("train", "val", "test")), names
    # Released cleanly: the lock file is left empty.
    assert (run_dir / LOCK_FILE).read_text() == ""
    assert json.loads((run_dir / "metrics.json").read_text())["task"] == "multiclass"
    # The last line names the folder holding this run's logs/ (the --run-dir's parent), not --output-dir.
    assert f"tensorboard --logdir {tmp_path.resolve()}\n" in caplog.text + "\n"
    assert str(tmp_path / "runs") not in caplog.text.split("TensorBoard")[-1]


def test_tensorboard_logdir_is_the_folder_that_holds_the_run(tmp_path, monkeypatch):
    from keras_med.engine.run import tensorboard_logdir

    monkeypatch.chdir(tmp_path)
    # Inside --output-dir (the default layout, or a --run-dir under it): every run there compares.
    assert tensorboard_logdir(Path("runs/classify/20240101-000000"), "runs") == tmp_path / "runs"
    assert tensorboard_logdir(tmp_path / "runs" / "mine", "runs") == tmp_path / "runs"
    # A --run-dir elsewhere: its parent, where its sibling runs sit.
    assert tensorboard_logdir(Path("experiments/seed1"), "runs") == tmp_path / "experiments"
    assert tensorboard_logdir(tmp_path / "a" / "b", str(tmp_path / "runs")) == tmp_path / "a"


def test_class_folders_whose_images_are_in_sub_folders_are_detected(tmp_path):
    from PIL import Image

    from keras_med.data.detection import class_folders

    for name, nested in (("benign", "patient_1/visit_2"), ("malignant", ""), ("notes", None)):
        folder = tmp_path / name / (nested or "")
        folder.mkdir(parents=True)
        if nested is None:
            (folder / "readme.txt").write_text("no images here")
        else:
            Image.new("RGB", (8, 8)).save(folder / "a.png")
    assert [folder.name for folder in class_folders(tmp_path)] == ["benign", "malignant"]


def test_a_torn_keras_file_is_one_line_from_the_one_loader(tmp_path):
    from keras_med.errors import RunContentError
    from keras_med.models.saving import load_keras_model

    torn = tmp_path / "best.keras"
    torn.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(RunContentError) as caught:
        load_keras_model(torn)
    message = str(caught.value)
    assert message.startswith(f"{torn}: ") and "\n" not in message
    assert "damaged or incomplete" in message or "Keras cannot load it" in message
