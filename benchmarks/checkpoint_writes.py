"""Cost of crash-safe checkpoints: Keras's in-place save against keras_med's atomic write.

Usage:
    python benchmarks/checkpoint_writes.py [--repeats 5] [--dir .]

For the demo's custom CNN at 64 px and MobileNetV2 at 160 px, times `model.save` (best.keras)
and `model.save_weights` (the resume state) written in place, as Keras does, and through
`keras_med.atomic.atomic_path` (temporary file beside the target, fsync, rename), as the training
callbacks do. Prints the median of `--repeats` writes of each. `--dir` should be on the disk the
run directories live on: fsync's cost depends on it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from keras_med.atomic import atomic_path
from keras_med.models import create_model

MODELS = [("custom_cnn", 64), ("mobilenetv2", 160)]


def median_ms(write, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        write()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=".", help="Folder to write the checkpoints in (a temporary one inside).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for name, size in MODELS:
            model = create_model(name, num_classes=7, image_size=size, weights=None)
            model.compile(optimizer="adamw", loss="categorical_crossentropy")
            for target, save in (("best.keras", model.save), ("latest.weights.h5", model.save_weights)):
                path = Path(folder) / target

                def in_place():
                    save(str(path), overwrite=True)

                def atomic():
                    with atomic_path(path) as temporary:
                        save(str(temporary), overwrite=True)

                print(f"{name:12s} {target:18s} in place {median_ms(in_place, args.repeats):7.1f} ms   "
                      f"atomic {median_ms(atomic, args.repeats):7.1f} ms   ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
