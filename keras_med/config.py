"""Recipe configuration: typed dataclasses that load from TOML, take CLI flags, and are saved per run.

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

import argparse
import dataclasses
import logging
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from keras_med.atomic import write_text_atomic
from keras_med.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A range a field's value must lie in; `expected` completes "expected ...".

    Args:
        accepts: predicate on the value.
        expected: what a valid value is, in words (e.g. "an integer of at least 1").
    """

    accepts: typing.Callable[[typing.Any], bool]
    expected: str


def at_least(low, what: str = "an integer") -> Rule:
    return Rule(lambda value: value >= low, f"{what} of at least {low}")


def above(low, what: str = "a number") -> Rule:
    return Rule(lambda value: value > low, f"{what} above {low}")


def in_range(low, high, what: str = "a number", closed: bool = False) -> Rule:
    """Values in [low, high) (or [low, high] when `closed`)."""
    if closed:
        return Rule(lambda value: low <= value <= high, f"{what} in [{low}, {high}]")
    return Rule(lambda value: low <= value < high, f"{what} in [{low}, {high})")


NOT_EMPTY = Rule(lambda value: bool(str(value).strip()), "a non-empty value")
MIN_IMAGE_SIZE = 32  # the smallest input every registered model builds at (keras_med.models.create_model)


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
    cache: str = _opt("memory", "Cache decoded, resized images: 'memory', 'none' or a file path.",
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
    # Off by default: on HAM10000 (seed 42, BENCHMARKS.md) the fitted biases lowered the test balanced
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
        # Atomic: a resumed or repeated run reads this file back.
        write_text_atomic(path, tomli_w.dumps(self.to_dict()))

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
                    setattr(section, name, _coerce(item, known[name], f"{source}: [{key}] {name}"))
                setattr(config, key, section)
            elif key in ("recipe", "output_dir"):
                setattr(config, key, str(value))
            else:
                raise ConfigError(f"{source}: unknown key or section '{key}'; expected one of "
                                 f"{['recipe', 'output_dir', *cls.SECTIONS]}")
        return config

    @classmethod
    def load(cls, path: str | Path, base: "RecipeConfig | None" = None) -> "RecipeConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file; expected a TOML file such as recipes/ham10000.toml")
        with path.open("rb") as handle:
            try:
                values = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ConfigError(f"{path}: not valid TOML: {error}") from error
        return cls.from_dict(values, base=base, source=str(path))

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
        problems, bad = [], set()
        for section_name in self.SECTIONS:
            section = getattr(self, section_name)
            for spec in dataclasses.fields(section):
                value = getattr(section, spec.name)
                auto = spec.name in AUTO_VALUES and AUTO_VALUES[spec.name] == value
                if allow_auto and auto:
                    continue
                problem = _field_problem(value, spec) or (_auto_problem(value) if auto else None)
                if problem:
                    problems.append(f"{where(section_name, spec.name)}: {problem}")
                    bad.add(spec.name)
        problems += _cross_field_problems(self, bad, allow_auto)
        if problems:
            raise ConfigError("; ".join(problems))
        return self


# Values that mean "chosen from the data and the machine" for recipes that detect them (classify).
AUTO_VALUES = {"image_size": 0, "model": "auto", "augment": "auto"}


def _auto_problem(value) -> str:
    return (f"expected a value of its own, got {value!r} (chosen from the data only by a recipe that detects it: "
            "classify)")


def where(section: str, name: str) -> str:
    """How a message names a setting: its flag and its TOML key, e.g. `--epochs ([train] epochs)`."""
    return f"{_flag(name)} ([{section}] {name})"


def _type_problem(value, kind: type) -> str | None:
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"expected {kind.__name__}, got {value!r}"
    return None


def _field_problem(value, spec: dataclasses.Field) -> str | None:
    """What is wrong with one field's value (type, choice, range), or None."""
    problem = _type_problem(value, type(spec.default))
    if problem:
        return problem
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        return f"expected one of {choices}, got {value!r}"
    rule = spec.metadata.get("rule")
    if rule is not None and not rule.accepts(value):
        return f"expected {rule.expected}, got {value!r}"
    return None


