"""Errors raised for bad input data, each naming the file, row or column and what was expected.

All derive from `DataError`, itself a `keras_med.errors.UserError` (one line, exit status 2 at the
command line) and a `ValueError`, so a caller can catch every data problem at once or a single kind.
"""

from __future__ import annotations

from keras_med.errors import UserError


class DataError(UserError, ValueError):
    """Bad input data: the message names the file, row or column and what was expected."""


class MissingColumnError(DataError):
    """A metadata file lacks a required column."""


class MissingImageError(DataError):
    """A metadata row names an image that is not on disk."""


class BadImageError(DataError):
    """An image file exists but cannot be decoded (unreadable, truncated, not an image)."""


class UnknownLabelError(DataError):
    """A label is not one of the expected class names."""


class EmptyClassError(DataError):
    """A class has no example where one is required (e.g. left out of the training split)."""


class UnsafePathError(DataError):
    """A path taken from metadata points outside the data directory."""
