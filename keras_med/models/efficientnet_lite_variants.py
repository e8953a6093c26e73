"""EfficientNet-Lite0..2's architecture table: the stages, each variant's width and depth scaling, block names.

A leaf module, so that the builder (`efficientnet_lite`) and the weight converter
(`efficientnet_lite_weights`) both read it without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8
DROP_CONNECT_RATE = 0.2
INPUT_MEAN, INPUT_STD = 127.0, 128.0


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks (EfficientNet-B0's table, before width and depth scaling)."""

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder.py of the TensorFlow TPU repository (the B0 table, no squeeze-and-excitation).
STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    """Scaling of one EfficientNet-Lite variant."""

    width: float
    depth: float
    resolution: int  # the size it was trained at
    dropout: float  # of its ImageNet classifier


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3),
}


def round_filters(filters: int, width: float) -> int:
    """Filters scaled by `width`, rounded to a multiple of 8 and never more than 10% below."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def scaled_stages(variant: Variant) -> list[StageArgs]:
    """The stages of `variant`: filters scaled by width, repeats by depth except the first and last stage."""
    stages = []
    for index, stage in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)
        stages.append(StageArgs(
            repeats=stage.repeats if fixed else int(math.ceil(variant.depth * stage.repeats)),
            kernel_size=stage.kernel_size, strides=stage.strides, expand_ratio=stage.expand_ratio,
            # the first stage reads the unscaled stem
            filters_in=STEM_FILTERS if index == 0 else round_filters(stage.filters_in, variant.width),
            filters_out=round_filters(stage.filters_out, variant.width)))
    return stages


def block_names(variant: Variant) -> list[str]:
    """The `blockNx` names of `variant`'s MBConv blocks in order (index K of the PyTorch `_blocks.K`)."""
    return [f"block{stage + 1}{chr(ord('a') + repeat)}"
            for stage, args in enumerate(scaled_stages(variant)) for repeat in range(args.repeats)]
