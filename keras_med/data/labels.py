"""One rule for the training labels of every source: what a class name is, and what is not a label.

- Labels that differ only in case or surrounding whitespace are one class (`MEL`, `mel `, `Mel`):
  the external test set already matches labels case-insensitively, and no medical label set uses
  case to tell two classes apart. The class keeps its most frequent spelling (ties: the one that
  sorts first, so the choice is deterministic), and the merge is logged in one line per class.
- An empty label, or one of the placeholders in `MISSING_LABELS` (`NaN`, `None`, `null`, `N/A`,
  any case), is not a class: its row is skipped, counted in one warning line, and listed with its
  metadata line and reason in `left_out.csv` (the same columns as `bad_images.csv`), so the
  run still trains on the labelled rows and says exactly which it left out.
- Source-specific placeholders (the covid-chestxray `todo` finding: not yet labelled by the
  dataset's curators) are skipped the same way by their source, never turned into negatives.

TensorFlow-free: pandas only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from keras_med.data.files import left_out_row, write_left_out

logger = logging.getLogger(__name__)

# Spellings that mean "no value": what pandas, R, Excel and SQL exports write for a missing cell.
MISSING_LABELS = frozenset({"", "nan", "none", "null", "na", "n/a", "<na>", "#n/a", "missing"})


def is_missing_label(value) -> bool:
    """Whether a label cell holds no label: None/NaN, blank, or a placeholder such as `NaN` or `None`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    return str(value).strip().lower() in MISSING_LABELS


def label_key(name: str) -> str:
    """What two spellings of one class share: the name stripped and case-folded."""
    return str(name).strip().casefold()


def merge_case_variants(labels: Iterable[str], what: str = "labels",
                        known: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
    """Map every spelling of a class to one name: the most frequent spelling (ties: the first sorted).

    Args:
        labels: the stripped label of every row.
        what: what to call the labels in the log line (e.g. `"labels.csv column 'dx'"`).
        known: the source's own class names (HAM10000's `mel`, ...): a spelling of one of them
            becomes it, whatever the counts.

    Returns:
        The merged label of every row, and the spelling -> class map of the merged spellings only.

    Example:
        >>> merge_case_variants(["MEL", "mel", "mel", "nv"])[0]
        ['mel', 'mel', 'mel', 'nv']
    """
    labels = [str(label).strip() for label in labels]
    known = {label_key(name): name for name in known}
    counts = pd.Series(labels, dtype=object).value_counts()
    spellings: dict[str, list[tuple[str, int]]] = {}
    for spelling, count in counts.items():
        spellings.setdefault(label_key(spelling), []).append((spelling, int(count)))
    mapping: dict[str, str] = {}
    for key, variants in spellings.items():
        official = known.get(key)
        if len(variants) < 2 and (official is None or variants[0][0] == official):
            continue
        chosen = official or sorted(variants, key=lambda item: (-item[1], item[0]))[0][0]
        described = " and ".join(f"{spelling!r} ({count} rows)" for spelling, count in sorted(variants))
        logger.warning("%s %s %s as %r", what, described, "merged" if len(variants) > 1 else "read", chosen)
        mapping.update({spelling: chosen for spelling, _ in variants})
    return [mapping.get(label, label) for label in labels], mapping


def merge_class_names(names: Iterable[str], mapping: dict[str, str]) -> list[str]:
    """Class names after `merge_case_variants`: each merged class once, in first-seen order."""
    merged: list[str] = []
    for name in names:
        name = mapping.get(name, name)
        if name not in merged:
            merged.append(name)
    return merged


def drop_unlabelled_rows(frame: pd.DataFrame, label_column: str, source: Path | str, image_column: str | None = None,
                         placeholders: Iterable[str] = (), reason: str = "") -> tuple[pd.DataFrame, list[dict]]:
    """The rows whose `label_column` holds a label, and the `left_out.csv` rows of the others.

    Args:
        frame: metadata rows (with `metadata_line` when read by `read_numbered_metadata`).
        label_column: the label column.
        source: the metadata file, named in the list.
        image_column: the column naming each row's image, copied into the list's `path`.
        placeholders: source-specific values that are not labels either (any case), e.g. `todo`.
        reason: the reason written for a placeholder (default: says it is a placeholder).
    """
    from keras_med.data.sources.common import row_lines

    values = frame[label_column]
    placeholders = {str(value).strip().casefold() for value in placeholders}
    missing = np.array([is_missing_label(value) for value in values], dtype=bool)
    placeholder = np.array([not gone and str(value).strip().casefold() in placeholders
                            for value, gone in zip(values, missing)], dtype=bool)
    dropped = missing | placeholder
    if not dropped.any():
        return frame, []
    lines = row_lines(frame, source)
    images = frame[image_column].astype(str).to_numpy() if image_column else [""] * len(frame)
    rows = []
    for index in np.flatnonzero(dropped):
        value = values.iloc[index]
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        why = (reason or f"placeholder label {text!r}") if placeholder[index] else \
            (f"missing label {text!r}" if text else "empty label")
        rows.append(left_out_row(images[index], f"{why} in column {label_column!r}", str(source),
                                       int(lines[index])))
    return frame.loc[~dropped].reset_index(drop=True), rows


def write_left_out_labels(report_dir: str | os.PathLike | None, rows: list[dict], what: str = "rows") -> Path | None:
    """`write_left_out` for rows left out for their label (logged as such)."""
    return write_left_out(report_dir, rows, f"{what} without a usable label")
