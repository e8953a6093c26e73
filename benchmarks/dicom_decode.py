"""What DICOM input costs in the decode step: pydicom through `tf.numpy_function` against PNG of the same pixels.

Usage:
    python benchmarks/dicom_decode.py --data-dir ../shared/data/kermany_pneumonia_224 --count 400 --image-size 64

Takes `--count` grayscale images below `--data-dir`, writes each as a 16-bit DICOM (12 bits stored,
RescaleSlope/Intercept and a window, like a CR/DX file) and as an 8-bit PNG into a temporary
folder, then times `check_images` (the check pass that also fills the in-memory cache) on each set:
images/s and CPU microseconds per image. DICOM is decoded in Python (pydicom holds the GIL), PNG in
TensorFlow's C++ threads, so the ratio says what the simple option (numpy_function, decode once into
the in-memory cache) costs against pre-converting a DICOM set to PNG.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from keras_med.data.decode import check_images
from keras_med.data.dicom import write_dicom_image
from keras_med.data.files import walk_images


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def measure(paths: list[str], image_size: int, repeats: int) -> tuple[float, float]:
    """Best images/s over `repeats` check passes, and the CPU microseconds per image of that pass."""
    best = (0.0, 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        check_images(paths, "error", image_size=image_size)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        if len(paths) / wall > best[0]:
            best = (len(paths) / wall, 1e6 * cpu / len(paths))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = [path for _, path in zip(range(args.count), walk_images(Path(args.data_dir)))]
    with tempfile.TemporaryDirectory() as folder:
        dicoms, pngs = [], []
        for index, source in enumerate(sources):
            gray = np.asarray(Image.open(source).convert("L"))
            stored = (gray.astype(np.uint16) * 16)  # 12 bits stored
            dicoms.append(f"{folder}/{index}.dcm")
            write_dicom_image(dicoms[-1], stored, bits_stored=12, rescale=(1, -1024), window=(1024, 4096))
            pngs.append(f"{folder}/{index}.png")
            Image.fromarray(gray).save(pngs[-1])
        side = Image.open(sources[0]).size
        print(f"{len(sources)} images of {side[0]}x{side[1]}, decoded and resized to {args.image_size} px "
              f"(best of {args.repeats} check passes)")
        for name, paths in (("PNG (TensorFlow)", pngs), ("DICOM (pydicom via tf.numpy_function)", dicoms)):
            rate, cpu = measure(paths, args.image_size, args.repeats)
            print(f"  {name:<40} {rate:8.0f} images/s  {cpu:8.0f} CPU us/image")


if __name__ == "__main__":
    main()
