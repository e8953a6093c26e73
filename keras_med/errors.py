"""The project's error types: a user's mistake is a `UserError`, printed as one line with exit status 2.

Every room raises a subclass (`keras_med.data.errors.DataError` for bad input data,
`ConfigError` for a bad flag or TOML value, `RunFileError` for a missing or inconsistent run
directory, ...). The command-line entry points catch `UserError` and print its message without a
traceback unless `--verbose` is given; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class KerasMedError(Exception):
    """Base of every error keras_med raises on purpose."""


class UserError(KerasMedError):
    """A user's mistake (a file, row, column, flag or value); the message says what was expected."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A configuration value (flag, TOML key) out of range or of the wrong kind."""


class RunFileError(UserError, FileNotFoundError):
    """A run directory, checkpoint or SavedModel is missing a file or its files disagree."""


class RunContentError(UserError, ValueError):
    """A run directory's file is unreadable, or disagrees with the model it sits beside."""


class RunDivergedError(KerasMedError):
    """Training produced a non-finite loss; the message names the epoch, the loss and what to try.

    Not a user's mistake in the file-or-flag sense, but not a bug either: one line, exit status 3.
    """

    exit_code = 3
