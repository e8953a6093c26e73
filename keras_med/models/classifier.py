"""`ImageClassifier`: a backbone, its input preprocessing and a classification head, in one model.

Written in the style of KerasHub's `ImageClassifier` (a functional subclass: layers under
`# === Layers ===`, wiring under `# === Functional Model ===`, arguments kept for `get_config`), so
the model knows its parts instead of the rest of keras_med finding them by layer names: freezing
goes through `backbone`, Grad-CAM through `feature_map_layer`, the out-of-distribution guard through
`pooled_features`. It saves and reloads as a `.keras` file once `keras_med` is imported.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_med.models.blocks import backbone_blocks

OUTPUT_ACTIVATIONS = {"multiclass": "softmax", "multilabel": "sigmoid", "binary": "sigmoid"}
POOLINGS = ("avg", "flatten")


@keras.saving.register_keras_serializable(package="keras_med")
class ImageClassifier(keras.Model):
    """Images (float32, 0..255) -> preprocessing -> backbone -> pooled features -> head -> predictions.

    The head is the sources' one: pooling, Dropout, Dense, ReLU, Dropout, Dense(out). The output layer
    is named `predictions` and computes in float32, so probabilities stay float32 under mixed precision.
    An identity layer named `feature_map` marks the backbone's output in this model's graph: it is the
    layer Grad-CAM explains (a nested backbone's own `output` belongs to its inner graph).

    Args:
        backbone: A `keras.Model` mapping preprocessed images to a 4-D feature map (a
            `keras.applications` model built with `include_top=False`, a KerasHub `Backbone`, the
            custom CNN's blocks).
        output_units: Units of the output layer (C, or 1 for binary).
        image_size: Side S of the square input images.
        task: "multiclass" (softmax), "multilabel" or "binary" (sigmoid).
        preprocessing: A layer normalising 0..255 images the way the backbone expects, or None.
        pooling: "avg" (global average pooling) or "flatten".
        dropout: Dropout rate before and after the hidden Dense layer.
        head_units: Width of the hidden Dense layer; 0 leaves it out.
        feature_dropout: Apply Dropout to the pooled features (the custom CNN's head does not).
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:
    >>> backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    >>> classifier = ImageClassifier(backbone, output_units=3, image_size=64,
    ...                              preprocessing=keras.layers.Rescaling(1 / 127.5, offset=-1.0))
    >>> classifier.freeze_backbone()
    >>> classifier.unfreeze_top(2)  # the last two inverted residual blocks (BatchNorm stays frozen)
    """

    def __init__(self, backbone: keras.Model, output_units: int, image_size: int, task: str = "multiclass",
                 preprocessing: keras.layers.Layer | None = None, pooling: str = "avg", dropout: float = 0.0,
                 head_units: int = 0, feature_dropout: bool = True, **kwargs):
        if task not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"task: expected one of {list(OUTPUT_ACTIVATIONS)}, got {task!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {list(POOLINGS)}, got {pooling!r}")
        # === Layers ===
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.feature_map_layer = layers.Identity(name="feature_map")
        self.pooler = (layers.GlobalAveragePooling2D(name="pooling") if pooling == "avg"
                       else layers.Flatten(name="pooling"))
        self.head_layers = []
        if feature_dropout and dropout > 0:
            self.head_layers.append(layers.Dropout(dropout, name="feature_dropout"))
        if head_units > 0:
            self.head_layers += [layers.Dense(head_units, name="head_dense"), layers.ReLU(name="head_relu")]
            if dropout > 0:
                self.head_layers.append(layers.Dropout(dropout, name="head_dropout"))
        self.output_dense = layers.Dense(output_units, activation=OUTPUT_ACTIVATIONS[task], dtype="float32",
                                         name="predictions")

        # === Functional Model ===
        inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="images")
        x = preprocessing(inputs) if preprocessing is not None else inputs
        feature_map = self.feature_map_layer(backbone(x))
        if len(feature_map.shape) != 4:
            raise ValueError(f"backbone: expected a 4-D feature map, got shape {feature_map.shape} from "
                             f"'{backbone.name}'")
        x = self.pooler(feature_map)
        for layer in self.head_layers:
            x = layer(x)
        outputs = self.output_dense(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.output_units = output_units
        self.image_size = image_size
        self.task = task
        self.pooling = pooling
        self.dropout = dropout
        self.head_units = head_units
        self.feature_dropout = feature_dropout

    @property
    def feature_map(self):
        """The backbone's 4-D feature map in this model's graph (Grad-CAM's layer output)."""
        return self.feature_map_layer.output

    @property
    def pooled_features(self):
        """The pooled (penultimate) features `(B, D)` the out-of-distribution guard scores."""
        return self.pooler.output

    @property
    def head_input(self):
        """The input of the output layer (the linear scores are `head_input @ kernel + bias`)."""
        return self.output_dense.input

    def features_and_predictions_model(self) -> keras.Model:
        """A model sharing these weights that answers `[predictions, pooled_features]` in one pass."""
        return keras.Model(self.inputs, [self.outputs[0], self.pooled_features], name=f"{self.name}_with_features")

    def freeze_backbone(self) -> None:
        """Train only the head: the backbone (and any preprocessing weights) frozen."""
        self.trainable = True
        self.backbone.trainable = False
        if self.preprocessing is not None:
            self.preprocessing.trainable = False

    def unfreeze_top(self, n_blocks: int) -> int:
        """Make the backbone's top `n_blocks` blocks trainable (-1: all), BatchNorm layers excepted.

        Blocks are the backbone's own structure (`keras_med.models.blocks`). Keras 3 runs a
        BatchNormalization layer with `trainable=False` in inference mode, which keeps pretrained
        statistics from being overwritten by small medical batches.

        Args:
            n_blocks: Number of top blocks to unfreeze; -1 for the whole backbone.

        Returns:
            How many layers with weights (BatchNorm excepted) were made trainable.
        """
        if not isinstance(n_blocks, int) or n_blocks < -1:
            raise ValueError(f"unfreeze: expected -1 (all) or a number of blocks >= 0, got {n_blocks!r}")
        self.freeze_backbone()
        blocks = backbone_blocks(self.backbone)
        selected = blocks if n_blocks == -1 else blocks[len(blocks) - min(n_blocks, len(blocks)):]
        if not selected:
            return 0
        # A layer of a frozen model cannot train whatever its own flag says: open the backbone, then
        # close every layer outside the selected blocks.
        self.backbone.trainable = True
        chosen = {id(layer) for block in selected for layer in block.layers}
        for layer in self.backbone.layers:
            if id(layer) not in chosen:
                layer.trainable = False
        unfrozen = 0
        for block in selected:
            for layer in block.layers:
                for sublayer in layer._flatten_layers(include_self=True):  # nested blocks (KerasHub)
                    if isinstance(sublayer, keras.layers.BatchNormalization):
                        sublayer.trainable = False
                unfrozen += bool(layer.trainable_weights) and not isinstance(layer, keras.layers.BatchNormalization)
        return unfrozen

    def get_config(self):
        # Not chained to super: the functional graph is rebuilt by __init__ (as KerasHub's tasks do).
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "preprocessing": keras.layers.serialize(self.preprocessing) if self.preprocessing is not None else None,
            "output_units": self.output_units,
            "image_size": self.image_size,
            "task": self.task,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "head_units": self.head_units,
            "feature_dropout": self.feature_dropout,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "preprocessing"):
            if isinstance(config.get(key), dict):
                if str(config[key].get("module", "")).startswith("keras_hub"):
                    import keras_hub  # noqa: F401  (registers KerasHub's classes; slow to import, so only here)
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)
