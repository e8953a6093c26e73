"""Recipes by name, registered like models: a module in `keras_med.recipes` that calls `register_recipe`.

    SPEC = register_recipe(RecipeSpec(name="ham10000", ...))

The registry finds the recipes by importing every module of this package once, the first time a
name is looked up (`recipe_spec`, `available_recipes`), so adding a recipe is adding one module;
`keras_med/cli.py` lists none by hand. Recipe modules import no TensorFlow at module level, so
`keras-med recipes` and `--help` answer at once.
"""

from __future__ import annotations

import importlib
import pkgutil

from keras_med.errors import ConfigError

_REGISTRY: dict = {}
_DISCOVERED = False


def register_recipe(spec):
    """Register `spec` (a `keras_med.engine.spec.RecipeSpec`) under its name and return it.

    A module run as a script (`python -m keras_med.recipes.ham10000`) may register its recipe a
    second time when discovery imports it under its package name; the same name from two other
    modules is a mistake.

    Args:
        spec: the recipe.

    Returns:
        `spec`, so a module can write `SPEC = register_recipe(RecipeSpec(...))`.

    Raises:
        ValueError: another module registered the name already.
    """
    module = spec.load_table.__module__
    earlier = _REGISTRY.get(spec.name)
    if earlier is not None and "__main__" not in (module, earlier.load_table.__module__) \
            and module != earlier.load_table.__module__:
        raise ValueError(f"recipe name '{spec.name}' is already registered by {earlier.load_table.__module__}")
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> None:
    """Import every module of `keras_med.recipes` once, so each registers its recipe."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module("keras_med.recipes")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _DISCOVERED = True


def available_recipes() -> list[str]:
    """Names of every registered recipe, sorted."""
    _discover()
    return sorted(_REGISTRY)


def recipe_spec(name: str):
    """The `RecipeSpec` registered as `name`.

    Raises:
        ConfigError: no recipe of that name (the message lists them).

    Example:
        >>> recipe_spec("ham10000").group_name
        'lesion'
    """
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"--recipe: expected one of {available_recipes()} (keras-med recipes lists them), "
                          f"got {name!r}")
    return _REGISTRY[name]