def _path_problem(value: str, section: str, name: str, kind: str, inside: str = "") -> str | None:
    """A missing file or directory named by a setting (`kind` is "file" or "directory")."""
    path = Path(value).expanduser()
    candidates = [path] + ([Path(inside).expanduser() / value] if inside and not path.is_absolute() else [])
    exists = {"file": Path.is_file, "directory": Path.is_dir, "directory or file": Path.exists}[kind]
    found = any(exists(p) for p in candidates)
    if found:
        return None
    also = f" (also looked in {inside})" if len(candidates) > 1 else ""
    return f"{where(section, name)}: expected an existing {kind}, got {value!r}{also}"


def _cross_field_problems(config: RecipeConfig, bad: set[str], allow_auto: bool = False) -> list[str]:
    """Checks that need several values, the model registry or the file system.

    Args:
        config: the configuration.
        bad: names of the fields already reported (their checks here are skipped).
        allow_auto: a detection step will still adapt the model settings (see `validate`).
    """
    data, model = config.data, config.model
    problems = []
    if not bad & {"val_fraction", "test_fraction"} and data.val_fraction + data.test_fraction >= 1.0:
        problems.append(f"{where('data', 'val_fraction')} + {where('data', 'test_fraction')}: expected a sum "
                        f"below 1 (some groups must be left to train on), got {data.val_fraction} + {data.test_fraction}")
    if not bad & {"model", "weights", "width"} and not (allow_auto and model.model == AUTO_VALUES["model"]):
        # With a detection step to come (allow_auto), the weights may still be adapted to the
        # model (classify: 'imagenet' becomes 'none' for a model without a pretrained backbone).
        problems += _model_problems(model, name_only=allow_auto)
    # Imported here: the export package imports TensorFlow.
    from keras_med.export.metadata import is_valid_served_name

    name = config.export.name
    if "name" not in bad and name and not is_valid_served_name(name):
        problems.append(f"{where('export', 'name')}: expected letters, digits, '-', '_' or '.' "
                        f"(a folder name for TF Serving), got {name!r}")
    if bad & {"data_dir", "metadata", "split_file", "prepared", "demo"}:
        return problems
    if data.data_dir and not data.demo and not data.prepared:
        # A directory for most layouts; classify also takes a table or a MedMNIST .npz file.
        problems.append(_path_problem(data.data_dir, "data", "data_dir", "directory or file"))
        if data.metadata:
            problems.append(_path_problem(data.metadata, "data", "metadata", "file", inside=data.data_dir))
    if data.split_file:
        problems.append(_path_problem(data.split_file, "data", "split_file", "file"))
    if data.prepared and not (Path(data.prepared).expanduser() / "manifest.json").is_file():
        problems.append(f"{where('data', 'prepared')}: expected a folder written by `keras-med prepare` "
                        f"(with manifest.json), got {data.prepared!r}")
    return [problem for problem in problems if problem]


def _model_problems(model: ModelConfig, name_only: bool = False) -> list[str]:
    """The model name is registered; weights are 'imagenet', 'none' or a file, and only for pretrained
    models (with `name_only`: the name alone)."""
    # Imported here: the registry imports Keras, which `--help` should not wait for.
    from keras_med.models.backbones import BACKBONES
    from keras_med.models.registry import available_models, known_model, model_spec

    if not known_model(model.model):
        return [f"{where('model', 'model')}: expected one of {available_models()} (keras-med models lists them) "
                f"or kerashub:PRESET, "
                f"got {model.model!r}"]
    if name_only:
        return []
    if model.width != 1.0 and model.model in BACKBONES and not BACKBONES[model.model].has_width:
        return [f"{where('model', 'width')}: model {model.model!r} has no width multiplier; expected 1.0, "
                f"got {model.width}"]
    weights = model.weights.strip()
    if weights.lower() in ("", "none"):
        return []
    if weights.endswith(".keras") and Path(weights).expanduser().is_file():
        return []  # a checkpoint of any model: its backbone with a new head (keras_med.models.transfer)
    if not model_spec(model.model).pretrained:
        return [f"{where('model', 'weights')}: model {model.model!r} has no pretrained backbone; expected 'none', "
                f"got {model.weights!r}"]
    if weights != "imagenet" and not Path(weights).expanduser().is_file():
        return [f"{where('model', 'weights')}: expected 'imagenet', 'none' or an existing weights file, "
                f"got {model.weights!r}"]
    return []


