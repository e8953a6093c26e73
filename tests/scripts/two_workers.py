"""Run by tests/test_distributed.py: one worker of a two-worker MultiWorkerMirroredStrategy cluster
(TF_CONFIG set by the test), or with `--single` the same training in one process.

Usage: two_workers.py RUN_DIR RESULT_JSON [--single] [--kill-in-second-epoch]

Trains the small model of `two_replicas.py` (no BatchNorm, no Dropout, unshuffled data) through
`fit_model` for two epochs into RUN_DIR via `Runtime.output_directory` (the chief writes RUN_DIR, the
other worker its private folder), exports it the same way, and writes what it saw into RESULT_JSON:
the folders it wrote, the steps it trained per epoch, the losses and the final weights.
`--kill-in-second-epoch` SIGKILLs this process after the first step of the second epoch: that step's
all-reduce needs every worker, so the chief has finished the first epoch and saved its backup.
"""

import json
import os
import signal
import sys
from pathlib import Path

import keras
import numpy as np

from keras_med.config import RecipeConfig
from keras_med.recipes.base import fit_arguments
from keras_med.training import fit as fit_module
from keras_med.training import fit_model, setup_runtime
from toy_problem import toy_dataset, toy_model  # tests/scripts/toy_problem.py

RUN_DIR, RESULT = Path(sys.argv[1]), Path(sys.argv[2])
SINGLE = "--single" in sys.argv


class CountSteps(keras.callbacks.Callback):
    """Steps trained per epoch, written after each epoch; optionally dies in the second epoch."""

    def __init__(self, result: dict):
        super().__init__()
        self.result = result

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = str(epoch)
        self.result["steps"][self.epoch] = 0

    def on_train_batch_end(self, batch, logs=None):
        self.result["steps"][self.epoch] += 1
        if "--kill-in-second-epoch" in sys.argv and self.epoch == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, logs=None):
        RESULT.write_text(json.dumps(self.result))


config = RecipeConfig.from_dict({
    "data": {"batch_size": 16},
    "train": {"strategy": "default" if SINGLE else "multiworker", "plan": "scratch", "epochs": 2,
              "optimizer": "sgd", "learning_rate": 0.5, "seed": 1, "monitor": "val_loss", "ema": 0.0,
              "patience": 5}})
runtime = setup_runtime(config.train)
result = {"replicas": runtime.num_replicas_in_sync, "chief": runtime.is_chief, "steps": {},
          "run_dir": str(runtime.output_directory(RUN_DIR)),
          "export_dir": str(runtime.output_directory(RUN_DIR.parent / "saved_models"))}
dataset = toy_dataset()
with runtime.scope():
    model = toy_model()
original = fit_module.build_callbacks
fit_module.build_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [CountSteps(result)]
history = fit_model(model, dataset, dataset, result["run_dir"], **fit_arguments(config))
model.export(str(Path(result["export_dir"]) / "small" / "1"), verbose=False)
result.update(loss=history["loss"].tolist(), epochs=history["epoch"].tolist(),
              weights=[np.asarray(weight).tolist() for weight in model.get_weights()])
RESULT.write_text(json.dumps(result))
