"""Keras's checkpoint, backup and CSV callbacks, writing through `keras_med.atomic` and never a NaN model.

Keras writes `best.keras`, the resume state `latest.weights.h5` and `history.csv` in place, so a
kill -9 while it writes leaves a torn file: 4 kills out of 4 right after an epoch ended left a
`latest.weights.h5` that h5py could not open, and the run could not resume. Each class here keeps
Keras's own callback (its decision of when and what to save) and changes only where the bytes go:
a temporary file beside the target, renamed over it once complete.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import keras

from keras_med.atomic import atomic_path, remove_stale_temporaries, write_text_atomic
from keras_med.interruption import record_epoch
from keras_med.disk_space import disk_errors, ensure_free_space, model_file_bytes
from keras_med.training.divergence import weights_are_finite

logger = logging.getLogger(__name__)


def first_line(error: BaseException) -> str:
    """An exception's first line (h5py's messages run over several), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes atomically and skips a model with non-finite weights.

    The non-finite check comes before Keras compares the monitored value, so a diverged epoch
    neither overwrites the best model nor becomes the value later epochs must beat.
    Arguments are `keras.callbacks.ModelCheckpoint`'s.
    """

    # Overrides Keras's private `_save_model` (Keras 3.15): the decision stays Keras's own
    # `_should_save_model`; only the write goes through a temporary file.
    def _save_model(self, epoch, batch, logs):
        if not weights_are_finite(self.model):
            # DivergenceGuard has said so on the console; this is the evidence for --verbose.
            logger.debug("epoch %d: the weights are not finite; %s not written", epoch + 1, self.filepath)
            return
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        # HDF5 dies with a segmentation fault on a full disk (keras_med.disk_space): refuse first.
        ensure_free_space(os.path.dirname(filepath) or ".",
                          model_file_bytes(self.model, with_optimizer=not self.save_weights_only),
                          f"the checkpoint {os.path.basename(filepath)}")
        with atomic_path(filepath) as temporary:
            if self.save_weights_only:
                self.model.save_weights(str(temporary), overwrite=True)
            else:
                self.model.save(str(temporary), overwrite=True)


def _link_or_copy(source: str, target: str) -> None:
    """Make `target` a complete copy of `source`, atomically (a hard link where the file system allows)."""
    with atomic_path(target) as temporary:
        temporary.unlink()
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose resume state survives a kill at any instant, and a torn or missing file.

    Each save renames complete files into place: the weights first, then the epoch (so a kill
    between the two repeats at most the epoch just finished), after keeping the previous state
    as `previous.weights.h5` (a hard link: no copy). On resume a state that cannot be read is
    reported in one warning line and the previous one is used; with neither, the phase restarts
    from its first epoch. Non-finite weights are never backed up. The backup is kept at the end of training
    (`delete_checkpoint=False`): `fit_model` removes it once the finished training is recorded,
    so a kill in between does not repeat the phase.

    Args:
        backup_dir: Folder of the resume state (`latest.weights.h5`, `training_metadata.json`).
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        # Not Keras's `double_checkpoint` (`latest.weights.h5.bkp`): Keras loads weights only
        # from a name ending in `.weights.h5`, and copies the old state in place, non-atomically.
        self._previous_weights_path = os.path.join(backup_dir, "previous.weights.h5")
        self._previous_metadata_path = os.path.join(backup_dir, "previous_training_metadata.json")

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        record_epoch(epoch + 1)  # for the line Ctrl-C prints (keras_med.interruption)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        record_epoch(None)

    def on_train_begin(self, logs=None):
        remove_stale_temporaries(self.backup_dir)
        states = [("latest", self._weights_path, self._training_metadata_path),
                  ("previous", self._previous_weights_path, self._previous_metadata_path)]
        problems = []
        for name, weights, metadata in states:
            if not os.path.isfile(weights):
                if os.path.isfile(metadata):
                    problems.append(f"{Path(weights).name} is missing")
                continue
            try:
                epoch = self._restore(weights, metadata)
            except Exception as error:  # h5py: OSError; Keras: ValueError on a file of another model
                problems.append(f"{Path(weights).name}: {first_line(error)}")
                continue
            if problems:
                logger.warning("resume state in %s unreadable (%s); resuming from the %s backup instead, after "
                               "epoch %s", self.backup_dir, "; ".join(problems), name, epoch or "unknown")
            return
        if problems:
            logger.warning("no readable resume state in %s (%s); this phase starts again from its first epoch",
                           self.backup_dir, "; ".join(problems))

    def _restore(self, weights: str, metadata: str) -> int | None:
        """Load one saved state into the model; returns the number of epochs it had finished."""
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        epoch = None
        if os.path.isfile(metadata):
            epoch = int(json.loads(Path(metadata).read_text())["epoch"])
        self.model.load_weights(weights)
        if epoch is not None:
            self.model._initial_epoch = epoch
        return epoch

    def _save_model(self):
        if not weights_are_finite(self.model):
            logger.debug("the weights are not finite; resume state in %s not updated", self.backup_dir)
            return
        with disk_errors("the resume state", self.backup_dir):
            os.makedirs(self.backup_dir, exist_ok=True)
        # HDF5 dies with a segmentation fault on a full disk (keras_med.disk_space): refuse first,
        # while the last complete state is still in place.
        ensure_free_space(self.backup_dir, model_file_bytes(self.model), "the resume state")
        for current, previous in ((self._weights_path, self._previous_weights_path),
                                  (self._training_metadata_path, self._previous_metadata_path)):
            if os.path.isfile(current):
                _link_or_copy(current, previous)
        with atomic_path(self._weights_path) as temporary:
            self.model.save_weights(str(temporary), overwrite=True)
        write_text_atomic(self._training_metadata_path,
                          json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class AtomicCSVLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` (append mode) that rewrites the whole file atomically after each epoch.

    Keras appends rows in place, so a kill mid-write leaves a torn last line, and the next run's
    rows are appended onto it. Here Keras formats the rows into memory and the file is replaced
    whole (a few kB per hundred epochs). A torn last line left by an older writer is dropped with
    a warning when training starts.

    Args:
        filename: The CSV file (`history.csv`).
        separator: Column separator.
    """

    def __init__(self, filename, separator=","):
        super().__init__(filename, separator=separator, append=True)

    def on_train_begin(self, logs=None):
        text = ""
        if os.path.isfile(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as handle:
                text = handle.read()
        if text and not text.endswith("\n"):
            kept = text[:text.rfind("\n") + 1]
            logger.warning("%s: dropped a torn last line (%r) left by a killed run", self.filename,
                           text[len(kept):][:80])
            text = kept
        self.append_header = not text
        self.csv_file = io.StringIO()
        self.csv_file.write(text)
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        write_text_atomic(self.filename, self.csv_file.getvalue())
