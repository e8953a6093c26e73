"""The rules one configuration value must follow, and how a message names a setting.

Each field of the schema (`keras_med.config.schema`) carries its choices and its `Rule`; the checks
here read them, so a range is written once, beside its field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from keras_med.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A range a field's value must lie in; `expected` completes "expected ...".

    Args:
        accepts: predicate on the value.
        expected: what a valid value is, in words (e.g. "an integer of at least 1").
    """

    accepts: typing.Callable[[typing.Any], bool]
    expected: str


def at_least(low, what: str = "an integer") -> Rule:
    return Rule(lambda value: value >= low, f"{what} of at least {low}")


def above(low, what: str = "a number") -> Rule:
    return Rule(lambda value: value > low, f"{what} above {low}")


def in_range(low, high, what: str = "a number", closed: bool = False) -> Rule:
    """Values in [low, high) (or [low, high] when `closed`)."""
    if closed:
        return Rule(lambda value: low <= value <= high, f"{what} in [{low}, {high}]")
    return Rule(lambda value: low <= value < high, f"{what} in [{low}, {high})")


NOT_EMPTY = Rule(lambda value: bool(str(value).strip()), "a non-empty value")
MIN_IMAGE_SIZE = 32  # the smallest input every registered model builds at (keras_med.models.create_model)


# Values that mean "chosen from the data and the machine" for recipes that detect them (classify).
AUTO_VALUES = {"image_size": 0, "model": "auto", "augment": "auto"}


def auto_problem(value) -> str:
    return (f"expected a value of its own, got {value!r} (chosen from the data only by a recipe that detects it: "
            "classify)")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def where(section: str, name: str) -> str:
    """How a message names a setting: its flag and its TOML key, e.g. `--epochs ([train] epochs)`."""
    return f"{flag_name(name)} ([{section}] {name})"



def type_problem(value, kind: type) -> str | None:
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"expected {kind.__name__}, got {value!r}"
    return None



def field_problem(value, spec: dataclasses.Field) -> str | None:
    """What is wrong with one field's value (type, choice, range), or None."""
    problem = type_problem(value, type(spec.default))
    if problem:
        return problem
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        return f"expected one of {choices}, got {value!r}"
    rule = spec.metadata.get("rule")
    if rule is not None and not rule.accepts(value):
        return f"expected {rule.expected}, got {value!r}"
    return None



def path_problem(value: str, section: str, name: str, kind: str, inside: str = "") -> str | None:
    """A missing file or directory named by a setting (`kind` is "file" or "directory")."""
    path = Path(value).expanduser()
    candidates = [path] + ([Path(inside).expanduser() / value] if inside and not path.is_absolute() else [])
    exists = {"file": Path.is_file, "directory": Path.is_dir, "directory or file": Path.exists}[kind]
    found = any(exists(p) for p in candidates)
    if found:
        return None
    also = f" (also looked in {inside})" if len(candidates) > 1 else ""
    return f"{where(section, name)}: expected an existing {kind}, got {value!r}{also}"



def coerce(value, spec: dataclasses.Field, source: str):
    problem = type_problem(value, type(spec.default))
    if problem:
        raise ConfigError(f"{source}: {problem}")
    if type(spec.default) is float:
        value = float(value)
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{source}: expected one of {choices}, got {value!r}")
    return value
