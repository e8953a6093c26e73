"""Source detection: what a `--data-dir` holds and how to read it, for the recipes that look (classify, covid_cxr).

Layouts (detected and logged; `--layout` forces one):
- `folder`: `DATA/<class>/*` or pre-split `DATA/{train,val,test}/<class>/*` (splits kept; a missing
  val is carved out of train by group); 2 classes = binary (one sigmoid), more = softmax;
- `table`: a CSV or Parquet (`DATA` itself, or the one metadata file in `DATA`, or `--metadata`)
  with an image column, a label column and optionally a group column; multi-label when labels
  hold a separator (`|` detected, or `--label-separator`);
- `npz`: a MedMNIST `.npz` of any 2D set (binary, multi-class, ChestMNIST's multi-label), its
  official splits kept.
Without a group column the group is `--group-pattern`'s match in the file name (Kermany's naming
is recognised), else each image is its own group, with a warning.

The one list of negative-class names (`NEGATIVE_NAMES`) decides which class of a binary task is
the negative one (the sigmoid is P(positive)); `--positive-class NAME` overrides it, and when
neither name is a known negative the choice is logged as a guess.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from keras_med.config import RecipeConfig
from keras_med.tasks import Task

log = logging.getLogger("keras_med")

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
# Column names tried in order when --image-column / --label-column / --group-column are not given.
IMAGE_COLUMNS = ("Image Index", "image", "image_id", "image_path", "path", "file", "filename", "imagem")
LABEL_COLUMNS = ("Finding Labels", "label", "labels", "class", "dx", "diagnosis", "grade", "patologia")
GROUP_COLUMNS = ("Patient ID", "patient_id", "PatientID", "patient", "lesion_id", "subject", "subject_id")
# How the negative class of a binary task may be named (compared in lower case).
NEGATIVE_NAMES = ("normal", "negative", "healthy", "benign", "no", "0", "no_finding", "no finding", "nofinding",
                  "absent")
UNGROUPED_WARNING = ("!! NO PATIENT GROUPS: no group column and no --group-pattern, so each image is its own "
                     "group and images of one patient may sit in two splits, which inflates the test figures. "
                     "Give --group-column or --group-pattern if a patient can have several images.")


def is_negative_name(name: str) -> bool:
    """Whether a class name says "negative" (`NORMAL`, `benign`, `no finding`, ...)."""
    return str(name).lower() in NEGATIVE_NAMES


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
    if config.data.metadata or len(table_files(data_dir)) == 1:
        return "table"
    if class_folders(data_dir):
        return "folder"
    npz = sorted(data_dir.glob("*.npz"))
    if len(npz) == 1:
        return "npz"
    raise DataError(f"--data-dir {data_dir}: no layout recognised; expected class folders (DIR/<class>/*.jpg or "
                    "DIR/train/<class>/...), one CSV/Parquet table (or --metadata FILE), or a MedMNIST .npz "
                    "(force one with --layout)")


def table_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in TABLE_SUFFIXES and path.is_file())


def class_folders(root: Path) -> list[Path]:
    """Class folders holding images: `root/<class>/` or `root/train/<class>/`."""
    from keras_med.data.files import folder_has_images

    base = root / "train" if (root / "train").is_dir() else root
    # At any depth: a class's images may sit in sub-folders (per patient, per scanner).
    return [folder for folder in sorted(base.iterdir()) if folder.is_dir() and folder_has_images(folder)]


def pick_column(columns, given: str, candidates: tuple[str, ...], what: str, source: Path,
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


def metadata_file(data_dir: Path, config: RecipeConfig) -> tuple[Path, Path]:
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
    tables = table_files(data_dir)
    if len(tables) != 1:
        raise DataError(f"{data_dir}: {len(tables)} CSV/Parquet files; expected one, or name it with --metadata FILE")
    return tables[0], data_dir


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
        changes["group_pattern"] = kermany_pattern(path)
    elif layout == "table":
        from keras_med.data.sources.common import read_metadata

        metadata, _ = metadata_file(path, config)
        columns = list(read_metadata(metadata).columns)
        changes["image_column"] = pick_column(columns, data.image_column, IMAGE_COLUMNS, "image", metadata)
        changes["label_column"] = pick_column(columns, data.label_column, LABEL_COLUMNS, "label", metadata)
        if not data.group_pattern:
            changes["group_column"] = pick_column(columns, data.group_column, GROUP_COLUMNS, "group", metadata,
                                                   required=False)
        changes["label_separator"] = data.label_separator or detect_separator(metadata, changes["label_column"])
    return dataclasses.replace(config, data=dataclasses.replace(data, **changes))


def is_ungrouped(config: RecipeConfig) -> bool:
    """Whether each image is its own group (no group column, no file-name pattern, not MedMNIST's splits)."""
    data = config.data
    return data.layout in ("folder", "table") and not data.group_column and not data.group_pattern


def load_detected_table(data_dir, config: RecipeConfig):
    """Load `data_dir` in its detected layout (see the module docstring); the chosen layout is logged."""
    from keras_med.data import load_image_folder, load_medmnist
    from keras_med.data.sources.table import load_image_table

    path = Path(data_dir)
    config = resolve_data(dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=str(path))))
    data = config.data
    if data.layout == "npz":
        npz = path if path.is_file() else sorted(path.glob("*.npz"))[0]
        log.info("layout: MedMNIST .npz (%s), official splits kept", npz)
        return order_binary(load_medmnist(npz, class_names=medmnist_class_names(npz)), data.positive_class)
    if data.layout == "folder":
        log.info("layout: a folder per class in %s%s", path,
                 f", groups from file names by {data.group_pattern!r}" if data.group_pattern else "")
        table = load_image_folder(path, data.group_pattern or None)
    else:
        metadata, image_dir = metadata_file(path, config)
        log.info("layout: table %s (images: %r, labels: %r%s, groups: %s)", metadata, data.image_column,
                 data.label_column, f" split by {data.label_separator!r}" if data.label_separator else "",
                 repr(data.group_column) if data.group_column else (data.group_pattern or "none"))
        table = load_image_table(metadata, image_dir, image_column=data.image_column, label_column=data.label_column,
                                 group_column=data.group_column or None, label_separator=data.label_separator or None,
                                 group_pattern=data.group_pattern or None, no_finding=data.no_finding,
                                 on_bad_image=data.on_bad_image)
    if is_ungrouped(config):
        log.warning(UNGROUPED_WARNING)
    table = order_binary(table, data.positive_class)
    if data.dicom_tags:
        table = attach_dicom_tags(table, [tag.strip() for tag in data.dicom_tags.split(",") if tag.strip()])
    return table


