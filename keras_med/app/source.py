"""Where the page's answers come from: an exported SavedModel folder or a running TF Serving."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_med.errors import UserError

RESEARCH_USE = "Research use only: not a medical device and not a substitute for a clinician."
# A plain grey image the size of a small photo: asked once so a remote model tells its class names.
_PROBE_SIZE = 256
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")


@dataclass
class ModelSource:
    """The model behind the page and what the page shows about it.

    Attributes:
        predictor: A `keras_med.export.predictor.Predictor` answering the `explain` signature.
        title: "<name> version <N>" or "<name> at <server>".
        class_names: The model's class names, in output order.
        long_names: Readable names per class name (empty when the run did not record them).
        examples: Example image files shipped with the export (`assets.extra/examples/`).
        model_card: The run's `report.md` without its images, or "" when the export has none.
        has_guard: Whether the model has an out-of-distribution guard; None when unknown (a server).
    """

    predictor: object
    title: str
    class_names: list[str]
    long_names: dict[str, str] = field(default_factory=dict)
    examples: list[Path] = field(default_factory=list)
    model_card: str = ""
    has_guard: bool | None = None

    def label(self, name: str) -> str:
        """`name` with its long name when known: "mel (Melanoma)"."""
        long = self.long_names.get(name)
        return f"{name} ({long})" if long and long != name else name


def newest_version_folder(path: str | Path) -> Path:
    """`path` if it is a SavedModel folder, else its highest integer version sub-folder.

    Raises:
        UserError: when neither holds a `saved_model.pb`.
    """
    from keras_med.export.model_config import list_versions

    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = list_versions(path)
    if not versions:
        raise UserError(f"--model {path}: expected a SavedModel folder (saved_models/<name>/<version>) or a "
                        "model folder with integer version sub-folders; found neither")
    return path / str(versions[-1])


def open_saved_model(path: str | Path) -> ModelSource:
    """A `ModelSource` for `saved_models/<name>` (newest version) or `saved_models/<name>/<version>`."""
    from keras_med.export.connect import open_predictor

    folder = newest_version_folder(path)
    predictor = open_predictor(model=folder)
    extra = folder / "assets.extra"
    long_names = {}
    if (extra / "class_names.json").is_file():
        long_names = json.loads((extra / "class_names.json").read_text(encoding="utf-8")).get("long_names") or {}
    card = ""
    if (extra / "report.md").is_file():
        card = _MARKDOWN_IMAGE.sub("", (extra / "report.md").read_text(encoding="utf-8"))
    examples = sorted((extra / "examples").iterdir()) if (extra / "examples").is_dir() else []
    metadata = json.loads((extra / "keras_med.json").read_text(encoding="utf-8")) \
        if (extra / "keras_med.json").is_file() else {}
    return ModelSource(predictor, f"{predictor.name} version {predictor.version}", probe_class_names(predictor),
                       long_names, examples, card, has_guard=bool(metadata.get("ood")) if metadata else None)


def open_server(server: str, name: str, version: int | None = None) -> ModelSource:
    """A `ModelSource` for a model served by TF Serving (REST, or gRPC with a grpc:// address; no examples
    or card: the server has none)."""
    from keras_med.export.connect import open_predictor

    predictor = open_predictor(server=server, name=name, version=version)
    return ModelSource(predictor, f"{name} at {server}", probe_class_names(predictor))


def probe_class_names(predictor) -> list[str]:
    """The model's class names, from its answer to one grey image (the same call for local and remote)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((_PROBE_SIZE, _PROBE_SIZE, 3), 128, np.uint8)).save(buffer, format="PNG")
    row = predictor.answer_image_bytes([buffer.getvalue()])[0]
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in row["class_names"]]
