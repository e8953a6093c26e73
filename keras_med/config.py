"""Recipe configuration: typed dataclasses that load from TOML, take CLI flags, and are saved per run.

A recipe's configuration is plain data in four sections (`data`, `model`, `train`, `evaluation`,
`export`). Every field is a CLI flag (`--image-size 160` sets `data.image_size`), so the default
path is one command and every default is visible in `--help` and overridable. The resolved
configuration is written to `config.toml` in each run directory so any run can be repeated with
`--config runs/<recipe>/<stamp>/config.toml`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from keras_med.atomic import write_bytes_atomic


def _opt(default, help_text: str, choices=None):
    return field(default=default, metadata={"help": help_text, "choices": choices})


@dataclass
class DataConfig:
    data_dir: str = _opt("", "Dataset directory (metadata plus images). Empty: use --demo.")
    demo: bool = _opt(False, "Generate a small synthetic dataset in the real layout and use it.")
    demo_size: int = _opt(700, "Number of images the demo dataset has.")
    image_size: int = _opt(128, "Side of the square images the model sees, in pixels.")
    batch_size: int = _opt(32, "Images per training step.")
    val_fraction: float = _opt(0.15, "Share of groups (lesions, patients) held out for validation.")
    test_fraction: float = _opt(0.15, "Share of groups held out for the test split.")
    split_file: str = _opt("", "A split.csv from an earlier run to repeat its split exactly.")
    resize: str = _opt("resize", "How images reach the model size.", ["resize", "pad"])
    cache: str = _opt("memory", "Cache decoded, resized images: 'memory', 'none' or a file path.")
    augment: str = _opt("dermoscopy", "Augmentation preset.", ["dermoscopy", "xray", "light", "none"])
    mixup: float = _opt(0.0, "MixUp alpha; 0 turns it off.")
    cutmix: float = _opt(0.0, "CutMix alpha; 0 turns it off.")
    class_weights: bool = _opt(True, "Weight the loss by inverse class frequency of the training split "
                               "(multi-label: each label's positives and negatives, CheXNet's weighted cross-entropy).")
    oversample: bool = _opt(False, "Oversample minority classes in the training stream instead.")
    on_bad_image: str = _opt("error", "What to do with a missing or unreadable image.", ["error", "skip"])
    max_images: int = _opt(0, "Use a random subset of this many images (0: all).")
    prepared: str = _opt("", "Train from TFRecord shards written by `keras-med prepare` in this directory "
                         "instead of decoding the original files.")
    metadata: str = _opt("", "Metadata file (CSV or Parquet), inside --data-dir or a path; empty: the "
                         "recipe's default (chexnet: Data_Entry_2017.csv or the one Parquet file).")
    label_column: str = _opt("", "Metadata column with the labels; empty: the recipe's default "
                             "(chexnet: 'Finding Labels'; a Portuguese copy may use 'patologia').")
    image_column: str = _opt("", "Metadata column with the image file name; empty: the recipe's default.")
    group_column: str = _opt("", "Metadata column with the patient id; empty: the recipe's default.")
    no_finding: str = _opt("drop", "Multilabel chest X-rays: drop 'No Finding' images, or keep them "
                           "as all-zero targets.", ["drop", "keep"])
    views: str = _opt("PA,AP,AP Supine", "covid_cxr, ieee8023 layout: comma-separated X-ray views kept.")
    negatives: str = _opt("all", "covid_cxr, ieee8023 layout: negatives are all other findings, or "
                          "'No Finding' images only.", ["all", "no_finding"])


@dataclass
class ModelConfig:
    model: str = _opt("mobilenetv2", "Model name in the registry (keras-med models lists them).")
    weights: str = _opt("imagenet", "Backbone weights: 'imagenet', 'none' or a path to a weights file.")
    dropout: float = _opt(0.3, "Dropout rate of the classification head.")
    head_units: int = _opt(256, "Width of the head's hidden Dense layer.")
    width: float = _opt(1.0, "Width multiplier (MobileNetV2's alpha); 1.0 for other models.")


@dataclass
class TrainConfig:
    plan: str = _opt("auto", "Fit plan: 'scratch', 'finetune', or 'auto' (finetune when weights are given).",
                     ["auto", "scratch", "finetune"])
    epochs: int = _opt(20, "Epochs of training (of the fine-tuning phase for the finetune plan).")
    head_epochs: int = _opt(3, "Finetune plan: epochs training only the head, backbone frozen.")
    learning_rate: float = _opt(1e-3, "Learning rate (of the head phase for the finetune plan).")
    finetune_learning_rate: float = _opt(1e-4, "Finetune plan: learning rate once layers are unfrozen.")
    warmup_epochs: float = _opt(0.0, "Finetune plan: epochs of linear learning-rate warm-up when the "
                                "backbone is unfrozen (0: off).")
    unfreeze: int = _opt(-1, "Finetune plan: how many top backbone layers to unfreeze (-1: all).")
    optimizer: str = _opt("adamw", "Optimizer.", ["adamw", "adam", "sgd"])
    weight_decay: float = _opt(1e-4, "Weight decay for AdamW.")
    label_smoothing: float = _opt(0.0, "Label smoothing for the cross-entropy loss.")
    clipnorm: float = _opt(0.0, "Clip each gradient to this norm; 0 turns it off.")
    focal_loss: bool = _opt(False, "Use focal loss instead of cross-entropy.")
    monitor: str = _opt("val_balanced_accuracy", "Validation metric that picks the best checkpoint.")
    patience: int = _opt(6, "EarlyStopping patience, in epochs.")
    accumulate: int = _opt(1, "Gradient accumulation steps.")
    ema: float = _opt(0.0, "Exponential moving average of the weights (momentum, e.g. 0.999; 0: off); "
                      "validation, checkpoints and the exported model use the averaged weights.")
    mixed_precision: str = _opt("auto", "mixed_float16 on GPU: 'auto', 'on' or 'off'.", ["auto", "on", "off"])
    jit_compile: str = _opt("auto", "XLA compilation: 'auto' (GPU only), 'on' or 'off'.", ["auto", "on", "off"])
    backend: str = _opt("auto", "Keras backend; 'auto': KERAS_BACKEND, else tensorflow. The run's config.toml "
                        "records the one used.", ["auto", "tensorflow", "jax", "torch"])
    strategy: str = _opt("default", "Distribution over devices and machines: tf.distribute on TensorFlow, "
                         "keras.distribution.DataParallel on JAX (docs/scale.md).",
                         ["default", "mirrored", "multiworker", "tpu"])
    scale_to_replicas: bool = _opt(False, "Several replicas: keep --batch-size per replica (global batch x "
                                   "replicas) and scale the learning rates linearly; off: --batch-size is "
                                   "the global batch, split across replicas.")
    seed: int = _opt(42, "Random seed for splits, initialisation and augmentation.")
    steps_per_epoch: int = _opt(0, "Limit steps per epoch (0: whole split); for smoke runs.")


@dataclass
class EvaluationConfig:
    bootstrap: int = _opt(1000, "Bootstrap resamples for confidence intervals.")
    operating_point: str = _opt("youden", "How per-class thresholds are chosen on validation.",
                                ["youden", "f1", "sensitivity", "specificity"])
    target: float = _opt(0.9, "Target sensitivity or specificity for that operating point.")
    explain: int = _opt(4, "Grad-CAM overlays for this many right and wrong test predictions.")
    tta: str = _opt("none", "Test-time augmentation.", ["none", "flips"])


@dataclass
class ExportConfig:
    export: bool = _opt(True, "Export the best model to saved_models/<name>/<version>/ at the end.")
    saved_models: str = _opt("saved_models", "TF Serving model base path.")
    name: str = _opt("", "Name of the served model (default: the recipe's name).")


@dataclass
class RecipeConfig:
    recipe: str = "ham10000"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    SECTIONS: typing.ClassVar[tuple[str, ...]] = ("data", "model", "train", "evaluation", "export")

    # --- TOML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_bytes_atomic(path, tomli_w.dumps(self.to_dict()).encode("utf-8"))

    @classmethod
    def from_dict(cls, values: dict, base: "RecipeConfig | None" = None, source: str = "config") -> "RecipeConfig":
        config = dataclasses.replace(base) if base is not None else cls()
        for key, value in values.items():
            if key in cls.SECTIONS:
                if not isinstance(value, dict):
                    raise ValueError(f"{source}: [{key}] must be a table, got {value!r}")
                section = dataclasses.replace(getattr(config, key))
                known = {f.name: f for f in dataclasses.fields(section)}
                for name, item in value.items():
                    if name not in known:
                        raise ValueError(f"{source}: unknown key '{name}' in [{key}]; expected one of {sorted(known)}")
                    setattr(section, name, _coerce(item, known[name], f"{source}: [{key}] {name}"))
                setattr(config, key, section)
            elif key in ("recipe", "output_dir"):
                setattr(config, key, str(value))
            else:
                raise ValueError(f"{source}: unknown key or section '{key}'; expected one of "
                                 f"{['recipe', 'output_dir', *cls.SECTIONS]}")
        return config

    @classmethod
    def load(cls, path: str | Path, base: "RecipeConfig | None" = None) -> "RecipeConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        with path.open("rb") as handle:
            try:
                values = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"{path}: not valid TOML: {error}") from error
        return cls.from_dict(values, base=base, source=str(path))


def _coerce(value, spec: dataclasses.Field, where: str):
    kind = type(spec.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{where}: expected one of {choices}, got {value!r}")
    return value


# --- command line -------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, defaults: RecipeConfig) -> None:
    """Add one flag per configuration field; defaults shown are the recipe's own."""
    parser.add_argument("--config", help="TOML file whose values replace the recipe's defaults "
                        "(flags still win). E.g. recipes/ham10000.toml.")
    parser.add_argument("--output-dir", help=f"Where run directories go (default: {defaults.output_dir}).")
    for section_name in RecipeConfig.SECTIONS:
        section = getattr(defaults, section_name)
        group = parser.add_argument_group(f"[{section_name}]")
        for spec in dataclasses.fields(section):
            default = getattr(section, spec.name)
            help_text = f"{spec.metadata.get('help', '')} (default: {default!r})"
            dest = f"{section_name}.{spec.name}"
            if isinstance(default, bool):
                group.add_argument(_flag(spec.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(_flag(spec.name), dest=dest, type=type(default), default=None,
                                   choices=spec.metadata.get("choices"), help=help_text)


def config_from_arguments(args: argparse.Namespace, defaults: RecipeConfig) -> RecipeConfig:
    """Recipe defaults, then the --config file, then flags."""
    config = defaults
    if getattr(args, "config", None):
        config = RecipeConfig.load(args.config, base=config)
    overrides: dict = {}
    for dest, value in vars(args).items():
        if value is None or "." not in dest:
            continue
        section, name = dest.split(".", 1)
        overrides.setdefault(section, {})[name] = value
    if getattr(args, "output_dir", None):
        overrides["output_dir"] = args.output_dir
    return RecipeConfig.from_dict(overrides, base=config, source="command line")
