"""Leakage-proof splits: stratified by label, grouped by lesion or patient, deterministic for a seed.

Built on scikit-learn's `StratifiedGroupKFold`: a held-out fraction `f` is one fold of
`round(1 / f)` folds, so the realised fractions are close to (not exactly) the ones asked for;
the realised sizes are logged. Rows that already carry a split (pre-split folders, MedMNIST's
official splits) keep it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from keras_med.atomic import atomic_path
from keras_med.data.errors import DataError, EmptyClassError
from keras_med.data.sources.common import read_metadata, require_columns
from keras_med.data.table import SPLITS, ImageTable, encode_labels

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = ["path", "label", "group", "split"]


def split_by_group(table: ImageTable, val_fraction: float = 0.15, test_fraction: float = 0.15,
                   seed: int = 42, multilabel_strata: str = "rarest") -> ImageTable:
    """Add a `split` column (train/val/test): no group in two splits, every class in train.

    Args:
        table: the images; rows already marked `val` or `test` (an official test set, pre-split
            folders) keep it and that split is not carved again; rows marked `train` or unmarked
            are the pool the missing splits are carved from.
        val_fraction: share of the groups for validation (0 for none).
        test_fraction: share of the groups for the test split (0 for none).
        seed: makes the split repeatable.
        multilabel_strata: multilabel only: stratify on each image's `"rarest"` positive label or
            on its whole label `"combination"`.

    Raises:
        EmptyClassError: a class has no image in train, or none in a non-empty val/test split.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    started = time.perf_counter()
    split = _existing_split(table)
    split[split == "train"] = ""
    strata = stratification_labels(table, multilabel_strata)
    groups = table.groups
    remaining_share = 1.0
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction == 0.0 or (split == name).any():
            continue
        free = np.flatnonzero(split == "")
        held = _hold_out_one_fold(strata[free], groups[free], fraction / remaining_share, seed)
        split[free[held]] = name
        remaining_share -= fraction
    split[split == ""] = "train"
    result = table.with_frame(table.frame.assign(split=split))
    check_split(result)
    logger.info("split %d images by %s in %.2f s", len(result), table.group_column, time.perf_counter() - started)
    return result


def kfold_by_group(table: ImageTable, n_folds: int = 5, seed: int = 42,
                   multilabel_strata: str = "rarest") -> Iterator[ImageTable]:
    """Yield `n_folds` tables for cross-validation: fold k is `val`, the rest `train`.

    Rows already marked `test` stay in test in every fold and take no part in the folds.

    Args:
        table: the images.
        n_folds: number of folds (>= 2).
        seed: makes the folds repeatable.
        multilabel_strata: as in `split_by_group`.
    """
    if n_folds < 2:
        raise DataError(f"n_folds must be at least 2, got {n_folds}")
    base = _existing_split(table)
    base[base != "test"] = ""
    free = np.flatnonzero(base == "")
    strata = stratification_labels(table, multilabel_strata)[free]
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with _small_class_warning_silenced():
        folds = list(splitter.split(np.zeros(len(free)), strata, table.groups[free]))
    for fold, (_, val_rows) in enumerate(folds):
        split = base.copy()
        split[free] = "train"
        split[free[val_rows]] = "val"
        result = table.with_frame(table.frame.assign(split=split, fold=fold))
        check_split(result)
        yield result


def stratification_labels(table: ImageTable, multilabel_strata: str = "rarest") -> np.ndarray:
    """One stratum per image: its label, or for multilabel its rarest positive label or combination."""
    labels = table.frame["label"].fillna("").astype(str).to_numpy()
    if table.task != "multilabel":
        return labels
    if multilabel_strata == "combination":
        return labels
    if multilabel_strata != "rarest":
        raise DataError(f"multilabel_strata must be 'rarest' or 'combination', got {multilabel_strata!r}")
    targets = encode_labels(labels, table.class_names, "multilabel")
    counts = targets.sum(axis=0)
    # Rarest positive label per row: mask absent labels with +inf counts, take the argmin.
    masked = np.where(targets > 0, counts[None, :], np.inf)
    rarest = np.asarray(table.class_names, dtype=object)[masked.argmin(axis=1)]
    return np.where(targets.sum(axis=1) > 0, rarest, "").astype(str)


def check_split(table: ImageTable) -> None:
    """Check a split table: no group in two splits, and every class where it is needed.

    Single-label tasks (multiclass, binary): a class with no image in train, or in a non-empty val
    or test split, raises `EmptyClassError`. Multilabel: a label with no positive in a split is a
    warning naming it and its counts: each label is its own yes/no question, so the other labels
    still train and measure, and evaluation reports the missing label's figures as undefined. A
    small real subset cannot avoid it (ChestX-ray14's 1,000-image sample holds Hernia in 2 patients,
    so it cannot be in all 3 patient-disjoint splits).

    Raises:
        DataError: a group falls in more than one split.
        EmptyClassError: single-label only, a class missing from a split (see above).
    """
    frame = table.frame
    per_group = frame.groupby(table.group_column)["split"].nunique()
    shared = per_group[per_group > 1]
    if len(shared):
        raise DataError(f"{len(shared)} groups ({table.group_column}) fall in more than one split, "
                        f"e.g. {shared.index[0]!r}; expected each group in exactly one split")
    targets = table.targets()
    positives = targets if table.task != "binary" else np.concatenate([1 - targets, targets], axis=1)
    split = frame["split"].to_numpy()
    used = [name for name in SPLITS if (split == name).any() or name == "train"]
    for name in used:
        rows = split == name
        present = positives[rows].sum(axis=0) > 0
        missing = [int(i) for i in np.flatnonzero(~present) if positives[:, i].any()]
        if not missing:
            continue
        counts = {table.class_names[i]: _class_counts(table, positives[:, i] > 0) for i in missing}
        described = ", ".join(f"{label!r} ({images} image(s) from {groups} group(s) in all)"
                              for label, (images, groups) in counts.items())
        if table.task == "multilabel":
            consequence = ("the model sees no positive of it in training and cannot learn it" if name == "train"
                           else f"their {name} figures are undefined (null in metrics.json, 'undefined' in the report)")
            logger.warning("split %r (%d images) has no positive of %d label(s): %s; %s", name, int(rows.sum()),
                           len(missing), described, consequence)
            continue
        raise EmptyClassError(_empty_class_message(name, int(rows.sum()), counts, used))
    sizes = frame["split"].value_counts().to_dict()
    logger.info("split sizes (images): %s; groups: %s", sizes,
                frame.groupby("split")[table.group_column].nunique().to_dict())


