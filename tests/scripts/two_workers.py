"""Run by tests/test_distributed.py: the HAM10000 demo recipe in one process, as one worker of a
two-worker MultiWorkerMirroredStrategy cluster (TF_CONFIG and `--strategy multiworker` set by the
test) or alone (`--strategy default`).

Usage: two_workers.py RESULT_JSON [--kill-in-second-epoch] -- RECIPE_FLAGS...

Writes into RESULT_JSON, after every epoch and at the end, whether this process was the chief and the
steps it trained per epoch. `--kill-in-second-epoch` SIGKILLs this process after the first step of
the second epoch: that step's all-reduce needs every worker, so the chief has finished the first
epoch and saved its BackupAndRestore backup by then.
"""

import json
import os
import signal
import sys
from pathlib import Path

import keras

from keras_med.recipes import ham10000
from keras_med.engine.command import main
from keras_med.training import fit as fit_module

RESULT = Path(sys.argv[1])
KILL = "--kill-in-second-epoch" in sys.argv
RECIPE_FLAGS = sys.argv[sys.argv.index("--") + 1:]


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
        if KILL and self.epoch == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, logs=None):
        RESULT.write_text(json.dumps(self.result))


result = {"steps": {}}
original = fit_module.build_callbacks
fit_module.build_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [CountSteps(result)]
code = main(ham10000.SPEC, RECIPE_FLAGS)
RESULT.write_text(json.dumps(result))
sys.exit(code)
