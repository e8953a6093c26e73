"""Ctrl-C during training: one line saying where the run stopped and that the same command resumes.

The training's resume-state callback (`keras_med.training.checkpoints.AtomicBackupAndRestore`)
records each epoch as it starts; `keras_med.command_line.run_command` reads it when a
`KeyboardInterrupt` reaches it. A module of its own, free of Keras, so that reading it at that
moment starts nothing.
"""

from __future__ import annotations

# Conventional exit status of a process ended by SIGINT (128 + 2), as shells report it.
INTERRUPTED_EXIT_CODE = 130

_epoch: int | None = None


def record_epoch(epoch: int | None) -> None:
    """Note the (1-based) epoch now running; None once training has ended."""
    global _epoch
    _epoch = epoch


def epoch_in_progress() -> int | None:
    """The (1-based) epoch that was running, or None outside training."""
    return _epoch


def interrupted_message(prog: str) -> str:
    """The line printed for Ctrl-C, e.g. `keras-med train: stopped at epoch 3; re-run the same command to resume`."""
    if _epoch is None:
        return f"{prog}: stopped (Ctrl-C)"
    return f"{prog}: stopped at epoch {_epoch}; re-run the same command to resume"
