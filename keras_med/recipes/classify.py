"""Any image classification problem: point at the data, get a trained, evaluated, explained, served model.

Run: `python -m keras_med.recipes.classify --data-dir DATA` or `keras-med train --data-dir DATA`
(no `--recipe` needed when the layout is recognised), or `--demo` (a synthetic four-class folder set).

Layouts (detected and logged; `--layout` forces one):
- `folder`: `DATA/<class>/*` or pre-split `DATA/{train,val,test}/<class>/*` (splits kept; a missing
  val is carved out of train by group); 2 classes = binary (one sigmoid), more = softmax;
- `table`: a CSV or Parquet (`DATA` itself, or the one metadata file in `DATA`, or `--metadata`)
  with an image column, a label column and optionally a group column; multi-label when labels
  hold a separator (`|` detected, or `--label-separator`);
- `npz`: a MedMNIST `.npz` of any 2D set (binary, multi-class, ChestMNIST's multi-label), its
  official splits kept.
Images may be JPEG, PNG or DICOM (`.dcm`, read with pydicom). Without a group column the group is
`--group-pattern`'s match in the file name, else each image is its own group, with a warning in the
log and in the model card: images of one patient could then sit in two splits.

Defaults follow the data and the machine, every one overridable: the `--modality` picks the
augmentation preset; on a CPU MobileNetV2 from ImageNet at 160 px (less for small images), on a
GPU DenseNet121 at 224 px with mixed precision; `--weights runs/<run>/checkpoints/best.keras`
starts from an earlier run's backbone with a new head.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from pathlib import Path

import numpy as np

from keras_med.config import TABLE_OPTIONS, DataConfig, EvaluationConfig, ModelConfig, RecipeConfig, TrainConfig
from keras_med.engine.command import main
from keras_med.engine.spec import RecipeSpec
from keras_med.recipes.registry import register_recipe

log = logging.getLogger("keras_med")

DATA_HELP = """
No data given. Point the recipe at your images, or try it on synthetic data first:

  python -m keras_med.recipes.classify --demo
  python -m keras_med.recipes.classify --data-dir DIR           (DIR/<class>/*.jpg, or DIR/train/<class>/...)
  python -m keras_med.recipes.classify --data-dir labels.csv --image-column file --label-column grade \\
      [--group-column patient] [--label-separator '|']
  python -m keras_med.recipes.classify --data-dir bloodmnist.npz
  keras-med train --data-dir DIR                                (the same, when the layout is recognised)

Images may be JPEG, PNG or DICOM. See README.md, "Your own data".
""".strip()

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
MODALITY_AUGMENT = {"dermoscopy": "dermoscopy", "xray": "xray", "fundus": "fundus", "histology": "histology",
                    "other": "light"}
# Column names tried in order when --image-column / --label-column / --group-column are not given.
IMAGE_COLUMNS = ("Image Index", "image", "image_id", "image_path", "path", "file", "filename", "imagem")
LABEL_COLUMNS = ("Finding Labels", "label", "labels", "class", "dx", "diagnosis", "grade", "patologia")
GROUP_COLUMNS = ("Patient ID", "patient_id", "PatientID", "patient", "lesion_id", "subject", "subject_id")
NEGATIVE_NAMES = ("normal", "negative", "healthy", "benign", "no", "0", "no_finding", "nofinding", "absent")
# Sizes by machine (see BENCHMARKS.md): a 2-core CPU fine-tunes MobileNetV2 at 160 px in tens of
# minutes on a few thousand images; a GPU affords DenseNet121 at 224 px (CheXNet's setting).
CPU_MODEL, CPU_IMAGE_SIZE = "mobilenetv2", 160
GPU_MODEL, GPU_IMAGE_SIZE = "densenet121", 224
SMALLEST_SIDE = 64
UNGROUPED_WARNING = ("!! NO PATIENT GROUPS: no group column and no --group-pattern, so each image is its own "
                     "group and images of one patient may sit in two splits, which inflates the test figures. "
                     "Give --group-column or --group-pattern if a patient can have several images.")


def default_config() -> RecipeConfig:
    """`auto` model, 0 (auto) image size and `auto` augmentation are resolved from the data and machine."""
    return RecipeConfig(
        recipe="classify",
        data=DataConfig(image_size=0, batch_size=32, augment="auto", cache="memory", no_finding="keep"),
        model=ModelConfig(model="auto", weights="imagenet", dropout=0.3, head_units=128),
        train=TrainConfig(plan="auto", head_epochs=2, epochs=10, learning_rate=1e-3, finetune_learning_rate=1e-4,
                          monitor="val_loss", patience=4),
        evaluation=EvaluationConfig(operating_point="youden"),
    )


# --- layout ---------------------------------------------------------------------------------------
def detect_layout(data_dir: Path, config: RecipeConfig) -> str:
    """`npz`, `table` or `folder` for `data_dir` (a file or a folder); `--layout` wins when set.

    Raises:
        DataError: nothing recognisable, naming what was looked for.
    """
    from keras_med.data.errors import DataError

    if config.data.layout != "auto":
        return config.data.layout
    if data_dir.is_file():
        if data_dir.suffix.lower() == ".npz":
            return "npz"
        if data_dir.suffix.lower() in TABLE_SUFFIXES:
            return "table"
        raise DataError(f"--data-dir {data_dir}: a file, but not a .npz, .csv or .parquet; expected one of them "
                        "or a folder")
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such file or directory")
    if config.data.metadata or len(_table_files(data_dir)) == 1:
        return "table"
    if _class_folders(data_dir):
        return "folder"
    npz = sorted(data_dir.glob("*.npz"))
    if len(npz) == 1:
        return "npz"
    raise DataError(f"--data-dir {data_dir}: no layout recognised; expected class folders (DIR/<class>/*.jpg or "
                    "DIR/train/<class>/...), one CSV/Parquet table (or --metadata FILE), or a MedMNIST .npz "
                    "(force one with --layout)")


def _table_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in TABLE_SUFFIXES and path.is_file())


def _class_folders(root: Path) -> list[Path]:
    """Class folders holding images: `root/<class>/` or `root/train/<class>/`."""
    from keras_med.data.files import IMAGE_SUFFIXES

    base = root / "train" if (root / "train").is_dir() else root
    return [folder for folder in sorted(base.iterdir()) if folder.is_dir()
            and any(path.suffix.lower() in IMAGE_SUFFIXES for path in folder.iterdir())]


def _pick_column(columns, given: str, candidates: tuple[str, ...], what: str, source: Path,
                 required: bool = True) -> str:
    from keras_med.data.errors import MissingColumnError

    if given:
        return given
    lowered = {column.lower(): column for column in columns}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    if required:
        raise MissingColumnError(f"{source}: no {what} column found among {list(columns)}; name it with "
                                 f"--{what}-column (looked for {list(candidates)})")
    return ""


def _metadata_file(data_dir: Path, config: RecipeConfig) -> tuple[Path, Path]:
    """(metadata file, image folder) of a table layout."""
    from keras_med.data.errors import DataError

    if data_dir.is_file():
        return data_dir, data_dir.parent
    if config.data.metadata:
        path = Path(config.data.metadata)
        path = path if path.is_file() else data_dir / path
        if not path.is_file():
            raise DataError(f"--metadata {config.data.metadata}: no such file (also looked in {data_dir})")
        return path, data_dir
    tables = _table_files(data_dir)
    if len(tables) != 1:
        raise DataError(f"{data_dir}: {len(tables)} CSV/Parquet files; expected one, or name it with --metadata FILE")
    return tables[0], data_dir


# --- loading ----------------------------------------------------------------------------------------
def resolve_data(config: RecipeConfig) -> RecipeConfig:
    """Detect what `auto` leaves open about the data: layout, table columns, label separator, patient pattern.

    The findings go into the configuration (and so into the run's config.toml), so a run repeats
    with the very same reading of the data, and the model card can say when there were no groups.
    """
    data = config.data
    path = Path(data.data_dir).expanduser()
    layout = detect_layout(path, config)
    changes: dict = {"layout": layout}
    if layout == "folder" and not data.group_pattern:
        changes["group_pattern"] = _kermany_pattern(path)
    elif layout == "table":
        from keras_med.data.sources.common import read_metadata

        metadata, _ = _metadata_file(path, config)
        columns = list(read_metadata(metadata).columns)
        changes["image_column"] = _pick_column(columns, data.image_column, IMAGE_COLUMNS, "image", metadata)
        changes["label_column"] = _pick_column(columns, data.label_column, LABEL_COLUMNS, "label", metadata)
        if not data.group_pattern:
            changes["group_column"] = _pick_column(columns, data.group_column, GROUP_COLUMNS, "group", metadata,
                                                   required=False)
        changes["label_separator"] = data.label_separator or _detect_separator(metadata, changes["label_column"])
    return dataclasses.replace(config, data=dataclasses.replace(data, **changes))


def is_ungrouped(config: RecipeConfig) -> bool:
    """Whether each image is its own group (no group column, no file-name pattern, not MedMNIST's splits)."""
    data = config.data
    return data.layout in ("folder", "table") and not data.group_column and not data.group_pattern


def load_table(data_dir, config: RecipeConfig):
    """Load `data_dir` in its layout (see the module docstring); the chosen layout is logged."""
    from keras_med.data import load_image_folder, load_medmnist
    from keras_med.data.sources.table import load_image_table

    path = Path(data_dir)
    config = resolve_data(dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=str(path))))
    data = config.data
    if data.layout == "npz":
        npz = path if path.is_file() else sorted(path.glob("*.npz"))[0]
        log.info("layout: MedMNIST .npz (%s), official splits kept", npz)
        return _order_binary(load_medmnist(npz, class_names=_medmnist_class_names(npz)))
    if data.layout == "folder":
        log.info("layout: a folder per class in %s%s", path,
                 f", groups from file names by {data.group_pattern!r}" if data.group_pattern else "")
        table = load_image_folder(path, data.group_pattern or None)
    else:
        metadata, image_dir = _metadata_file(path, config)
        log.info("layout: table %s (images: %r, labels: %r%s, groups: %s)", metadata, data.image_column,
                 data.label_column, f" split by {data.label_separator!r}" if data.label_separator else "",
                 repr(data.group_column) if data.group_column else (data.group_pattern or "none"))
        table = load_image_table(metadata, image_dir, image_column=data.image_column, label_column=data.label_column,
                                 group_column=data.group_column or None, label_separator=data.label_separator or None,
                                 group_pattern=data.group_pattern or None, no_finding=data.no_finding,
                                 on_bad_image=data.on_bad_image)
    if is_ungrouped(config):
        log.warning(UNGROUPED_WARNING)
    table = _order_binary(table)
    if data.dicom_tags:
        table = _attach_dicom_tags(table, [tag.strip() for tag in data.dicom_tags.split(",") if tag.strip()])
    return table


def _medmnist_class_names(npz: Path) -> list[str] | None:
    # MedMNIST's own label names for the sets a user is likeliest to try; others get class_0...
    known = {"pneumoniamnist": ["normal", "pneumonia"], "breastmnist": ["malignant", "normal_benign"]}
    return known.get(npz.stem.split("_")[0].lower())


def _kermany_pattern(root: Path) -> str:
    """Kermany's patient pattern when most file names follow it (its layout is common), else ``""``."""
    import re

    from keras_med.data import KERMANY_GROUP_PATTERN

    if not _class_folders(root):
        return ""
    base = root / "train" if (root / "train").is_dir() else root
    names = [path.name for folder in _class_folders(root) for path in list(folder.iterdir())[:20]]
    matched = sum(bool(re.search(KERMANY_GROUP_PATTERN, name)) for name in names)
    if names and matched >= 0.9 * len(names):
        log.info("file names in %s follow Kermany's patient naming; grouping by %r", base, KERMANY_GROUP_PATTERN)
        return KERMANY_GROUP_PATTERN
    return ""


def _detect_separator(metadata: Path, label_column: str) -> str:
    from keras_med.data.sources.common import read_metadata
    from keras_med.data.table import LABEL_SEPARATOR

    labels = read_metadata(metadata)[label_column].fillna("").astype(str)
    return LABEL_SEPARATOR if labels.str.contains(LABEL_SEPARATOR, regex=False).any() else ""


def _order_binary(table):
    """Binary tasks put the negative class first (the sigmoid is P(positive)); sorted names may not."""
    if table.task != "binary":
        return table
    names = table.class_names
    if names[1].lower() in NEGATIVE_NAMES and names[0].lower() not in NEGATIVE_NAMES:
        log.info("binary task: %r is the negative class, %r the positive one", names[1], names[0])
        return dataclasses.replace(table, class_names=[names[1], names[0]])
    log.info("binary task: %r is the negative class, %r the positive one", names[0], names[1])
    return table


def _attach_dicom_tags(table, keywords: list[str]):
    """Add one column per DICOM header keyword (for reports); non-DICOM images get empty values."""
    from keras_med.data.decode import sniff_format
    from keras_med.data.dicom import read_dicom_tags

    rows = [read_dicom_tags(path, keywords) if sniff_format(path) == "dicom" else dict.fromkeys(keywords, "")
            for path in table.paths]
    frame = table.frame.assign(**{keyword: [row[keyword] for row in rows] for keyword in keywords})
    log.info("read DICOM tags %s into the table", keywords)
    return table.with_frame(frame)


# --- defaults from the data and the machine ------------------------------------------------------------
def resolve_auto_values(config: RecipeConfig) -> RecipeConfig:
    """Replace `auto` values by what fits the data and the machine (each choice is logged).

    - the layout, table columns and groups: `resolve_data`;
    - `augment = "auto"`: the `--modality`'s preset;
    - `model = "auto"`: DenseNet121 on a GPU, MobileNetV2 on a CPU (the checkpoint's own with
      `--weights file.keras`); a model without an ImageNet backbone gets `weights = "none"`;
    - `image_size = 0`: 224 px on a GPU, 160 on a CPU, less for small images (the images' own side
      rounded up to 32, at least 64), the checkpoint's side with `--weights file.keras`.
    """
    from keras_med.models import model_spec
    from keras_med.models.transfer import checkpoint_input_side, is_checkpoint
    from keras_med.training.runtime import gpu_available

    if config.data.data_dir and not config.data.prepared:
        config = resolve_data(config)
    data, model = config.data, config.model
    gpu = gpu_available()
    if data.augment == "auto":
        data = dataclasses.replace(data, augment=MODALITY_AUGMENT[data.modality])
        log.info("augmentation: %s (modality %s)", data.augment, data.modality)
    checkpoint = is_checkpoint(model.weights)
    if model.model == "auto":
        name = _checkpoint_name(model.weights) if checkpoint else GPU_MODEL if gpu else CPU_MODEL
        model = dataclasses.replace(model, model=name)
        log.info("model: %s (%s)", name, "from --weights" if checkpoint else "GPU" if gpu else "CPU")
    if not checkpoint and model.weights == "imagenet" and not model_spec(model.model).pretrained:
        model = dataclasses.replace(model, weights="none")
    if data.image_size == 0:
        if checkpoint:
            size = checkpoint_input_side(model.weights)
        else:
            size = GPU_IMAGE_SIZE if gpu else CPU_IMAGE_SIZE
            native = native_image_side(config)
            if native and native < size:
                size = max(SMALLEST_SIDE, 32 * math.ceil(native / 32))
        data = dataclasses.replace(data, image_size=size)
        log.info("image size: %d px", size)
    return dataclasses.replace(config, data=data, model=model)


def _checkpoint_name(path: str) -> str:
    import keras

    import keras_med.models  # noqa: F401

    return keras.saving.load_model(path, compile=False).name


def native_image_side(config: RecipeConfig) -> int | None:
    """The shorter side of the data's images, from the first image found (None for the demo or if unknown)."""
    from keras_med.data.decode import sniff_format
    from keras_med.data.files import walk_images

    if not config.data.data_dir:
        return None
    path = Path(config.data.data_dir).expanduser()
    try:
        if path.suffix.lower() == ".npz" or (path.is_dir() and detect_layout(path, config) == "npz"):
            npz = path if path.is_file() else sorted(path.glob("*.npz"))[0]
            with np.load(npz) as arrays:
                return int(min(arrays["val_images"].shape[1:3]))
        first = next(walk_images(path if path.is_dir() else path.parent), None)
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    if first is None:
        return None
    if sniff_format(str(first)) == "dicom":
        import pydicom

        header = pydicom.dcmread(first, stop_before_pixels=True)
        return int(min(header.Rows, header.Columns))
    from PIL import Image

    with Image.open(first) as image:
        return int(min(image.size))


def write_demo(out_dir, config: RecipeConfig):
    from keras_med.data.synthetic import write_classes_demo

    return write_classes_demo(out_dir, n_images=config.data.demo_size, seed=config.train.seed,
                              image_size=max(64, config.data.image_size))


SPEC = register_recipe(RecipeSpec(
    name="classify",
    description="Train, evaluate, explain and export a classifier for any image folder, table or MedMNIST file.",
    defaults=default_config(),
    load_table=load_table,
    write_demo=write_demo,
    data_help=DATA_HELP,
    group_name="patient",
    demo_overrides={
        "data": {"image_size": 64, "batch_size": 32, "demo_size": 240, "group_pattern": r"^(patient\d+)_"},
        "model": {"model": "custom_cnn", "weights": "none", "dropout": 0.2, "head_units": 64},
        "train": {"plan": "scratch", "epochs": 10, "learning_rate": 2e-3, "patience": 5},
        "evaluation": {"bootstrap": 200},
    },
    resolve_auto_values=resolve_auto_values,
    options=(*TABLE_OPTIONS, "layout", "modality", "label_separator", "group_pattern", "dicom_tags"),
))

if __name__ == "__main__":
    sys.exit(main(SPEC))