def medmnist_class_names(npz: Path) -> list[str] | None:
    # MedMNIST's own label names for the sets a user is likeliest to try; others get class_0...
    known = {"pneumoniamnist": ["normal", "pneumonia"], "breastmnist": ["malignant", "normal_benign"]}
    return known.get(npz.stem.split("_")[0].lower())


def kermany_pattern(root: Path) -> str:
    """Kermany's patient pattern when most file names follow it (its layout is common), else ``""``."""
    import re

    from keras_med.data import KERMANY_GROUP_PATTERN

    if not class_folders(root):
        return ""
    base = root / "train" if (root / "train").is_dir() else root
    names = [path.name for folder in class_folders(root) for path in list(folder.iterdir())[:20]]
    matched = sum(bool(re.search(KERMANY_GROUP_PATTERN, name)) for name in names)
    if names and matched >= 0.9 * len(names):
        log.info("file names in %s follow Kermany's patient naming; grouping by %r", base, KERMANY_GROUP_PATTERN)
        return KERMANY_GROUP_PATTERN
    return ""


def detect_separator(metadata: Path, label_column: str) -> str:
    from keras_med.data.sources.common import read_metadata
    from keras_med.data.table import LABEL_SEPARATOR

    labels = read_metadata(metadata)[label_column].fillna("").astype(str)
    return LABEL_SEPARATOR if labels.str.contains(LABEL_SEPARATOR, regex=False).any() else ""


