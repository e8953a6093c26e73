"""The configuration schema: typed dataclasses that load from TOML, take CLI flags, and are saved per run.

A recipe's configuration is plain data in five sections (`data`, `model`, `train`, `evaluation`,
`export`). Every field is a CLI flag (`--image-size 160` sets `data.image_size`), so the default
path is one command and every default is visible in `--help` and overridable. The resolved
configuration is written to `config.toml` in each run directory so any run can be repeated with
`--config runs/<recipe>/<stamp>/config.toml`.

`RecipeConfig.validate()` checks every value (type, choice, range given by each field's `Rule`,
the model registry, the paths named) before a command touches any data; its messages name the
flag and the TOML key (`--epochs ([train] epochs)`).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

from keras_med.config.rules import MIN_IMAGE_SIZE, NOT_EMPTY, Rule, above, at_least, coerce, in_range
from keras_med.config.toml import read_toml, write_toml
from keras_med.config.validation import validate_config
from keras_med.errors import ConfigError


def _opt(default, help_text: str, choices=None, rule: Rule | None = None, recipe_option: bool = False):
    """A configuration field with its flag's help, allowed choices and range.

    Args:
        recipe_option: an option of some recipes or data sources only (`--views`, `--label-column`);
            a recipe lists the ones it takes in `RecipeSpec.options`, and only those become its flags.
    """
    return field(default=default, metadata={"help": help_text, "choices": choices, "rule": rule,
                                            "recipe_option": recipe_option})


def _recipe_opt(default, help_text: str, choices=None, rule: Rule | None = None):
    return _opt(default, help_text, choices, rule, recipe_option=True)


@dataclass
class DataConfig:
    data_dir: str = _opt("", "Dataset directory (metadata plus images). Empty: use --demo.")
    demo: bool = _opt(False, "Generate a small synthetic dataset in the real layout and use it.")
    demo_size: int = _opt(700, "Number of images the demo dataset has.", rule=at_least(1))
    image_size: int = _opt(128, "Side of the square images the model sees, in pixels.",
                         rule=at_least(MIN_IMAGE_SIZE, "an integer number of pixels"))
    batch_size: int = _opt(32, "Images per training step.", rule=at_least(1))
    val_fraction: float = _opt(0.15, "Share of groups (lesions, patients) held out for validation.",
                                rule=in_range(0.0, 1.0, "a fraction"))
    test_fraction: float = _opt(0.15, "Share of groups held out for the test split.",
                                 rule=in_range(0.0, 1.0, "a fraction"))
    split_file: str = _opt("", "A split.csv from an earlier run to repeat its split exactly.")
    resize: str = _opt("resize", "How images reach the model size.", ["resize", "pad"])
    cache: str = _opt("memory", "Cache decoded, resized images: 'memory', 'none', or a file path/folder: one "
                      "cache file per split, named by a key of its inputs.",
                     rule=NOT_EMPTY)
    augment: str = _opt("dermoscopy", "Augmentation preset ('auto': the --modality's preset, classify only).",
                        ["auto", "dermoscopy", "xray", "fundus", "histology", "light", "none"])
    mixup: float = _opt(0.0, "MixUp alpha; 0 turns it off.", rule=at_least(0.0, "a number"))
    cutmix: float = _opt(0.0, "CutMix alpha; 0 turns it off.", rule=at_least(0.0, "a number"))
    augment_on: str = _opt("auto", "Where augmentation and MixUp/CutMix run: 'host' (in tf.data, on the CPU), "
                           "'device' (inside the training step, on the accelerator; TensorFlow backend), or "
                           "'auto' (device when a GPU is present).", ["auto", "host", "device"])
    class_weights: bool = _opt(True, "Weight the loss by inverse class frequency of the training split "
                               "(multi-label: each label's positives and negatives, CheXNet's weighted cross-entropy).")
    oversample: bool = _opt(False, "Oversample minority classes in the training stream instead.")
    on_bad_image: str = _opt("error", "What to do with a missing or unreadable image.", ["error", "skip"])
    max_images: int = _opt(0, "Use a random subset of this many images (0: all).", rule=at_least(0))
    prepared: str = _opt("", "Train from TFRecord shards written by `keras-med prepare` in this directory "
                         "instead of decoding the original files.")
    # Options of some recipes or sources only (RecipeSpec.options): a recipe's --help shows its own.
    metadata: str = _recipe_opt("", "Metadata file (CSV or Parquet), inside --data-dir or a path; empty: the "
                                "recipe's default (chexnet: Data_Entry_2017.csv or the one Parquet file).")
    label_column: str = _recipe_opt("", "Metadata column with the labels; empty: the recipe's default "
                                    "(chexnet: 'Finding Labels'; a Portuguese copy may use 'patologia').")
    image_column: str = _recipe_opt("", "Metadata column with the image file name; empty: the recipe's default.")
    group_column: str = _recipe_opt("", "Metadata column with the patient id; empty: the recipe's default.")
    no_finding: str = _recipe_opt("drop", "Multi-label tables: drop 'No Finding' images, or keep them as "
                                  "all-zero targets.", ["drop", "keep"])
    layout: str = _recipe_opt("auto", "The data layout: a folder per class, a CSV/Parquet table, a MedMNIST .npz, "
                              "or 'auto' (detected and logged).", ["auto", "folder", "table", "npz"])
    modality: str = _recipe_opt("other", "The kind of images; picks the augmentation preset when --augment is "
                                "'auto'.", ["dermoscopy", "xray", "fundus", "histology", "other"])
    label_separator: str = _recipe_opt("", "Table layout: the separator of multi-label labels (e.g. '|'); empty: "
                                       "detected ('|' when labels hold one), else single-label.")
    group_pattern: str = _recipe_opt("", "A regex on image file names whose first group (or match) is the "
                                     "patient, when there is no group column; empty: one group per image (warned).")
    positive_class: str = _recipe_opt("", "Binary tasks: the class that is positive (the sigmoid gives its "
                                      "probability); empty: the class not named like a negative (normal, benign, "
                                      "...), else the later one in sorted order, logged.")
    dicom_tags: str = _recipe_opt("", "Comma-separated DICOM header keywords read into the table for reports "
                                  "(e.g. ViewPosition,PatientSex,PatientAge,Manufacturer).")
    views: str = _recipe_opt("PA,AP,AP Supine", "ieee8023 layout: comma-separated X-ray views kept.",
                             rule=NOT_EMPTY)
    negatives: str = _recipe_opt("all", "ieee8023 layout: negatives are all other findings, or 'No Finding' "
                                 "images only.", ["all", "no_finding"])


@dataclass
class ModelConfig:
    model: str = _opt("mobilenetv2", "Model name in the registry (keras-med models lists them).",
                      rule=NOT_EMPTY)
    weights: str = _opt("imagenet", "Backbone weights: 'imagenet', 'none' or a path to a weights file.")
    dropout: float = _opt(0.3, "Dropout rate of the classification head.", rule=in_range(0.0, 1.0, "a rate"))
    head_units: int = _opt(256, "Width of the head's hidden Dense layer.", rule=at_least(0))
    width: float = _opt(1.0, "Width multiplier (MobileNetV2's alpha); 1.0 for other models.",
                       rule=above(0.0))
    # the choices of keras_med.models.preprocessing.COLOUR_CONSTANCY, spelled out: importing it here would import
    # Keras before --backend is chosen
    colour_constancy: str = _opt("none", "Colour constancy inside the model, before the backbone: 'shades_of_gray' "
                                 "removes each image's colour cast (camera, light), e.g. between dermoscopes.",
                                 ["none", "shades_of_gray"])


@dataclass
class TrainConfig:
    plan: str = _opt("auto", "Fit plan: 'scratch', 'finetune', or 'auto' (finetune when weights are given).",
                     ["auto", "scratch", "finetune"])
    epochs: int = _opt(20, "Epochs of training (of the fine-tuning phase for the finetune plan).",
                      rule=at_least(1))
    head_epochs: int = _opt(3, "Finetune plan: epochs training only the head, backbone frozen.",
                       rule=at_least(0))
    learning_rate: float = _opt(1e-3, "Learning rate (of the head phase for the finetune plan).",
                                rule=above(0.0))
    finetune_learning_rate: float = _opt(1e-4, "Finetune plan: learning rate once layers are unfrozen.",
                                         rule=above(0.0))
    warmup_epochs: float = _opt(0.0, "Finetune plan: epochs of linear learning-rate warm-up when the "
                                "backbone is unfrozen (0: off).", rule=at_least(0.0, "a number"))
    lr_schedule: str = _opt("plateau", "Learning rate over a phase: halve it when the monitored metric stalls "
                            "('plateau'), or cosine decay from the phase's rate to 0 at its last epoch, after "
                            "any warm-up ('cosine').", ["plateau", "cosine"])
    unfreeze: int = _opt(-1, "Finetune plan: how many top backbone blocks to unfreeze (-1: all).",
                        rule=at_least(-1))
    optimizer: str = _opt("adamw", "Optimizer.", ["adamw", "adam", "sgd"])
    weight_decay: float = _opt(1e-4, "Weight decay for AdamW.", rule=at_least(0.0, "a number"))
    label_smoothing: float = _opt(0.0, "Label smoothing for the cross-entropy loss.",
                                 rule=in_range(0.0, 1.0, "a fraction"))
    clipnorm: float = _opt(0.0, "Clip each gradient to this norm; 0 turns it off.",
                          rule=at_least(0.0, "a number"))
    focal_loss: bool = _opt(False, "Use focal loss instead of cross-entropy.")
    logit_adjustment: float = _opt(0.0, "Single-label multi-class: train on logits shifted by this tau times the "
                                   "log class prior of the training split (logit adjustment, Menon et al. 2021), "
                                   "so the model's outputs rank classes as if equally common; replaces class "
                                   "weights. 0: off.", rule=at_least(0.0, "a number"))
    monitor: str = _opt("val_balanced_accuracy", "Validation metric that picks the best checkpoint.",
                       rule=Rule(lambda value: value.startswith("val_") and len(value) > 4,
                                 "a validation metric name starting with 'val_'"))
    patience: int = _opt(6, "EarlyStopping patience, in epochs.", rule=at_least(1))
    accumulate: int = _opt(1, "Gradient accumulation steps.", rule=at_least(1))
    ema: float = _opt(0.0, "Exponential moving average of the weights (momentum, e.g. 0.999; 0: off); "
                      "validation, checkpoints and the exported model use the averaged weights.",
                      rule=in_range(0.0, 1.0, "a momentum"))
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
    members: int = _opt(1, "Train this many models on one split (seeds seed, seed+1, ...) and evaluate and export "
                        "the average of their probabilities as one model (a seed ensemble); 1: one model.",
                        rule=at_least(1))
    seed: int = _opt(42, "Random seed for splits, initialisation and augmentation.",
                    rule=in_range(0, 2**32 - 1, "an integer", closed=True))
    steps_per_epoch: int = _opt(0, "Limit steps per epoch (0: whole split); for smoke runs.",
                               rule=at_least(0))
    deterministic: bool = _opt(False, "TensorFlow op determinism; augmentation is always reproducible.")


@dataclass
class EvaluationConfig:
    bootstrap: int = _opt(1000, "Bootstrap resamples for confidence intervals.", rule=at_least(0))
    operating_point: str = _opt("youden", "How per-class thresholds are chosen on validation.",
                                ["youden", "f1", "sensitivity", "specificity"])
    target: float = _opt(0.9, "Target sensitivity or specificity for that operating point.",
                         rule=Rule(lambda value: 0.0 < value <= 1.0, "a fraction in (0, 1]"))
    explain: int = _opt(4, "Grad-CAM overlays for this many right and wrong test predictions.",
                      rule=at_least(0))
    tta: str = _opt("none", "Test-time augmentation (flips: also inside the exported model).", ["none", "flips"])
    # Off by default: on HAM10000 (seed 42's split) the fitted biases lowered the test balanced
    # accuracy (0.662 -> 0.647; with flips 0.670 -> 0.657): the class weights already balance the
    # classes, and 16-20 validation images of the small classes make the biases noise.
    decision_rule: str = _opt("none", "Multiclass decision rule fitted on validation, applied in evaluation and "
                              "in the exported model: per-class logit biases maximising balanced accuracy "
                              "('balanced'), -log prior ('prior'), or argmax ('none').",
                              ["balanced", "prior", "none"])
    ood: str = _opt("mahalanobis", "Out-of-distribution guard stored in the served model ('none': off).",
                    ["knn", "mahalanobis", "max_softmax", "none"])
    ood_pass_rate: float = _opt(0.95, "Share of validation images the guard's threshold lets through.",
                                rule=Rule(lambda value: 0.0 < value < 1.0, "a fraction in (0, 1)"))
    coverage: float = _opt(0.9, "Coverage of the conformal prediction sets (calibrated on validation).",
                           rule=Rule(lambda value: 0.0 < value < 1.0, "a fraction in (0, 1)"))
    conformal: str = _opt("marginal", "Conformal calibration: one threshold ('marginal') or one per class "
                          "('mondrian', class-conditional coverage).", ["marginal", "mondrian"])


@dataclass
class ExportConfig:
    export: bool = _opt(True, "Export the best model to saved_models/<name>/<version>/ at the end.")
    saved_models: str = _opt("saved_models", "TF Serving model base path.", rule=NOT_EMPTY)
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
        write_toml(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict, base: "RecipeConfig | None" = None, source: str = "config") -> "RecipeConfig":
        config = dataclasses.replace(base) if base is not None else cls()
        for key, value in values.items():
            if key in cls.SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: [{key}] must be a table, got {value!r}")
                section = dataclasses.replace(getattr(config, key))
                known = {f.name: f for f in dataclasses.fields(section)}
                for name, item in value.items():
                    if name not in known:
                        raise ConfigError(f"{source}: unknown key '{name}' in [{key}]; expected one of {sorted(known)}")
                    setattr(section, name, coerce(item, known[name], f"{source}: [{key}] {name}"))
                setattr(config, key, section)
            elif key in ("recipe", "output_dir"):
                setattr(config, key, str(value))
            else:
                raise ConfigError(f"{source}: unknown key or section '{key}'; expected one of "
                                 f"{['recipe', 'output_dir', *cls.SECTIONS]}")
        return config

    @classmethod
    def load(cls, path: str | Path, base: "RecipeConfig | None" = None) -> "RecipeConfig":
        return cls.from_dict(read_toml(path), base=base, source=str(path))

    # --- validation ---------------------------------------------------------------------------
    def validate(self, allow_auto: bool = False) -> "RecipeConfig":
        """Check every value (types, choices, ranges, files it names) before any data is read.

        Every entry point calls this right after resolving defaults, TOML and flags, so a bad
        value costs a second, not a decoded dataset. All problems are reported at once.

        Args:
            allow_auto: accept the `AUTO_VALUES` (`--image-size 0`, `--model auto`), which a recipe
                with a detection step (classify) replaces by what fits the data and the machine;
                it validates again after that step.

        Returns:
            The configuration itself.

        Raises:
            ConfigError: one line naming each bad flag and TOML key, what was expected and what
                was given.

        Example:
            >>> config = RecipeConfig()
            >>> config.train.epochs = 0
            >>> config.validate()
            Traceback (most recent call last):
            ...
            keras_med.errors.ConfigError: --epochs ([train] epochs): expected an integer of at least 1, got 0
        """
        validate_config(self, allow_auto)
        return self


# --- recipe options -----------------------------------------------------------------------------
# Every [data] key that only some recipes or sources take (`_recipe_opt`).
RECIPE_OPTIONS = tuple(spec.name for spec in dataclasses.fields(DataConfig) if spec.metadata.get("recipe_option"))
# The options of a labelled metadata table (keras_med.data.sources.table, ChestX-ray14's loader).
TABLE_OPTIONS = ("metadata", "image_column", "label_column", "group_column", "no_finding")


def check_recipe_options(options) -> tuple[str, ...]:
    """`options` as a tuple, each one a recipe option of `DataConfig` (a recipe's own declaration).

    Raises:
        ValueError: a name that is not a recipe option (a bug in the recipe module).
    """
    unknown = sorted(set(options) - set(RECIPE_OPTIONS))
    if unknown:
        raise ValueError(f"options: expected names among {list(RECIPE_OPTIONS)}, got {unknown}")
    return tuple(options)


def drop_unused_options(config: RecipeConfig, options, source: str = "configuration") -> RecipeConfig:
    """Reset the recipe options a recipe does not take to their defaults, with one warning naming them.

    A run's config.toml (every run's holds every key) or a TOML written for another recipe may
    set them; they would not change this recipe's run, and the run's config.toml should say what
    was used.

    Args:
        config: the merged configuration.
        options: the recipe options the recipe takes (`RecipeSpec.options`).
        source: where the values came from, for the warning.

    Returns:
        The configuration with every other recipe option at its `DataConfig` default.
    """
    defaults = DataConfig()
    unused = [name for name in RECIPE_OPTIONS
              if name not in options and getattr(config.data, name) != getattr(defaults, name)]
    if not unused:
        return config
    logging.getLogger("keras_med").warning(
        "%s: %s not used by the %s recipe; ignored", source,
        ", ".join(f"[data] {name}" for name in unused) + (" is" if len(unused) == 1 else " are"), config.recipe)
    return dataclasses.replace(config, data=dataclasses.replace(
        config.data, **{name: getattr(defaults, name) for name in unused}))
