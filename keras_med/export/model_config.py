"""TF Serving's model server config (``models.config``) listing every model under the base path."""

from __future__ import annotations

import logging
from pathlib import Path

from keras_med.atomic import write_text_atomic

logger = logging.getLogger(__name__)

MODELS_CONFIG = "models.config"


def list_versions(model_dir: str | Path) -> list[int]:
    """Integer versions under ``model_dir`` that hold a SavedModel, ascending.

    TF Serving only loads sub-folders whose name is an integer, so other names (our temporary
    export folders, ``other_formats/``) are ignored here too.

    Args:
        model_dir: ``saved_models/<name>``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(child.name) for child in model_dir.iterdir()
                  if child.name.isdigit() and (child / "saved_model.pb").is_file())


def exported_models(base_dir: str | Path) -> list[str]:
    """Names of the models under ``base_dir`` with at least one exported version, sorted."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(child.name for child in base_dir.iterdir() if child.is_dir() and list_versions(child))


def render_models_config(names: list[str], container_base: str = "/models") -> str:
    """The ModelServerConfig text for ``names``, with base paths as seen inside the container.

    Args:
        names: Model names; each is served from ``<container_base>/<name>``.
        container_base: Where ``saved_models/`` is mounted in the TF Serving container.
    """
    entries = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{container_base.rstrip("/")}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names)
    return f"model_config_list {{\n{entries}}}\n"


def write_models_config(base_dir: str | Path, container_base: str = "/models") -> Path:
    """Rewrite ``<base_dir>/models.config`` so it lists every exported model.

    Args:
        base_dir: TF Serving's model base path on this machine (``saved_models``).
        container_base: Where ``base_dir`` is mounted inside the container.

    Returns:
        The path of the written file.
    """
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    path = base_dir / MODELS_CONFIG
    names = exported_models(base_dir)
    # Written beside and renamed so that a TF Serving polling the file never reads half of it.
    write_text_atomic(path, render_models_config(names, container_base))
    logger.info("%s lists %d model(s): %s", path, len(names), ", ".join(names))
    return path