def order_binary(table, positive_class: str = ""):
    """Binary tasks put the negative class first (the sigmoid is P(positive)); sorted names may not.

    Args:
        positive_class: `--positive-class`: the class to make positive; empty: the one not named
            like a negative (`NEGATIVE_NAMES`), else the later in sorted order (logged, as a guess).

    Raises:
        ConfigError: `positive_class` given for a task that is not binary, or not one of its classes.
    """
    if positive_class:
        return choose_positive_class(table, positive_class)
    if table.task != Task.BINARY:
        return table
    names = table.class_names
    if is_negative_name(names[0]) == is_negative_name(names[1]):
        # Neither (or both) named like a negative: the order is a guess the user must be able to see.
        log.info("binary task: neither %r nor %r is named like a negative class; %r taken as the positive one "
                 "(--positive-class NAME changes it)", names[0], names[1], names[1])
        return table
    if is_negative_name(names[1]):
        names = [names[1], names[0]]
        table = dataclasses.replace(table, class_names=names)
    log.info("binary task: %r is the negative class, %r the positive one", names[0], names[1])
    return table


def choose_positive_class(table, positive_class: str):
    """`table` with `positive_class` as its positive (second) class; its name matches case-insensitively.

    Raises:
        ConfigError: the task is not binary, or `positive_class` is not one of its two classes.
    """
    from keras_med.errors import ConfigError

    names = list(table.class_names)
    if table.task != Task.BINARY:
        raise ConfigError(f"--positive-class {positive_class!r} ([data] positive_class): the task is "
                          f"{Task(table.task).value} with {len(names)} classes {names}; only a binary task has a "
                          "positive class (leave it empty)")
    matches = [name for name in names if name == positive_class] or \
              [name for name in names if str(name).lower() == positive_class.lower()]
    if len(matches) != 1:
        raise ConfigError(f"--positive-class {positive_class!r} ([data] positive_class): not one of the two "
                          f"classes {names}")
    negative = next(name for name in names if name != matches[0])
    log.info("binary task: %r is the positive class (--positive-class), %r the negative one", matches[0], negative)
    return dataclasses.replace(table, class_names=[negative, matches[0]])


def attach_dicom_tags(table, keywords: list[str]):
    """Add one column per DICOM header keyword (for reports); non-DICOM images get empty values."""
    from keras_med.data.decode import sniff_format
    from keras_med.data.dicom import read_dicom_tags

    rows = [read_dicom_tags(path, keywords) if sniff_format(path) == "dicom" else dict.fromkeys(keywords, "")
            for path in table.paths]
    frame = table.frame.assign(**{keyword: [row[keyword] for row in rows] for keyword in keywords})
    log.info("read DICOM tags %s into the table", keywords)
    return table.with_frame(frame)


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


def binary_class_folders(root: Path, positive_class: str = "") -> list[str]:
    """`[negative, positive]` class folder names under `root` (or `root/train`): NORMAL first, or
    `positive_class` (`--positive-class`) last when given.

    Raises:
        DataError: not exactly two class folders, or (without `positive_class`) none of them named
            like a negative class.
        ConfigError: `positive_class` is not one of the two folders.
    """
    from keras_med.data.errors import DataError
    from keras_med.errors import ConfigError

    if not root.is_dir():
        raise DataError(f"--data-dir {root}: no such directory or .npz file")
    base = root / "train" if (root / "train").is_dir() else root
    folders = sorted(path.name for path in base.iterdir() if path.is_dir())
    if positive_class and len(folders) == 2:
        positives = [name for name in folders if name == positive_class] or \
                    [name for name in folders if name.lower() == positive_class.lower()]
        if len(positives) != 1:
            raise ConfigError(f"--positive-class {positive_class!r} ([data] positive_class): not one of the two "
                              f"classes {folders}")
        return [next(name for name in folders if name != positives[0]), positives[0]]
    negatives = [name for name in folders if is_negative_name(name)]
    if len(folders) != 2 or len(negatives) != 1:
        raise DataError(f"{base}: expected two class folders, one of them named NORMAL (or {list(NEGATIVE_NAMES)}) "
                        f"or the other named by --positive-class, found {folders}; or metadata.csv (ieee8023 "
                        "layout), or a MedMNIST .npz")
    return [negatives[0], next(name for name in folders if name != negatives[0])]
