"""The ieee8023 covid-chestxray-dataset layout: `metadata.csv` plus `images/`, as a binary COVID-19 table.

The public set (Cohen et al., github.com/ieee8023/covid-chestxray-dataset) mixes X-rays and CT
slices, frontal and lateral views, and many findings (`Pneumonia/Viral/COVID-19`,
`Pneumonia/Bacterial/Streptococcus`, `No Finding`, ...), several images per patient. The loader
keeps X-ray frontal views, labels a finding that contains "COVID-19" as positive, and groups by
`patientid` so no patient is in two splits. `write_covid_chestxray_demo` writes a synthetic set in
the same layout (with the CT and lateral rows the loader must leave out).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from keras_med.data.errors import DataError
from keras_med.data.files import require_dir, write_bad_images
from keras_med.data.labels import drop_unlabelled_rows, write_left_out_labels
from keras_med.data.sources.common import attach_image_paths, group_ids, read_numbered_metadata, require_columns
from keras_med.data.table import ImageTable

logger = logging.getLogger(__name__)

COVID_METADATA = "metadata.csv"
COVID_DEFAULT_VIEWS = ("PA", "AP", "AP Supine")
COVID_FINDING = "COVID-19"
NEGATIVE_MODES = ("all", "no_finding")
NO_FINDING = "No Finding"
UNLABELLED_FINDINGS = ("todo",)
REQUIRED_COLUMNS = ["patientid", "finding", "view", "modality", "filename"]


def load_covid_chestxray(data_dir: str | os.PathLike, *, views=COVID_DEFAULT_VIEWS, positive: str = COVID_FINDING,
                         negatives: str = "all", metadata: str = COVID_METADATA, on_bad_image: str = "error",
                         report_dir: str | os.PathLike | None = None) -> ImageTable:
    """Load the X-ray frontal views of an ieee8023-layout set as a binary table `[negative, positive]`.

    Args:
        data_dir: the folder with `metadata.csv` and the image folder(s) it names (`folder`
            column, default `images/`).
        views: the `view` values kept (default PA, AP, AP Supine); lateral views and CT are left out.
        positive: a finding that contains this text is positive.
        negatives: `"all"`: every other finding is negative (class `"other"`); `"no_finding"`:
            only `No Finding` images are negative (class `"No Finding"`), other findings are left out.
            Either way a finding of `todo` (not labelled yet) or an empty one is no label: such
            rows are left out and listed in `left_out.csv`.
        metadata: the metadata file name inside `data_dir` (or a path).
        on_bad_image: `"error"` or `"skip"` for rows whose image is missing.
        report_dir: where `bad_images.csv` goes in skip mode.
    """
    if negatives not in NEGATIVE_MODES:
        raise DataError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
    views = [view.strip() for view in ([views] if isinstance(views, str) else views) if view.strip()]
    if not views:
        raise DataError("views is empty; expected X-ray views such as 'PA', 'AP', 'AP Supine'")
    data_dir = require_dir(data_dir, "covid-chestxray-dataset directory")
    source = Path(metadata) if Path(metadata).is_absolute() else data_dir / metadata
    frame = read_numbered_metadata(source)
    require_columns(frame, REQUIRED_COLUMNS, source)
    finding = frame["finding"].astype(str).str.strip()
    # case-insensitive, as every label in keras_med.data.labels
    is_positive = finding.str.contains(positive, case=False, regex=False)
    xray = frame["modality"].astype(str).str.strip().str.lower() == "x-ray"
    frontal = frame["view"].astype(str).str.strip().isin(views)
    keep = xray & frontal
    if negatives == "no_finding":
        keep &= is_positive | (finding.str.casefold() == NO_FINDING.casefold())
    logger.info("%s: keeping %d of %d rows (X-ray, views %s, negatives=%s); left out %d non-X-ray, %d other views",
                source, int(keep.sum()), len(frame), views, negatives, int((~xray).sum()), int((xray & ~frontal).sum()))
    if not keep.any():
        raise DataError(f"{source}: no row is an X-ray with a view in {views}; the file has modalities "
                        f"{sorted(frame['modality'].astype(str).unique())} and views {sorted(frame['view'].astype(str).unique())}")
    class_names = [NO_FINDING if negatives == "no_finding" else "other", positive]
    frame = frame.loc[keep].reset_index(drop=True)
    # A finding of `todo` (not yet labelled by the curators: 28 rows of the public metadata) is a
    # placeholder, not a negative; it is left out and listed like an empty finding.
    frame, left_out = drop_unlabelled_rows(frame, "finding", source, "filename", placeholders=UNLABELLED_FINDINGS,
                                           reason="finding 'todo': not yet labelled by the dataset's curators")
    write_left_out_labels(report_dir, left_out, "X-ray rows")
    is_positive = frame["finding"].astype(str).str.strip().str.contains(positive, case=False, regex=False)
    frame = frame.assign(label=np.where(is_positive.to_numpy(), class_names[1], class_names[0]),
                         group=group_ids(frame, "patientid", source, "patient"))
    folders = frame["folder"].astype(str) if "folder" in frame.columns else pd.Series("images", index=frame.index)
    references = folders.str.cat(frame["filename"].astype(str), sep="/")
    frame, skipped = attach_image_paths(frame, references, data_dir, source, "filename", on_bad_image,
                                        by_stem=False)
    write_bad_images(report_dir, skipped)
    logger.info("COVID chest X-rays: %d images, %d patients, classes %s", len(frame), frame["group"].nunique(),
                frame["label"].value_counts().to_dict())
    return ImageTable(frame, class_names, "binary", group_column="group", metadata=str(source),
                      skipped=skipped, left_out=left_out)


def write_covid_chestxray_demo(out_dir: str | os.PathLike, n_images: int = 240, seed: int = 0,
                               image_size: int = 128) -> Path:
    """Write an ieee8023-like set: `metadata.csv` and grayscale JPEGs in `images/`.

    About 60% of the kept X-rays are COVID-19 (patchy opacities in both lungs, as in the source's
    342 vs 193), the rest `No Finding` or another finding (an effusion or a nodule); one extra row
    in ten is a lateral view or a CT slice that the loader must leave out. 1-3 images per patient.

    Args:
        out_dir: the directory to write (created).
        n_images: number of X-ray frontal images (the kept rows).
        seed: the same seed writes the same files.
        image_size: side of the square JPEGs.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows, patient, written = [], 0, 0
    while written < n_images:
        patient += 1
        kind = rng.choice(["covid", "none", "other"], p=[0.6, 0.25, 0.15])
        finding = {"covid": "Pneumonia/Viral/COVID-19", "none": NO_FINDING,
                   "other": str(rng.choice(["Pneumonia/Bacterial/Streptococcus", "Tuberculosis"]))}[kind]
        look = {"covid": ["Pneumonia"], "none": [], "other": [str(rng.choice(["Effusion", "Nodule"]))]}[kind]
        for shot in range(min(int(rng.integers(1, 4)), n_images - written)):
            view = str(rng.choice(COVID_DEFAULT_VIEWS, p=[0.5, 0.35, 0.15]))
            rows.append(_demo_row(out_dir, patient, shot, finding, view, "X-ray", look, rng, image_size))
            written += 1
        if rng.random() < 0.2:
            view, modality = ("L", "X-ray") if rng.random() < 0.5 else ("Axial", "CT")
            rows.append(_demo_row(out_dir, patient, 9, finding, view, modality, look, rng, image_size))
    pd.DataFrame(rows).to_csv(out_dir / COVID_METADATA, index=False)
    logger.info("wrote a covid-chestxray demo of %d rows (%d patients) to %s", len(rows), patient, out_dir)
    return out_dir


def _demo_row(out_dir: Path, patient: int, shot: int, finding: str, view: str, modality: str, look: list[str],
              rng: np.random.Generator, image_size: int) -> dict:
    # The chest drawing is shared with the other chest X-ray demos so every demo looks alike.
    from keras_med.data.synthetic import draw_chest

    name = f"patient{patient:04d}_{shot}_{view.replace(' ', '')}.jpg"
    Image.fromarray(draw_chest(look, rng, image_size), mode="L").save(out_dir / "images" / name, quality=90)
    return {"patientid": str(patient), "offset": "", "sex": str(rng.choice(["M", "F"])),
            "age": int(rng.integers(20, 90)), "finding": finding, "view": view, "modality": modality,
            "folder": "images", "filename": name}