def _coerce(value, spec: dataclasses.Field, source: str):
    problem = _type_problem(value, type(spec.default))
    if problem:
        raise ConfigError(f"{source}: {problem}")
    if type(spec.default) is float:
        value = float(value)
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{source}: expected one of {choices}, got {value!r}")
    return value


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

    An older config.toml (every run's holds every key) or a TOML written for another recipe may
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


# --- command line -------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, defaults: RecipeConfig, options=RECIPE_OPTIONS,
                         sections: dict | None = None) -> None:
    """Add one flag per configuration field the recipe uses; each help states the recipe's own default once.

    Args:
        parser: the parser to add `--config`, `--output-dir` and the sections' flags to.
        defaults: the recipe's default configuration.
        options: the recipe options (`RECIPE_OPTIONS`) that get a flag; the others are left out.
        sections: the fields a command reads, when not all: `{section: None (all) or (names)}`,
            e.g. `{"data": None, "train": ("seed",)}` for `keras-med prepare`.
    """
    parser.add_argument("--config", metavar="TOML", help="TOML file whose values replace the recipe's defaults "
                        "(flags still win). E.g. recipes/ham10000.toml.")
    parser.add_argument("--output-dir", metavar="DIR", help=f"Where run directories go (default: {defaults.output_dir}).")
    for section_name in RecipeConfig.SECTIONS:
        if sections is not None and section_name not in sections:
            continue
        section = getattr(defaults, section_name)
        names = None if sections is None else sections[section_name]
        group = parser.add_argument_group(f"[{section_name}]")
        for spec in dataclasses.fields(section):
            if spec.metadata.get("recipe_option") and spec.name not in options:
                continue
            if names is not None and spec.name not in names:
                continue
            default = getattr(section, spec.name)
            help_text = spec.metadata.get("help", "")
            if "(default:" not in help_text:  # some say what an empty default means instead
                help_text += f" (default: {default!r})"
            # argparse's own default stays None ("not given"), so a --config file's value is not
            # overridden by it; the help states the recipe's default instead (HelpFormatter).
            dest = f"{section_name}.{spec.name}"
            if isinstance(default, bool):
                group.add_argument(_flag(spec.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(_flag(spec.name), dest=dest, type=type(default), default=None,
                                   choices=spec.metadata.get("choices"), metavar=_metavar(spec), help=help_text)


def _metavar(spec: dataclasses.Field) -> str | None:
    """`{a,b}` for choices (argparse's own), else the field's name: `--image-size IMAGE_SIZE`."""
    return None if spec.metadata.get("choices") else spec.name.upper()


def config_from_arguments(args: argparse.Namespace, defaults: RecipeConfig, demo_overrides: dict | None = None,
                          options=RECIPE_OPTIONS) -> RecipeConfig:
    """Recipe defaults (with the demo's overrides under `--demo`), then the --config file, then flags.

    Args:
        args: parsed flags of `add_config_arguments` (`--config`, `--output-dir`, `section.field`).
        defaults: the recipe's default configuration.
        demo_overrides: sections `--demo` changes (`RecipeSpec.demo_overrides`); flags still win.
        options: the recipe options the recipe takes; others set by the --config file are reset to
            their defaults with one warning (`drop_unused_options`).

    Returns:
        The resolved configuration, not yet validated (see `RecipeConfig.validate`).
    """
    config = defaults
    if demo_overrides and getattr(args, "data.demo", None):
        config = RecipeConfig.from_dict(demo_overrides, base=config, source="demo defaults")
    if getattr(args, "config", None):
        config = RecipeConfig.load(args.config, base=config)
        config = drop_unused_options(dataclasses.replace(config, recipe=defaults.recipe), options, args.config)
    overrides: dict = {}
    for dest, value in vars(args).items():
        if value is None or "." not in dest:
            continue
        section, name = dest.split(".", 1)
        overrides.setdefault(section, {})[name] = value
    if getattr(args, "output_dir", None):
        overrides["output_dir"] = args.output_dir
    return RecipeConfig.from_dict(overrides, base=config, source="command line")
