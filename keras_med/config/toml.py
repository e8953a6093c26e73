"""TOML input and output of a configuration: the file a run writes (`config.toml`) and `--config FILE`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from keras_med.atomic import write_text_atomic
from keras_med.errors import ConfigError


def read_toml(path: str | Path) -> dict:
    """The TOML file at `path` as a dict.

    Raises:
        ConfigError: no such file, or not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file; expected a TOML file such as recipes/ham10000.toml")
    with path.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from error


def write_toml(path: str | Path, values: dict) -> None:
    """`values` as TOML at `path`, atomically: a resumed or repeated run reads the file back."""
    write_text_atomic(path, tomli_w.dumps(values))
