"""A backbone's block structure: the units "unfreeze the top N blocks" counts in.

Every architecture keras_med builds names its layers after its blocks, and this table is the one
place that reads those names:

| backbone                                   | a block's layers start with       | blocks             |
|--------------------------------------------|-----------------------------------|--------------------|
| keras.applications ResNet50, DenseNet121   | `conv3_block2_`                   | 16 / 58            |
| KerasHub ResNet (`ResNetBackbone`)         | `stack1_block0_`                  | sum of its stacks  |
| keras.applications MobileNetV2             | `block_13_`                       | 16                 |
| keras.applications / KerasHub EfficientNet | `block2a_`                        | 16 (B0) .. 32 (B4) |
| keras_med EfficientNet-Lite (same names)   | `block2a_`                        | 16 (Lite0) .. 21   |
| keras.applications VGG16, the custom CNN   | `block3_`                         | 5 / 4              |

Layers between blocks (DenseNet's transitions, MobileNetV2's final `Conv_1`, EfficientNet's
`top_conv`) belong to the block before them; those before the first block form a `stem` block.
A backbone none of these patterns fits (another KerasHub architecture) counts each of its
top-level layers with weights as one block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import keras

# Tried in order; the first that names at least two blocks of the backbone is its structure.
BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),    # ResNet50, DenseNet121 (keras.applications)
    re.compile(r"^(stack\d+_block\d+)_"),   # KerasHub ResNetBackbone
    re.compile(r"^(block_?\d+[a-z]?)_"),    # MobileNetV2 block_N_, EfficientNet blockNx_, VGG16/custom CNN blockN_
)
STEM = "stem"


@dataclass
class Block:
    """One block of a backbone: its name and its top-level layers, in model order."""

    name: str
    layers: list = field(default_factory=list)


def _blocks_by_pattern(layers: list, pattern: re.Pattern) -> list[Block]:
    blocks: list[Block] = []
    for layer in layers:
        match = pattern.match(layer.name)
        if match and (not blocks or blocks[-1].name != match.group(1)):
            blocks.append(Block(match.group(1)))
        elif not blocks:
            blocks.append(Block(STEM))
        blocks[-1].layers.append(layer)
    return blocks


def backbone_blocks(backbone: keras.Model) -> list[Block]:
    """The backbone's blocks from input to output (see the module docstring for how they are found).

    Args:
        backbone: A functional `keras.Model` (the `backbone` of an `ImageClassifier`).

    Returns:
        `Block`s in model order; only blocks holding weights are listed.

    Example:
    >>> blocks = backbone_blocks(keras.applications.VGG16(include_top=False, weights=None))
    >>> [block.name for block in blocks]
    ['block1', 'block2', 'block3', 'block4', 'block5']
    """
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    for pattern in BLOCK_PATTERNS:
        blocks = _blocks_by_pattern(layers, pattern)
        if sum(block.name != STEM for block in blocks) >= 2:
            break
    else:
        blocks = [Block(layer.name, [layer]) for layer in layers]
    return [block for block in blocks if any(layer.weights for layer in block.layers)]