def _class_counts(table: ImageTable, members: np.ndarray) -> tuple[int, int]:
    """(images, distinct groups) of the rows in `members`."""
    return int(members.sum()), int(pd.unique(table.groups[members]).size)


def _empty_class_message(split: str, size: int, counts: dict[str, tuple[int, int]], used: list[str]) -> str:
    """Why a class is missing from a split, and the fix that can work.

    A class whose images come from fewer groups (lesions, patients) than there are splits cannot
    be in every split of a grouped split, whatever the fractions; only more data (or fewer splits)
    helps. Otherwise the fractions or the seed left it out.
    """
    few = {name: value for name, value in counts.items() if value[1] < len(used)}
    if few:
        detail = ", ".join(f"{name!r} has {groups} group(s) ({images} image(s))" for name, (images, groups) in few.items())
        return (f"split {split!r} ({size} images) has no image of class(es) {list(counts)}: {detail} in all, too few "
                f"groups to appear in all {len(used)} splits ({', '.join(used)}) since no group may be in two; "
                "add images of that class from other groups (lesions, patients), or leave the class out")
    detail = ", ".join(f"{name!r} has {groups} groups ({images} images)" for name, (images, groups) in counts.items())
    return (f"split {split!r} ({size} images) has no image of class(es) {list(counts)} ({detail} in all); expected "
            "every class in every split: use larger held-out fractions (--val-fraction, --test-fraction) or "
            "another --seed")


def save_split(table: ImageTable, path: str | os.PathLike) -> Path:
    """Write the split as CSV (`path, label, group, split`, then the other metadata columns).

    Args:
        table: a split table (see `split_by_group`).
        path: the CSV file to write (its directory is created).
    """
    if "split" not in table.frame.columns:
        raise DataError("save_split needs a split table; call split_by_group first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = table.frame.rename(columns={table.group_column: "group"}) if table.group_column != "group" else table.frame
    ordered = SPLIT_COLUMNS + [column for column in frame.columns if column not in SPLIT_COLUMNS]
    with atomic_path(path) as temporary:
        frame[ordered].to_csv(temporary, index=False)
    logger.info("wrote split of %d images to %s", len(frame), path)
    return path


def load_split(path: str | os.PathLike, class_names: list[str], task: str,
               long_names: dict[str, str] | None = None) -> ImageTable:
    """Read a split CSV written by `save_split` back into an `ImageTable` to repeat or audit a run.

    Args:
        path: the split CSV.
        class_names: the classes in target order (as the run used them).
        task: `"multiclass"`, `"multilabel"` or `"binary"`.
        long_names: readable class names for reports.
    """
    frame = read_metadata(path)
    require_columns(frame, SPLIT_COLUMNS, path)
    bad = ~frame["split"].isin(SPLITS)
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path} line {index + 2}, column 'split': {frame['split'].iloc[index]!r}; expected one of {SPLITS}")
    table = ImageTable(frame, class_names, task, dict(long_names or {}))
    table.targets()  # raises UnknownLabelError naming the row when a label is not a class
    check_split(table)
    return table


def _existing_split(table: ImageTable) -> np.ndarray:
    if "split" not in table.frame.columns:
        return np.full(len(table), "", dtype=object)
    split = table.frame["split"].fillna("").astype(str).to_numpy(dtype=object)
    unknown = set(split) - set(SPLITS) - {""}
    if unknown:
        raise DataError(f"column 'split' holds {sorted(unknown)}; expected {SPLITS} or empty")
    return split


def _hold_out_one_fold(strata: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of one stratified, grouped fold of about `fraction` of the rows."""
    n_folds = max(2, int(round(1.0 / fraction)))
    n_groups = len(pd.unique(groups))
    if n_groups < n_folds:
        raise DataError(f"only {n_groups} groups to split; holding out {fraction:.2f} needs at least {n_folds}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with _small_class_warning_silenced():
        _, held = next(splitter.split(np.zeros(len(strata)), strata, groups))
    return held


@contextlib.contextmanager
def _small_class_warning_silenced():
    """Keep scikit-learn's "The least populated class in y has only N members" out of the log.

    It names neither the class nor the data and speaks of `n_splits`, which the user never set
    (here it is 1 / the held-out fraction); what it warns of, a class missing from a split, is
    what `check_split` refuses with a message naming the class, split and fix.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class in y has only", category=UserWarning)
        yield
