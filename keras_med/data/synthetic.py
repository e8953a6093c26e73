"""Small synthetic datasets in the real on-disk layouts, whose classes differ visibly.

They let the recipes' `--demo` mode and the tests run the whole pipeline in minutes on a CPU, and
they exercise the real loaders (HAM10000's two-part image folders, ChestX-ray14's metadata file,
Kermany's pre-split class folders with patient ids in file names). Deterministic for a seed.
Drawn with numpy and PIL because no library ships look-alike medical images.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from keras_med.data.sources.ham10000 import HAM10000_CLASSES, HAM10000_METADATA
from keras_med.errors import ConfigError

logger = logging.getLogger(__name__)

# HAM10000's class shares (nv 67%, ..., df 1.1%).
HAM10000_SHARES = {"akiec": 0.033, "bcc": 0.051, "bkl": 0.110, "df": 0.011, "mel": 0.111, "nv": 0.669, "vasc": 0.014}
# Per class: lesion RGB, radius range (px at 200x150), border irregularity, texture kind.
LESION_LOOKS = {
    "nv": ((120, 75, 45), (26, 36), 0.04, "smooth"),
    "mel": ((45, 30, 30), (40, 52), 0.22, "blotches"),
    "bkl": ((175, 135, 90), (28, 38), 0.08, "stripes"),
    "bcc": ((215, 150, 150), (22, 30), 0.06, "vessels"),
    "akiec": ((195, 85, 70), (26, 36), 0.16, "scales"),
    "df": ((140, 95, 70), (14, 19), 0.03, "ring"),
    "vasc": ((150, 20, 60), (15, 21), 0.10, "lobules"),
}
MIN_LESIONS_PER_CLASS = 8
CHEST_FINDINGS = ["Cardiomegaly", "Effusion", "Nodule", "Pneumothorax"]


def write_ham10000_demo(out_dir: str | os.PathLike, n_images: int = 420, seed: int = 0,
                        size: tuple[int, int] = (200, 150)) -> Path:
    """Write a HAM10000-like set: `HAM10000_metadata.csv` and JPEGs in `HAM10000_images_part_{1,2}/`.

    All 7 classes, imbalanced like HAM10000 but each with at least 8 lesions (so every class reaches
    every split), several images per lesion with small variations of position, angle and light.

    Args:
        out_dir: the directory to write (created).
        n_images: total images (at least 7 * 16).
        seed: the same seed writes the same files.
        size: (width, height) of the JPEGs; HAM10000's copy here is 200x150.
    """
    min_images = 2 * MIN_LESIONS_PER_CLASS
    if n_images < min_images * len(HAM10000_CLASSES):
        raise ConfigError(f"--demo-size (n_images): the HAM10000 demo needs at least "
                          f"{min_images * len(HAM10000_CLASSES)} images, got {n_images}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    parts = [out_dir / "HAM10000_images_part_1", out_dir / "HAM10000_images_part_2"]
    for part in parts:
        part.mkdir(parents=True, exist_ok=True)
    counts = {name: max(min_images, round(share * n_images)) for name, share in HAM10000_SHARES.items()}
    counts["nv"] += n_images - sum(counts.values())
    rows, image_number, lesion_number = [], 0, 0
    for label in HAM10000_CLASSES:
        n_lesions = max(MIN_LESIONS_PER_CLASS, round(counts[label] / 1.5))
        lesion_of_image = np.concatenate([np.arange(n_lesions), rng.integers(0, n_lesions, counts[label] - n_lesions)])
        images_per_lesion = np.bincount(lesion_of_image, minlength=n_lesions)
        for lesion_index in range(n_lesions):
            lesion_id = f"HAM_{lesion_number:07d}"
            lesion_number += 1
            look = _random_lesion(label, rng)
            age, sex, site = float(rng.integers(6, 17) * 5), str(rng.choice(["male", "female"])), str(
                rng.choice(["back", "trunk", "face", "lower extremity", "upper extremity", "scalp"]))
            for _ in range(int(images_per_lesion[lesion_index])):
                image_id = f"ISIC_{image_number:07d}"
                part = parts[image_number % 2]
                _draw_lesion(look, rng, size).save(part / f"{image_id}.jpg", quality=90)
                rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": label,
                             "dx_type": "histo" if label == "mel" else str(rng.choice(["histo", "follow_up", "consensus"])),
                             "age": age, "sex": sex, "localization": site, "dataset": "synthetic"})
                image_number += 1
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame.to_csv(out_dir / HAM10000_METADATA, index=False)
    logger.info("wrote a HAM10000 demo of %d images (%d lesions) to %s", len(frame), lesion_number, out_dir)
    return out_dir


def _random_lesion(label: str, rng: np.random.Generator) -> dict:
    colour, (r_min, r_max), irregular, texture = LESION_LOOKS[label]
    return {
        "colour": np.clip(np.array(colour) + rng.normal(0, 8, 3), 0, 255),
        "radius": rng.uniform(r_min, r_max),
        "harmonics": [(k, rng.uniform(0.3, 1.0) * irregular, rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5, 7)],
        "texture": texture,
        "skin": np.clip(np.array([228, 182, 152]) * rng.uniform(0.85, 1.05) + rng.normal(0, 5, 3), 0, 255),
        "texture_seed": int(rng.integers(1 << 31)),
    }


def _draw_lesion(lesion: dict, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    scale = min(width, height) / 150.0
    cy, cx = height / 2 + rng.normal(0, 6 * scale), width / 2 + rng.normal(0, 8 * scale)
    turn = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance, angle = np.hypot(y - cy, x - cx), np.arctan2(y - cy, x - cx) + turn
    border = lesion["radius"] * scale * rng.uniform(0.93, 1.07) * (
        1 + sum(a * np.cos(k * angle + phase) for k, a, phase in lesion["harmonics"]))
    inside = (distance < border).astype(np.float32)
    texture_rng = np.random.default_rng(lesion["texture_seed"])
    colour = np.broadcast_to(lesion["colour"], (height, width, 3)).astype(np.float32).copy()
    kind = lesion["texture"]
    if kind == "blotches":
        blue = (np.sin(x / (7 * scale) + texture_rng.uniform(0, 6)) * np.cos(y / (9 * scale)) > 0.3)[..., None]
        colour = np.where(blue, np.array([90, 95, 125], np.float32), colour)
    elif kind == "stripes":
        colour *= (1 + 0.25 * np.sin((x + y) / (5 * scale)))[..., None]
    elif kind == "vessels":
        vessel = np.abs(np.sin((x * math.cos(turn) + y * math.sin(turn)) / (8 * scale))) < 0.2
        colour = np.where(vessel[..., None], np.array([190, 30, 40], np.float32), colour)
    elif kind == "scales":
        flakes = np.kron(rng.random((height // 4 + 1, width // 4 + 1)) < 0.15, np.ones((4, 4), bool))[:height, :width]
        colour = np.where(flakes[..., None], np.array([245, 235, 225], np.float32), colour)
    elif kind == "ring":
        colour = np.where((distance < 0.5 * border)[..., None], np.array([235, 215, 200], np.float32), colour)
    elif kind == "lobules":
        colour *= (1 - 0.35 * (np.sin(x / (4 * scale)) * np.sin(y / (4 * scale)) > 0.5))[..., None]
    skin = lesion["skin"] * rng.uniform(0.92, 1.08) + rng.normal(0, 6, (height, width, 3))
    image = skin * (1 - inside[..., None]) + colour * inside[..., None] + rng.normal(0, 4, (height, width, 3))
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return picture.filter(ImageFilter.GaussianBlur(radius=0.8 * scale))


def write_chestxray14_demo(out_dir: str | os.PathLike, n_images: int = 240, seed: int = 0, image_size: int = 128,
                           metadata_format: str = "csv") -> Path:
    """Write a ChestX-ray14-like set: `Data_Entry_2017.csv` (or `.parquet`) and PNGs in `images/`.

    Findings are opacities in different places (Cardiomegaly: a wide heart; Effusion: a white lung
    base; Nodule: a bright spot; Pneumothorax: a dark lung without markings); about a third of the
    images are "No Finding"; 3 images per patient on average.

    Args:
        out_dir: the directory to write (created).
        n_images: number of images.
        seed: the same seed writes the same files.
        image_size: side of the square grayscale PNGs.
        metadata_format: `"csv"` or `"parquet"`.
    """
    if metadata_format not in ("csv", "parquet"):
        raise ValueError(f"metadata_format must be 'csv' or 'parquet', got {metadata_format!r}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    n_patients = max(8, n_images // 3)
    for number in range(n_images):
        patient = number % n_patients + 1
        follow_up = number // n_patients
        findings = [] if rng.random() < 0.33 else sorted(
            rng.choice(CHEST_FINDINGS, size=int(rng.integers(1, 3)), replace=False).tolist())
        name = f"{patient:08d}_{follow_up:03d}.png"
        Image.fromarray(draw_chest(findings, rng, image_size)).save(out_dir / "images" / name)
        rows.append({"Image Index": name, "Finding Labels": "|".join(findings) or "No Finding",
                     "Follow-up #": follow_up, "Patient ID": patient, "Patient Age": int(rng.integers(20, 80)),
                     "Patient Gender": str(rng.choice(["M", "F"])), "View Position": "PA"})
    frame = pd.DataFrame(rows)
    if metadata_format == "parquet":
        frame.to_parquet(out_dir / "Data_Entry_2017.parquet", engine="pyarrow", index=False)
    else:
        frame.to_csv(out_dir / "Data_Entry_2017.csv", index=False)
    logger.info("wrote a ChestX-ray14 demo of %d images to %s", n_images, out_dir)
    return out_dir


def write_image_folder_demo(out_dir: str | os.PathLike, n_images: int = 160, seed: int = 0, image_size: int = 96,
                            test_fraction: float = 0.2) -> Path:
    """Write a Kermany-like pre-split folder set: `{train,test}/{NORMAL,PNEUMONIA}/*.jpeg` (grayscale).

    File names carry the patient as Kermany's do (`person12_bacteria_3.jpeg`, `IM-0012-0001.jpeg`);
    pneumonia shows as patchy opacities in the lungs; a patient's images stay in one split.

    Args:
        out_dir: the directory to write (created).
        n_images: number of images (about 1/3 NORMAL like Kermany's train set).
        seed: the same seed writes the same files.
        image_size: side of the square JPEGs.
        test_fraction: share of patients written under `test/`.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for number in range(n_images):
        label = "NORMAL" if number % 3 == 0 else "PNEUMONIA"
        patient, shot = number // 2 + 1, number % 2 + 1
        split = "test" if (patient * 7919 % 100) < test_fraction * 100 else "train"
        name = (f"IM-{patient:04d}-{shot:04d}.jpeg" if label == "NORMAL"
                else f"person{patient}_{'bacteria' if patient % 2 else 'virus'}_{shot}.jpeg")
        folder = out_dir / split / label
        folder.mkdir(parents=True, exist_ok=True)
        pixels = draw_chest(["Pneumonia"] if label == "PNEUMONIA" else [], rng, image_size)
        Image.fromarray(pixels, mode="L").save(folder / name, quality=90)
    logger.info("wrote a folder-per-class demo of %d images to %s", n_images, out_dir)
    return out_dir


def draw_lesion(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A synthetic dermoscopy image of class `label` as uint8 `(size, size, 3)` (as in the HAM10000 demo)."""
    return np.asarray(_draw_lesion(_random_lesion(label, rng), rng, (size, size)))


def draw_chest(findings: list[str], rng: np.random.Generator, size: int) -> np.ndarray:
    """A grayscale frontal chest film: body, two dark lungs, heart, ribs, plus the findings."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = 0.55 + 0.05 * rng.standard_normal()
    image = np.full((size, size), image, np.float32) - 0.25 * (np.abs(x - 0.5) > 0.42)
    heart_width = 0.17 if "Cardiomegaly" in findings else 0.10
    for side, cx in (("right", 0.32), ("left", 0.68)):
        lung = ((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
        darkness = 0.38 if (side == "left" and "Pneumothorax" in findings) else 0.3
        image = np.where(lung, image - darkness + 0.04 * np.sin(y * 60 + rng.uniform(0, 6)), image)
        if "Effusion" in findings and side == "right":
            image = np.where(lung & (y > 0.64), 0.62, image)
        if "Pneumonia" in findings:
            patches = np.sin(x * 25 + rng.uniform(0, 6)) * np.sin(y * 21 + rng.uniform(0, 6)) > 0.2
            image = np.where(lung & patches & (y > 0.35), image + 0.22, image)
    heart = ((x - 0.55) / heart_width) ** 2 + ((y - 0.62) / 0.12) ** 2 < 1
    image = np.where(heart, 0.7, image)
    if "Nodule" in findings:
        ny, nx = rng.uniform(0.35, 0.6), rng.choice([0.3, 0.7]) + rng.uniform(-0.04, 0.04)
        image = np.where((x - nx) ** 2 + (y - ny) ** 2 < 0.035 ** 2, 0.8, image)
    image += 0.03 * rng.standard_normal((size, size))
    return np.clip(image * 255, 0, 255).astype(np.uint8)


DEMO_CLASSES = ("bright_disc", "dark_disc", "stripes", "plain")


def write_classes_demo(out_dir: str | os.PathLike, n_images: int = 240, seed: int = 0, image_size: int = 64,
                       classes: tuple[str, ...] = DEMO_CLASSES, file_format: str = "png") -> Path:
    """Write a flat folder-per-class set, `out_dir/<class>/patientNN_K.<format>`, four classes that differ visibly.

    Each class is a different drawing on a noisy gray background (a bright disc, a dark disc,
    stripes, nothing); two images per patient, the patient in the file name (`patient(\\d+)`).

    Args:
        out_dir: the directory to write (created).
        n_images: number of images, spread evenly over the classes.
        seed: the same seed writes the same files.
        image_size: side of the square images.
        classes: class folder names; drawings repeat cyclically beyond four.
        file_format: `"png"`, `"jpeg"` or `"dcm"` (DICOM, MONOCHROME2, 8 bits).
    """
    from keras_med.data.dicom import write_dicom_image

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    yy, xx = np.mgrid[0:image_size, 0:image_size]
    for number in range(n_images):
        kind = number % len(classes)
        folder = out_dir / classes[kind]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.normal(110, 20, (image_size, image_size))
        radius = image_size * rng.uniform(0.15, 0.3)
        cy, cx = rng.uniform(0.35, 0.65, 2) * image_size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        drawing = kind % len(DEMO_CLASSES)
        if drawing == 0:
            pixels[disc] += 100
        elif drawing == 1:
            pixels[disc] -= 90
        elif drawing == 2:
            pixels += 60 * np.sin(xx * 2 * math.pi / rng.uniform(6, 10))
        image = np.clip(pixels, 0, 255).astype(np.uint8)
        stem = f"patient{number // (2 * len(classes)):03d}_{number}"
        if file_format == "dcm":
            write_dicom_image(folder / f"{stem}.dcm", image)
        else:
            Image.fromarray(image, mode="L").save(folder / f"{stem}.{file_format}")
    logger.info("wrote a %d-class folder demo of %d images to %s", len(classes), n_images, out_dir)
    return out_dir
