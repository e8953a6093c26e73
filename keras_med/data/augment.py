"""Augmentation presets built from Keras 3's own preprocessing layers, chosen by name.

Keras 3 layers, not KerasCV (frozen, TensorFlow-only, and its MixUp/CutMix break on Keras 3.15).
The pipeline applies them to whole batches inside `tf.data`, so the model itself stays free of
augmentation and exports clean. All presets work on 0..255 float images.
"""

from __future__ import annotations

from typing import Callable

import keras

from keras_med.data.errors import DataError


def _dermoscopy(seed: int) -> list[keras.layers.Layer]:
    # A skin lesion has no canonical orientation: flip both ways and rotate all round. Colour is
    # diagnostic, so jitter brightness, contrast and saturation a little and leave hue alone (a hue
    # jitter would also cost ~45% of the colour layer's time).
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom(0.15, fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.1, contrast_factor=0.1,
                                       saturation_factor=(0.4, 0.6), seed=seed + 3),
    ]


def _xray(seed: int) -> list[keras.layers.Layer]:
    # Anatomy has an orientation: only a mirror, small rotations and zooms, and exposure changes.
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        keras.layers.RandomContrast(0.15, value_range=(0, 255), seed=seed + 3),
    ]


def _fundus(seed: int) -> list[keras.layers.Layer]:
    # A retina photographed through the pupil has no up: any rotation and both flips are the same
    # eye seen differently. Illumination and camera gain vary between clinics, so brightness and
    # contrast jitter; hue stays (haemorrhages and exudates are told apart by colour).
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.15, contrast_factor=0.15,
                                       seed=seed + 3),
    ]


def _histology(seed: int) -> list[keras.layers.Layer]:
    # A tissue patch has no orientation at all (any rotation, both flips, reflect padding keeps
    # tissue at the corners), and H&E staining differs between labs and batches: jitter the
    # colour, hue included, which is the usual stand-in for stain augmentation.
    return [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.1, contrast_factor=0.2,
                                       saturation_factor=(0.35, 0.65), hue_factor=0.05, seed=seed + 2),
    ]


def _light(seed: int) -> list[keras.layers.Layer]:
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.02, fill_mode="reflect", seed=seed + 1),
    ]


AUGMENT_PRESETS: dict[str, Callable[[int], list[keras.layers.Layer]]] = {
    "dermoscopy": _dermoscopy,
    "xray": _xray,
    "fundus": _fundus,
    "histology": _histology,
    "light": _light,
    "none": lambda seed: [],
}


def build_augmenter(name: str, seed: int = 42) -> keras.layers.Layer | None:
    """The augmentation preset `name` as one `keras.layers.Pipeline`, or `None` for `"none"`.

    Args:
        name: one of `AUGMENT_PRESETS` (dermoscopy, xray, fundus, histology, light, none).
        seed: seeds the random layers, so a run repeats.
    """
    if name not in AUGMENT_PRESETS:
        raise DataError(f"augment must be one of {sorted(AUGMENT_PRESETS)}, got {name!r}")
    layers = AUGMENT_PRESETS[name](seed)
    return keras.layers.Pipeline(layers, name=f"augment_{name}") if layers else None


def build_mixers(mixup: float = 0.0, cutmix: float = 0.0, seed: int = 42) -> list[keras.layers.Layer]:
    """The MixUp and/or CutMix layers asked for (empty when both are 0); they need one-hot targets.

    Args:
        mixup: MixUp's Beta alpha; 0 turns it off.
        cutmix: CutMix's Beta alpha (its `factor`); 0 turns it off.
        seed: seeds the layers.
    """
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if value < 0:
            raise DataError(f"{name} alpha must be >= 0, got {value}")
    mixers = []
    if mixup > 0:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
    if cutmix > 0:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed + 1))
    return mixers
